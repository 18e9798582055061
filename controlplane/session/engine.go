package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// End reasons of a session, in audit session_completed and test_result.
const (
	EndDone          = "done"           // iperf3 results exchanged / echo duration elapsed
	EndClientGone    = "client_gone"    // the iperf3 client closed or terminated
	EndDeadline      = "deadline"       // the hard deadline passed
	EndError         = "error"          // the test failed
	EndNoClient      = "no_client"      // nobody ran the test before the deadline
	EndClosed        = "closed"         // session_close
	EndPeerGone      = "peer_gone"      // the control connection closed
	EndQuotaExceeded = "quota_exceeded" // cut off at the daily byte budget
	EndShutdown      = "shutdown"       // the reflector stopped
)

// outcome is what an engine reports when its test is over.
type outcome struct {
	reason string
	// completed: the test ran to its normal end (releases the cooldown).
	completed bool
	err       error
	// summary is the test-type specific result (throughputSummary,
	// echoSummary).
	summary any
}

// engine is the data plane of one session, listening on its port.
type engine interface {
	// run serves the test until it ends by itself or ctx ends; ctx's
	// cause (one of the End* reasons as an endCause) says why it ended.
	run(ctx context.Context) outcome
	// meter returns the bytes the reflector sent and received so far.
	meter() (sent, received int64)
	// close releases the sockets; it is idempotent and safe after run.
	close()
	// claimed reports whether the peer came for the test: a connection
	// or datagram from its address reached the data port.
	claimed() bool
}

// endCause is the context cause naming why the manager ended a session.
type endCause string

func (c endCause) Error() string { return "session ended: " + string(c) }

// causeReason extracts the End* reason from ctx, or "" when ctx is live.
func causeReason(ctx context.Context) string {
	var c endCause
	if errors.As(context.Cause(ctx), &c) {
		return string(c)
	}
	if ctx.Err() != nil {
		return EndDeadline
	}
	return ""
}

// udpAcceptor is an iperf3 UDP acceptor that can be closed and counts the
// datagrams it dropped from other senders (dataplane/udpaccept's).
type udpAcceptor interface {
	iperf3proto.UDPAcceptor
	Close() error
	Dropped() uint64
}

// openUDPFunc opens the UDP side of a throughput port, accepting streams
// only from allow.
type openUDPFunc func(ctx context.Context, addr string, allow netip.Addr) (udpAcceptor, error)

// countingListener counts connections from addresses other than allowed
// (it passes them on, and the iperf3 server answers them ACCESS_DENIED)
// and those from allowed.
type countingListener struct {
	net.Listener
	allowed netip.Addr
	foreign *atomic.Int64
	own     *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && a.AddrPort().Addr().Unmap() != l.allowed {
			l.foreign.Add(1)
		} else {
			l.own.Add(1)
		}
	}
	return c, err
}

// SetDeadline lets the iperf3 server stop a pending Accept.
func (l *countingListener) SetDeadline(t time.Time) error {
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return nil
}

// throughputEngine is a native iperf3 server on one port (TCP, and UDP for
// protocol udp).
type throughputEngine struct {
	ln      net.Listener
	udp     udpAcceptor
	srv     *iperf3proto.Server
	foreign atomic.Int64
	own     atomic.Int64 // connections from the peer's address
}

