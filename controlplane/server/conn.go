package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/pairing"
	"github.com/packetparamedic/reflector/controlplane/peers"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/buildinfo"
)

// Audit reasons of connection_denied.
const (
	ReasonImpersonation  = "impersonation"
	ReasonNotAuthorized  = "not_authorized"
	ReasonBadCertificate = "bad_certificate"
)

// serverConn is one control connection after its handshake.
type serverConn struct {
	peer     PeerInfo
	raw      net.Conn // the TCP connection under TLS
	lc       *link.Conn
	log      zerolog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	pairing  bool // allowed only to pair (not yet authorized)
	attached bool // handed to Sessions.Attach: a tunnel, not a control connection
	frames   int
	bucket   tokenBucket
	closeOne sync.Once
}

// close ends the connection at once. It closes the TCP connection, not the
// TLS one, so it never blocks on sending a close_notify to a peer that does
// not read.
func (c *serverConn) close() {
	c.closeOne.Do(func() {
		c.cancel()
		_ = c.raw.Close()
	})
}

// acceptLoop accepts until the listener closes.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: wait a little, bounded.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		addr := addrPort(nc.RemoteAddr())
		if !s.limiter.allow(addr.Addr(), time.Now()) {
			s.stats.addrLimited.Add(1)
			s.metrics.ConnDenied(metrics.ConnAddrRateLimited)
			s.metrics.RateLimited(metrics.LimitNewConns)
			s.denials.drop(addr.Addr(), ReasonAddrRateLimited, s.now())
			_ = nc.Close()
			continue
		}
		s.mu.Lock()
		switch {
		case s.shutdown:
			s.mu.Unlock()
			s.metrics.ConnDenied(metrics.ConnDraining)
			_ = nc.Close()
			return
		case s.active >= s.cfg.Limits.MaxControlConnections:
			s.mu.Unlock()
			s.stats.connLimit.Add(1)
			s.metrics.ConnDenied(metrics.ConnLimit)
			s.denials.drop(addr.Addr(), ReasonConnLimit, s.now())
			_ = nc.Close()
			continue
		case s.handshake >= s.cfg.Limits.MaxHandshakes:
			s.mu.Unlock()
			s.stats.hsLimit.Add(1)
			s.metrics.ConnDenied(metrics.ConnHandshakeLimit)
			s.denials.drop(addr.Addr(), ReasonHandshakeLimit, s.now())
			_ = nc.Close()
			continue
		}
		s.active++
		s.handshake++
		s.nextID++
		id := s.nextID
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(nc, id, addr)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serve runs one connection from the TLS handshake to its close.
func (s *Server) serve(nc net.Conn, connID uint64, addr netip.AddrPort) {
	handshaking := true
	defer func() {
		_ = nc.Close()
		s.mu.Lock()
		s.active--
		if handshaking {
			s.handshake--
		}
		delete(s.conns, connID)
		s.mu.Unlock()
		s.wg.Done()
	}()
	log := s.log.With().Uint64("conn", connID).Str("peer_addr", addr.String()).Logger()

	// BatchConn: an attached tunnel connection sends its TLS records in
	// large writes (see dataplane/tunnel).
	tc := tls.Server(tunnel.NewBatchConn(nc), s.tlsConf)
	hctx, hcancel := context.WithTimeout(s.ctx, s.handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	hcancel()
	s.mu.Lock()
	s.handshake--
	handshaking = false
	s.mu.Unlock()
	if err != nil {
		s.stats.hsFailed.Add(1)
		s.metrics.HandshakeFailed(metrics.ClassifyHandshake(err))
		s.metrics.ConnDenied(metrics.ConnHandshakeFailed)
		s.denials.drop(addr.Addr(), ReasonHandshakeFailed, s.now())
		log.Debug().Err(err).Msg("TLS handshake failed")
		return
	}
	peerCerts := tc.ConnectionState().PeerCertificates
	if len(peerCerts) == 0 {
		s.stats.hsFailed.Add(1)
		s.metrics.HandshakeFailed(metrics.HandshakeNoClientCert)
		s.metrics.ConnDenied(metrics.ConnHandshakeFailed)
		s.denials.drop(addr.Addr(), ReasonHandshakeFailed, s.now())
		return
	}
	id, err := identity.PeerID(peerCerts[0])
	if err != nil {
		s.stats.denied.Add(1)
		ev := audit.Event{EventType: audit.ConnectionDenied, PeerAddr: addr.String(), Decision: "denied", Reason: ReasonBadCertificate}
		var san *identity.SANMismatchError
		if errors.As(err, &san) {
			ev.Reason = ReasonImpersonation
			ev.PeerID = san.Actual.String()
			ev.Details = map[string]any{"claimed_id": san.Claimed, "key_id": san.Actual.String()}
		}
		s.metrics.ConnDenied(metrics.ConnDenyReason(ev.Reason))
		s.auditDenial(log, addr, ev)
		log.Warn().Err(err).Str("reason", ev.Reason).Msg("connection denied")
		return
	}
	log = log.With().Str("peer_id", id.String()).Logger()

	authorized := s.peers.Contains(id)
	pairingOnly := false
	if !authorized {
		if open, _ := s.pairing.Active(); !open {
			s.stats.denied.Add(1)
			s.metrics.ConnDenied(metrics.ConnNotAuthorized)
			s.auditDenial(log, addr, audit.Event{EventType: audit.ConnectionDenied, PeerID: id.String(), PeerAddr: addr.String(), Decision: "denied", Reason: ReasonNotAuthorized})
			log.Info().Msg("connection denied: peer not authorized and no pairing window open")
			return
		}
		pairingOnly = true
	}
	s.stats.accepted.Add(1)
	s.metrics.ConnAccepted()
	ev := audit.Event{EventType: audit.ConnectionAccepted, PeerID: id.String(), PeerAddr: addr.String(), Decision: "accepted"}
	if pairingOnly {
		ev.Decision, ev.Reason = "pairing_only", "pairing window open"
	}
	s.writeAudit(log, ev)

	ctx, cancel := context.WithCancel(s.ctx)
	c := &serverConn{
		peer:    PeerInfo{ID: id, Addr: addr, ConnID: connID},
		raw:     nc,
		lc:      link.NewConn(tc),
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		pairing: pairingOnly,
		bucket:  newTokenBucket(s.cfg.Limits.MaxFramesPerSec),
	}
	defer c.close()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return
	}
	s.conns[connID] = c
	s.mu.Unlock()
	// A removal between Contains and the registration above is caught here.
	if !pairingOnly && !s.peers.Contains(id) {
		return
	}
	log.Debug().Bool("pairing_only", pairingOnly).Msg("connection accepted")
	s.loop(c)
	if !c.pairing && !c.attached {
		s.sessions.PeerGone(c.peer)
	}
}

