package session

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
)

var _ server.TunnelSessions = (*Manager)(nil)

// Reasons of tunnel_attach_denied.
const (
	AttachUnknown     = "unknown_session" // no such test, or it has ended
	AttachNotOwner    = "not_owner"       // the test belongs to another peer
	AttachBadToken    = "bad_token"
	AttachNotTunneled = "not_tunneled"      // a direct_ephemeral test
	AttachWrongKind   = "wrong_stream_kind" // e.g. a TCP attach for udp_echo
	AttachTooMany     = "too_many_attaches" // beyond the streams (x2 with bidir) + 1 (control)
)

// connections is the most TCP connections an iperf3 client opens for the
// test: the control connection and its streams, twice as many with
// --bidir (one per direction).
func (s *spec) connections() int {
	if s.Bidir {
		return 2*s.Streams + 1
	}
	return s.Streams + 1
}

// attachMetric is the metrics label of an attach refusal reason.
func attachMetric(reason string) metrics.AttachDenyReason {
	switch reason {
	case AttachUnknown:
		return metrics.AttachUnknownTest
	case AttachNotOwner:
		return metrics.AttachWrongPeer
	case AttachBadToken:
		return metrics.AttachBadToken
	case AttachNotTunneled:
		return metrics.AttachWrongMode
	case AttachTooMany:
		return metrics.AttachTooMany
	}
	return metrics.LabelOther
}

// tunnelPlane is the data plane of a tunneled session: the listener its
// attached TLS connections are pushed into, and for UDP the acceptor (iperf3
// -u) or echo engine (udp_echo) its QUIC session is handed to.
type tunnelPlane struct {
	conns *tunnel.ConnListener
	flows *tunnel.FlowAcceptor
	echo  *tunnelEchoEngine
	// Attaches so far (Manager.mu).
	tcpAttaches, quicAttaches int
}

// SetControlPort implements server.TunnelSessions: tunneled grants name
// the bound control port.
func (m *Manager) SetControlPort(port int) { m.ctlPort.Store(int64(port)) }

// controlPort is the port tunneled grants name: the bound one when the
// server reported it, else the configured one.
func (m *Manager) controlPort() int {
	if p := m.ctlPort.Load(); p > 0 {
		return int(p)
	}
	_, ps, _ := net.SplitHostPort(m.cfg.Network.ListenAddress)
	p, _ := strconv.Atoi(ps)
	return p
}

// openTunneled builds the data plane of a tunneled grant (the engine and
// the attach targets) for a test from allowed.
func (m *Manager) openTunneled(s *session, allowed netip.Addr) {
	tp := &tunnelPlane{}
	addr := &net.TCPAddr{IP: net.ParseIP(m.host), Port: s.port}
	if s.sp.TestType == link.TestUDPEcho {
		tp.echo = &tunnelEchoEngine{sp: s.sp, until: s.expires, attached: make(chan *tunnel.QUICSession, 1), ended: make(chan struct{})}
		s.eng, s.tun = tp.echo, tp
		return
	}
	tp.conns = tunnel.NewConnListener(addr)
	var ua udpAcceptor
	if s.sp.Protocol == link.ProtocolUDP {
		tp.flows = tunnel.NewFlowAcceptor()
		ua = flowUDP{tp.flows}
	}
	s.eng = newThroughputEngine(tp.conns, ua, allowed, s.sp, s.expires, s.budget, m.log.With().Str("test_id", s.id).Logger())
	s.tun = tp
}

// flowUDP is a FlowAcceptor as the engine's udpAcceptor.
type flowUDP struct{ *tunnel.FlowAcceptor }

// Dropped implements udpAcceptor: a tunnel carries only the attached
// peer's flows, so nothing comes from other senders. What is lost inside
// the reflector is in tunnelDrops.
func (flowUDP) Dropped() uint64 { return 0 }

// tunnelDrops returns what the reflector's end of the tunnel lost, or nil
// before a session attached.
func (f flowUDP) tunnelDrops() *tunnelDrops {
	q := f.Session()
	if q == nil {
		return nil
	}
	st := q.Stats()
	return &tunnelDrops{QueueDropped: st.QueueDropped, RecvQueueDropped: st.RecvQueueDropped, FlowDropped: st.Dropped, Incomplete: st.Incomplete}
}