// throughputSummary is the test_result / audit summary of a throughput test.
type throughputSummary struct {
	Protocol       string  `json:"protocol"`
	Streams        int     `json:"streams"`
	Reverse        bool    `json:"reverse,omitempty"`
	Bidir          bool    `json:"bidir,omitempty"`
	BytesSent      int64   `json:"bytes_sent"`
	BytesReceived  int64   `json:"bytes_received"`
	Seconds        float64 `json:"seconds"`
	SentBps        float64 `json:"sent_bps,omitempty"`
	ReceivedBps    float64 `json:"received_bps,omitempty"`
	Retransmits    int64   `json:"retransmits,omitempty"`
	LostPackets    int64   `json:"lost_packets,omitempty"`
	Packets        int64   `json:"packets,omitempty"`
	JitterMs       float64 `json:"jitter_ms,omitempty"`
	ForeignRefused int64   `json:"foreign_refused"`
	// ExtraRefused counts connections from the peer's address beyond the
	// test's own (control and streams), refused: a second iperf3 client.
	ExtraRefused int64 `json:"extra_refused,omitempty"`
	// ForeignDropped counts UDP datagrams from other senders (protocol udp).
	ForeignDropped uint64 `json:"foreign_dropped,omitempty"`
	// TunnelDrops is what a tunneled UDP test lost inside the reflector.
	TunnelDrops *tunnelDrops `json:"tunnel_drops,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// openThroughput listens on host:port (TCP and UDP) for one iperf3 test
// from allowed, limited to sp and budget and ending by deadline at the
// latest.
func openThroughput(ctx context.Context, openUDP openUDPFunc, host string, port int, allowed netip.Addr, sp *spec, deadline time.Time, budget *iperf3proto.ByteBudget, log zerolog.Logger) (*throughputEngine, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	var udp udpAcceptor
	if sp.Protocol == "udp" {
		// validate refuses UDP throughput when openUDP is nil.
		if udp, err = openUDP(ctx, addr, allowed); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
	}
	return newThroughputEngine(ln, udp, allowed, sp, deadline, budget, log), nil
}

// newThroughputEngine serves one iperf3 test from allowed on ln (and udp
// for protocol udp; nil otherwise), limited to sp and budget and ending by
// deadline at the latest. Only the first control connection from allowed
// runs a test: the iperf3 server refuses every later one.
func newThroughputEngine(ln net.Listener, udp udpAcceptor, allowed netip.Addr, sp *spec, deadline time.Time, budget *iperf3proto.ByteBudget, log zerolog.Logger) *throughputEngine {
	e := &throughputEngine{udp: udp}
	e.ln = &countingListener{Listener: ln, allowed: allowed, foreign: &e.foreign, own: &e.own}
	wantUDP := sp.Protocol == "udp"
	e.srv = iperf3proto.NewServer(iperf3proto.ServerConfig{
		MaxStreams:    sp.Streams,
		MaxDuration:   sp.duration(),
		Deadline:      deadline,
		AllowedSource: allowed,
		Budget:        budget,
		Logger:        log,
		OnStart: func(p iperf3proto.Params) error {
			if p.UDP != wantUDP {
				return fmt.Errorf("the session was granted for protocol %s", sp.Protocol)
			}
			return nil
		},
	})
	return e
}

func (e *throughputEngine) meter() (int64, int64) { return e.srv.Meter() }

func (e *throughputEngine) claimed() bool { return e.own.Load() > 0 }

func (e *throughputEngine) close() {
	_ = e.ln.Close()
	if e.udp != nil {
		_ = e.udp.Close()
	}
}

func (e *throughputEngine) run(ctx context.Context) outcome {
	var ua iperf3proto.UDPAcceptor // nil for TCP tests, which never use it
	if e.udp != nil {
		ua = e.udp
	}
	res, err := e.srv.ServeOne(ctx, e.ln, ua)
	if err != nil {
		// No test ran: ended by the manager, the deadline, or a broken
		// listener.
		r := causeReason(ctx)
		switch {
		case r == EndDeadline:
			r = EndNoClient
		case r == "":
			r = EndError
		}
		return outcome{reason: r, err: err, summary: &throughputSummary{ForeignRefused: e.foreign.Load()}}
	}
	sum := &throughputSummary{
		Protocol: res.Protocol, Streams: res.Streams, Reverse: res.Reverse, Bidir: res.Bidir,
		BytesSent: res.BytesSent, BytesReceived: res.BytesReceived,
		Seconds: res.Duration.Seconds(), ForeignRefused: e.foreign.Load(),
	}
	if secs := res.Duration.Seconds(); secs > 0 {
		sum.SentBps = float64(res.BytesSent) * 8 / secs
		sum.ReceivedBps = float64(res.BytesReceived) * 8 / secs
	}
	if res.Retransmits > 0 {
		sum.Retransmits = res.Retransmits
	}
	var jitter float64
	var udpStreams int
	for _, st := range res.PerStream {
		if !st.Sender && res.Protocol == "udp" {
			sum.Packets += st.Packets
			sum.LostPackets += st.Lost
			jitter += st.Jitter
			udpStreams++
		}
	}
	if udpStreams > 0 {
		sum.JitterMs = jitter / float64(udpStreams) * 1000
	}
	if e.udp != nil {
		sum.ForeignDropped = e.udp.Dropped()
		if f, ok := e.udp.(flowUDP); ok {
			sum.TunnelDrops = f.tunnelDrops()
		}
	}
	// The peer's own connections: control, and the TCP streams set up.
	used := int64(1)
	if res.Protocol == "tcp" {
		used += int64(len(res.PerStream))
	}
	sum.ExtraRefused = max(e.own.Load()-used, 0)
	if res.Err != nil {
		sum.Error = res.Err.Error()
	}
	o := outcome{err: res.Err, summary: sum}
	switch res.EndReason {
	case iperf3proto.EndDone:
		o.reason, o.completed = EndDone, true
	case iperf3proto.EndClientGone:
		o.reason = EndClientGone
	case iperf3proto.EndDeadline:
		o.reason = causeReason(ctx)
		if o.reason == "" {
			o.reason = EndDeadline
		}
	default:
		o.reason = EndError
	}
	return o
}

// echoEngine is a UDP echo engine on one port.
type echoEngine struct {
	eng   *echo.Engine
	sp    *spec
	until time.Time // the session's deadline
}

// echoSummary is the test_result / audit summary of a udp_echo test.
type echoSummary struct {
	Received         uint64 `json:"received"`
	Echoed           uint64 `json:"echoed"`
	Bytes            uint64 `json:"bytes"`
	DroppedForeign   uint64 `json:"dropped_foreign"`
	DroppedRate      uint64 `json:"dropped_rate"`
	DroppedTruncated uint64 `json:"dropped_truncated,omitempty"`
	SendErrors       uint64 `json:"send_errors,omitempty"`
	RatePPS          int    `json:"rate_pps"`
	Timestamped      bool   `json:"timestamped,omitempty"`
	Error            string `json:"error,omitempty"`
}

// openEcho listens on host:port for echo datagrams from allowed.
func openEcho(ctx context.Context, host string, port int, allowed netip.Addr, sp *spec, until time.Time) (*echoEngine, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	eng, err := echo.Listen(ctx, addr, echo.Config{Allowed: allowed, MaxPPS: sp.RatePPS, Timestamped: sp.Timestamped})
	if err != nil {
		return nil, fmt.Errorf("echo listen %s: %w", addr, err)
	}
	return &echoEngine{eng: eng, sp: sp, until: until}, nil
}

// meter counts echoed bytes as sent; received datagrams are only echoed
// or dropped, so the echoed bytes are what the session moved.
func (e *echoEngine) meter() (int64, int64) {
	return int64(e.eng.Stats().Bytes), 0
}

func (e *echoEngine) close() { _ = e.eng.Close() }

func (e *echoEngine) claimed() bool {
	st := e.eng.Stats()
	return st.Received > st.DroppedForeign
}

func (e *echoEngine) run(ctx context.Context) outcome {
	sctx, cancel := context.WithDeadline(ctx, e.until)
	defer cancel()
	err := e.eng.Serve(sctx)
	o := outcome{err: err, reason: causeReason(ctx), summary: e.summary(err)}
	switch {
	case err != nil:
		o.reason = EndError
	case o.reason == "":
		// Only the session's deadline ended it.
		o.reason, o.completed = EndDone, true
	}
	return o
}

// summary snapshots the engine's counters.
func (e *echoEngine) summary(err error) *echoSummary {
	st := e.eng.Stats()
	s := &echoSummary{
		Received: st.Received, Echoed: st.Echoed, Bytes: st.Bytes,
		DroppedForeign: st.DroppedForeign, DroppedRate: st.DroppedRate,
		DroppedTruncated: st.DroppedTruncated, SendErrors: st.SendErrors,
		RatePPS: e.sp.RatePPS, Timestamped: e.sp.Timestamped,
	}
	if err != nil {
		s.Error = err.Error()
	}
	return s
}