// loop reads and answers messages until the connection ends.
func (s *Server) loop(c *serverConn) {
	for {
		reqID, msg, err := c.lc.ReadMessage(s.idleTimeout)
		var unknown *link.UnknownTypeError
		switch {
		case err == nil:
		case errors.As(err, &unknown):
			if !s.countFrame(c) {
				return
			}
			s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: unknown.Error()})
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.stats.idle.Add(1)
			c.log.Debug().Msg("idle timeout")
			return
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			return
		default:
			s.stats.malformed.Add(1)
			c.log.Info().Err(err).Msg("closing connection after a malformed frame")
			return
		}
		if !s.countFrame(c) {
			return
		}
		if !s.dispatch(c, reqID, msg) {
			return
		}
	}
}

// countFrame applies the per-connection frame rate; false means close.
func (s *Server) countFrame(c *serverConn) bool {
	c.frames++
	if !c.bucket.take(time.Now()) {
		s.stats.frameRate.Add(1)
		s.metrics.RateLimited(metrics.LimitFrames)
		c.log.Warn().Int("max_frames_per_sec", s.cfg.Limits.MaxFramesPerSec).Msg("closing connection: frame rate exceeded")
		return false
	}
	return true
}

func (s *Server) reply(c *serverConn, reqID string, m link.Message) bool {
	if err := c.lc.WriteMessage(reqID, m, writeTimeout); err != nil {
		c.log.Debug().Err(err).Str("type", m.MessageType()).Msg("write failed")
		return false
	}
	return true
}