// tunnelDrops are the datagrams of a tunneled UDP test lost inside the
// reflector's end of the tunnel, apart from path loss (the test's
// lost_packets counts both, as iperf3 sees them).
type tunnelDrops struct {
	// QueueDropped and RecvQueueDropped count QUIC datagrams (one per
	// fragment of a large UDP datagram) dropped on full receive queues
	// before demultiplexing: quic-go's (128 entries) and the session's
	// own (tunnel.RecvQueueLen).
	QueueDropped     uint64 `json:"queue_dropped"`
	RecvQueueDropped uint64 `json:"recv_queue_dropped"`
	// FlowDropped counts UDP datagrams dropped on the full queue of their
	// stream.
	FlowDropped uint64 `json:"flow_dropped"`
	// Incomplete counts UDP datagrams given up with fragments missing,
	// lost on the path or in QueueDropped.
	Incomplete uint64 `json:"incomplete"`
}

// checkAttach finds the session an attach names and decides on it; on
// success the attach is counted. kind is the transport of the attach.
func (m *Manager) checkAttach(peer server.PeerInfo, req link.TunnelAttach, kind string) (*session, string, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.active[req.TestID]
	if s == nil {
		return nil, AttachUnknown, "no running test " + req.TestID
	}
	if s.peer.ID != peer.ID {
		// Say no more than for an unknown test.
		return nil, AttachNotOwner, "no running test " + req.TestID
	}
	if subtle.ConstantTimeCompare([]byte(req.Token), []byte(s.token)) != 1 {
		return nil, AttachBadToken, "wrong token"
	}
	if s.tun == nil {
		return nil, AttachNotTunneled, "the test was granted in direct_ephemeral mode"
	}
	want := link.ProtocolTCP
	if req.StreamKind != "" {
		want = req.StreamKind
	}
	if want != kind {
		return nil, AttachWrongKind, "stream_kind " + want + " on a " + kind + " attach"
	}
	tp := s.tun
	switch kind {
	case link.ProtocolTCP:
		if tp.conns == nil {
			return nil, AttachWrongKind, "a udp_echo test has no TCP streams"
		}
		if tp.tcpAttaches >= s.sp.connections() {
			return nil, AttachTooMany, "the test's " + strconv.Itoa(s.sp.connections()-1) + " streams and its control connection are attached"
		}
		tp.tcpAttaches++
	default:
		if tp.flows == nil && tp.echo == nil {
			return nil, AttachWrongKind, "a TCP test has no UDP streams"
		}
		if tp.quicAttaches >= 1 {
			return nil, AttachTooMany, "the test's QUIC session is attached"
		}
		tp.quicAttaches++
	}
	s.attached.Store(true)
	return s, "", ""
}

// denyAttach audits and logs a refused attach.
func (m *Manager) denyAttach(peer server.PeerInfo, req link.TunnelAttach, kind, reason, msg string) {
	m.metrics.TunnelAttachDenied(attachMetric(reason))
	err := m.audit.Write(audit.Event{
		EventType: audit.TunnelAttachDenied, PeerID: peer.ID.String(), PeerAddr: peer.Addr.String(),
		TestID: req.TestID, Decision: "denied", Reason: reason,
		Details: map[string]any{"transport": kind, "message": msg},
	})
	if err != nil {
		m.log.Error().Err(err).Msg("session: audit tunnel_attach_denied")
	}
	m.log.Info().Str("peer", peer.ID.String()).Str("test_id", req.TestID).Str("reason", reason).Msg("tunnel attach refused")
}

// Attach handles a tunnel_attach on a fresh TLS connection: when the peer
// owns the running tunneled test and the token matches (and the test has
// an attach left), it answers ok and hands the connection to the test's
// iperf3 engine until the engine closes it; otherwise it answers a refusal
// and audits tunnel_attach_denied.
func (m *Manager) Attach(ctx context.Context, peer server.PeerInfo, reqID string, req link.TunnelAttach, c *link.Conn) {
	s, reason, msg := m.checkAttach(peer, req, link.ProtocolTCP)
	if s == nil {
		m.denyAttach(peer, req, link.ProtocolTCP, reason, msg)
		_ = c.WriteMessage(reqID, &link.TunnelAttachResult{OK: false, Message: msg}, writeTimeout)
		return
	}
	if err := c.WriteMessage(reqID, &link.TunnelAttachResult{OK: true}, writeTimeout); err != nil {
		return
	}
	tc, ok := c.NetConn().(*tls.Conn)
	if !ok {
		return
	}
	// The engine ends the connection; so do the manager ending the
	// session (session_close, deadline, quota: at once, even while the
	// engine waits in a handshake), the session's end and the server.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.ctx.Done():
			cancel()
		case <-s.done:
			cancel()
		case <-hctx.Done():
		}
	}()
	_ = s.tun.conns.Handoff(hctx, tunnel.BatchTLS(tc))
}

// AttachQUIC implements server.TunnelSessions: it decides on the attach
// of a QUIC session and returns the reply and, accepted, the function
// serving the session (flows to the iperf3 engine, or the echo loop)
// until the session or the test ends.
func (m *Manager) AttachQUIC(_ context.Context, peer server.PeerInfo, req link.TunnelAttach) (*link.TunnelAttachResult, func(*tunnel.QUICSession)) {
	s, reason, msg := m.checkAttach(peer, req, link.ProtocolUDP)
	if s == nil {
		m.denyAttach(peer, req, link.ProtocolUDP, reason, msg)
		return &link.TunnelAttachResult{OK: false, Message: msg}, nil
	}
	tp := s.tun
	serve := func(q *tunnel.QUICSession) {
		if tp.echo != nil {
			q.Flow(0)             // open before the client's first probe arrives
			tp.echo.attached <- q // buffered, one attach
		} else if err := tp.flows.Attach(q); err != nil {
			return
		}
		select {
		case <-s.ctx.Done():
		case <-s.done:
		case <-q.Context().Done():
		}
	}
	return &link.TunnelAttachResult{OK: true}, serve
}

// tunnelEchoEngine is udp_echo over the QUIC session attached to the test.
type tunnelEchoEngine struct {
	sp       *spec
	until    time.Time
	attached chan *tunnel.QUICSession
	ended    chan struct{}
	fe       atomic.Pointer[tunnel.FlowEcho]
	closed   atomic.Bool
}

func (e *tunnelEchoEngine) meter() (int64, int64) {
	if fe := e.fe.Load(); fe != nil {
		return int64(fe.Stats().Bytes), 0
	}
	return 0, 0
}

// claimed: a tunneled echo test is claimed by its QUIC attach
// (session.attached).
func (e *tunnelEchoEngine) claimed() bool { return false }

func (e *tunnelEchoEngine) close() {
	if e.closed.CompareAndSwap(false, true) {
		close(e.ended)
	}
}

func (e *tunnelEchoEngine) run(ctx context.Context) outcome {
	sctx, cancel := context.WithDeadline(ctx, e.until)
	defer cancel()
	var err error
	select {
	case q := <-e.attached:
		fe := tunnel.NewFlowEcho(q.Flow(0), echo.Config{MaxPPS: e.sp.RatePPS, Timestamped: e.sp.Timestamped})
		e.fe.Store(fe)
		qctx, qcancel := context.WithCancel(sctx)
		stop := context.AfterFunc(q.Context(), qcancel)
		err = fe.Serve(qctx)
		stop()
		qcancel()
		if sctx.Err() == nil {
			// The client closed its QUIC session: wait for the session's
			// end (session_close or the deadline).
			select {
			case <-sctx.Done():
			case <-e.ended:
			}
		}
	case <-sctx.Done():
	case <-e.ended:
	}
	o := outcome{err: err, reason: causeReason(ctx), summary: e.summary(err)}
	switch {
	case err != nil:
		o.reason = EndError
	case o.reason == "":
		o.reason, o.completed = EndDone, true
	}
	return o
}

func (e *tunnelEchoEngine) summary(err error) *echoSummary {
	s := &echoSummary{RatePPS: e.sp.RatePPS, Timestamped: e.sp.Timestamped}
	if fe := e.fe.Load(); fe != nil {
		st := fe.Stats()
		s.Received, s.Echoed, s.Bytes = st.Received, st.Echoed, st.Bytes
		s.DroppedRate, s.DroppedTruncated, s.SendErrors = st.DroppedRate, st.DroppedTruncated, st.SendErrors
	}
	if err != nil {
		s.Error = err.Error()
	}
	return s
}