// dispatch answers one message; false means close the connection.
func (s *Server) dispatch(c *serverConn, reqID string, msg link.Message) bool {
	switch m := msg.(type) {
	case *link.Hello:
		c.peer.Features = m.Features
		return s.reply(c, reqID, s.serverHello())
	case *link.PairRequest:
		return s.reply(c, reqID, s.pair(c, m.Token))
	}
	if c.pairing {
		return s.reply(c, reqID, &link.Error{Code: link.CodePairingRequired, Message: "pairing required"})
	}
	switch m := msg.(type) {
	case *link.GetStatus:
		return s.reply(c, reqID, s.statusSnapshot(c.peer))
	case *link.GetPathMeta:
		return s.reply(c, reqID, s.pathMeta())
	case *link.SessionRequest:
		if s.draining.Load() {
			return s.reply(c, reqID, s.denyDraining(c, *m))
		}
		if err := s.health.Err(); err != nil {
			return s.reply(c, reqID, s.denyUnhealthy(c, *m, err))
		}
		return s.reply(c, reqID, s.sessions.Request(c.ctx, c.peer, *m))
	case *link.SessionClose:
		return s.reply(c, reqID, s.sessions.Close(c.peer, m.TestID))
	case *link.TestResultRequest:
		return s.reply(c, reqID, s.sessions.Result(c.peer, m.TestID))
	case *link.TunnelAttach:
		if c.frames != 1 {
			return s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: "tunnel_attach must be the first message of a connection"})
		}
		c.attached = true
		s.sessions.Attach(c.ctx, c.peer, reqID, *m, c.lc)
		return false
	}
	return s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: "unexpected message " + msg.MessageType()})
}

// drainRetryMargin is added to the rest of the grace period in the retry
// hint of a request refused while draining: roughly a restart.
const drainRetryMargin = 10 * time.Second

// denyDraining refuses a session request while the server drains: busy,
// with a retry hint past the end of the grace period.
func (s *Server) denyDraining(c *serverConn, req link.SessionRequest) *link.SessionDeny {
	s.mu.Lock()
	left := s.drainEnd.Sub(s.now())
	s.mu.Unlock()
	retry := int((max(left, 0) + drainRetryMargin + time.Second - 1) / time.Second)
	const msg = "the reflector is shutting down"
	s.metrics.SessionDenied(metrics.DenyBusy, metrics.TestType(req.TestType))
	s.writeAudit(c.log, audit.Event{
		EventType: audit.SessionDenied, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(),
		TestType: req.TestType, Params: req.Params, Decision: "denied", Reason: string(link.DenyBusy),
		Details: map[string]any{"message": msg, "retry_after_sec": retry},
	})
	c.log.Info().Int("retry_after_sec", retry).Msg("session denied: draining")
	return &link.SessionDeny{Reason: link.DenyBusy.ForAppliance(), Message: msg, RetryAfterSec: &retry}
}

// auditDenial writes a connection_denied event in full when it is the
// first of its source in the current interval, and otherwise only counts
// it for the source's rate_limited summary.
func (s *Server) auditDenial(log zerolog.Logger, addr netip.AddrPort, ev audit.Event) {
	if s.denials.deny(addr.Addr(), ev.Reason, s.now()) {
		s.writeAudit(log, ev)
	}
}

func (s *Server) writeAudit(log zerolog.Logger, ev audit.Event) {
	if err := s.audit.Write(ev); err != nil {
		s.metrics.AuditWriteFailed()
		log.Error().Err(err).Str("event", string(ev.EventType)).Msg("audit log write failed")
	}
}

// policySummary is the server_hello policy from [quotas].
func (s *Server) policySummary() link.PolicySummary {
	q := s.cfg.Quotas
	types := []string{}
	if q.AllowThroughput {
		types = append(types, link.TestThroughput)
	}
	if q.AllowUDPEcho {
		types = append(types, link.TestUDPEcho)
	}
	return link.PolicySummary{
		MaxTestDurationSec: q.MaxTestDurationSec,
		MaxConcurrentTests: q.MaxConcurrentTests,
		MaxTestsPerHour:    q.MaxTestsPerHourPerPeer,
		AllowedTestTypes:   types,
	}
}

// features lists what this server offers in server_hello.
func (s *Server) features() []string {
	f := []string{link.FeatureThroughput, link.FeatureUDPEcho, link.FeaturePathMeta, link.FeaturePairing}
	if _, none := s.sessions.(NoSessions); !none {
		f = append(f, link.FeatureTunnel, link.FeatureTestResult)
	}
	return f
}

func (s *Server) serverHello() *link.ServerHello {
	return &link.ServerHello{
		Version:       link.ProtocolVersion,
		Features:      s.features(),
		PolicySummary: s.policySummary(),
	}
}

// statusSnapshot reports the peer's own running test (or, without naming
// the other peer, someone else's) and the peer's usage today.
func (s *Server) statusSnapshot(peer PeerInfo) *link.StatusSnapshot {
	st := s.sessions.Status()
	snap := &link.StatusSnapshot{EndpointID: s.id.String(), UptimeSec: uint64(s.Uptime() / time.Second)}
	var pick *ActiveSession
	for i := range st.Active {
		a := &st.Active[i]
		if a.PeerID == peer.ID {
			pick = a
			break
		}
		if pick == nil {
			pick = a
		}
	}
	if pick != nil {
		at := &link.ActiveTest{TestID: pick.TestID, TestType: pick.TestType, StartedAt: pick.StartedAt.UTC().Format(time.RFC3339)}
		if pick.PeerID == peer.ID {
			at.PeerID = pick.PeerID.String()
		} else {
			at.TestID = ""
		}
		if left := pick.ExpiresAt.Sub(s.now()); left > 0 {
			at.RemainingSec = uint64((left + time.Second - 1) / time.Second)
		}
		snap.ActiveTest = at
	}
	for _, u := range st.Usage {
		if u.PeerID == peer.ID {
			snap.TestsToday, snap.BytesToday = u.TestsToday, u.BytesToday
		}
	}
	return snap
}

func (s *Server) pathMeta() *link.PathMeta {
	snap, err := s.sampler.Snapshot()
	if err != nil {
		s.log.Debug().Err(err).Msg("host metadata incomplete")
	}
	pm := &link.PathMeta{
		CPULoad:       snap.CPULoad,
		MemoryUsedMB:  snap.MemoryUsedMB,
		MemoryTotalMB: snap.MemoryTotalMB,
		LoadAvg:       snap.LoadAvg,
		TimeSynced:    snap.TimeSynced,
		BuildVersion:  buildinfo.Version,
		BuildHash:     buildinfo.CommitHash(),
	}
	if snap.MTU > 0 {
		mtu := snap.MTU
		pm.MTU = &mtu
	}
	return pm
}

// pair redeems a pairing token for the connection's peer.
func (s *Server) pair(c *serverConn, token string) *link.PairResponse {
	ours := s.id.String()
	if !c.pairing {
		return &link.PairResponse{Success: true, Message: "already authorized", EndpointID: &ours}
	}
	err := s.pairing.RedeemWith(token, func() error {
		_, err := s.peers.Add(c.peer.ID, peers.SourcePaired, "paired from "+c.peer.Addr.Addr().String())
		return err
	})
	if err != nil {
		if errors.Is(err, pairing.ErrBadToken) || errors.Is(err, pairing.ErrTooManyFailures) ||
			errors.Is(err, pairing.ErrExpired) || errors.Is(err, pairing.ErrNoWindow) {
			s.metrics.PairingEvent(metrics.PairingRejected)
		}
		c.log.Warn().Err(err).Msg("pairing failed")
		return &link.PairResponse{Success: false, Message: pairFailure(err)}
	}
	c.pairing = false
	s.metrics.PairingEvent(metrics.PairingPaired)
	s.writeAudit(c.log, audit.Event{EventType: audit.PeerPaired, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(), Decision: "accepted"})
	c.log.Info().Msg("peer paired")
	return &link.PairResponse{Success: true, Message: "paired", EndpointID: &ours}
}

// pairFailure is the pair_response message for a failed redemption. It
// does not tell a wrong token from a closed window beyond what the
// operator can see anyway.
func pairFailure(err error) string {
	switch {
	case errors.Is(err, pairing.ErrBadToken):
		return "wrong pairing token"
	case errors.Is(err, pairing.ErrTooManyFailures):
		return "too many wrong tokens: pairing window closed"
	case errors.Is(err, pairing.ErrExpired), errors.Is(err, pairing.ErrNoWindow):
		return "no pairing window is open"
	default:
		return "pairing failed on the server"
	}
}
