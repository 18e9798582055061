package iperf3proto

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/dataplane/udpaccept"
)

// EndReason says how a test ended.
type EndReason string

// End reasons reported in TestResult.
const (
	EndDone       EndReason = "done"        // results exchanged normally
	EndClientGone EndReason = "client_gone" // the client closed or terminated
	EndDeadline   EndReason = "deadline"    // the hard deadline or the context ended it
	EndError      EndReason = "error"       // a protocol error or a refused request
)

// Default timeouts of the server.
const (
	// DefaultHandshakeTimeout bounds cookie, parameters and stream creation.
	DefaultHandshakeTimeout = 10 * time.Second
	// resultsTimeout bounds the results exchange after TEST_END.
	resultsTimeout = 10 * time.Second
	// testGrace is added to time+omit for the implicit hard deadline.
	testGrace = 15 * time.Second
	// defaultUntimedLimit bounds -n/-k tests when no TestTimeout is set.
	defaultUntimedLimit = 10 * time.Minute
)

// ServerConfig tunes and limits the server.
type ServerConfig struct {
	// MaxStreams refuses tests with more parallel streams (0: protocol max 128).
	MaxStreams int
	// MaxDuration refuses tests whose time+omit exceeds it (0: protocol max);
	// -n/-k tests are accepted and cut at MaxDuration plus a grace period.
	MaxDuration time.Duration
	// Deadline, when set, is an absolute hard teardown time for the test.
	Deadline time.Time
	// TestTimeout, when set, is a hard teardown measured from the control
	// connection's accept; it also ends a stalled client.
	TestTimeout time.Duration
	// HandshakeTimeout bounds cookie, parameters and stream setup
	// (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// AllowedSource, when valid, is the only client address served; others
	// get ACCESS_DENIED.
	AllowedSource netip.Addr
	// ServerOutputJSON makes --get-server-output answer with JSON
	// (server_output_json) instead of text (server_output_text).
	ServerOutputJSON bool
	// Logger receives one line per test event.
	Logger zerolog.Logger
	// OnStart, when set, is called with the accepted parameters before
	// streams are created; an error refuses the test with ACCESS_DENIED.
	OnStart func(Params) error
	// Budget, when set, bounds the bytes the streams move (see ByteBudget).
	Budget *ByteBudget
}

// StreamStats is one stream's outcome on the server side.
type StreamStats struct {
	ID          int
	Sender      bool // the server sent on this stream
	Bytes       int64
	Seconds     float64
	Retransmits int64 // -1 when unknown
	// Packets is the UDP datagrams sent (sender) or the highest sequence
	// number seen (receiver), after the omit period.
	Packets int64
	// UDP receiver statistics
	Lost       int64
	OutOfOrder int64
	Jitter     float64 // seconds
}

// TestResult is what one served test did.
type TestResult struct {
	Params           Params
	Remote           netip.AddrPort
	Protocol         string // "tcp" or "udp"
	Reverse, Bidir   bool
	Streams          int
	BytesSent        int64 // server -> client, after the omit period
	BytesReceived    int64 // client -> server, after the omit period
	Duration         time.Duration
	EndReason        EndReason
	Err              error
	Retransmits      int64           // sum over the server's TCP sender streams
	ServerOutput     json.RawMessage // server_output_json when sent
	ServerOutputText string          // server_output_text when sent
	PerStream        []StreamStats
	ClientResults    *Results // the client's results, when exchanged
}

// Server serves iperf3 tests, one at a time.
type Server struct {
	cfg      ServerConfig
	sent     atomic.Int64
	received atomic.Int64
	// sequential is set by Serve: a control connection that arrives while
	// the previous test is only tearing down is kept in carry for the next
	// test instead of being refused (stock iperf3 -s queues it too).
	sequential bool
	carry      net.Conn
}

// NewServer returns a server with cfg.
func NewServer(cfg ServerConfig) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxStreams <= 0 || cfg.MaxStreams > MaxStreams {
		cfg.MaxStreams = MaxStreams
	}
	return &Server{cfg: cfg}
}

// Meter returns the bytes sent and received by the current (or last) test
// so far; it is safe to call while a test runs.
func (s *Server) Meter() (sent, received int64) {
	return s.sent.Load(), s.received.Load()
}

// ErrListenerDeadline is returned by ServeOne for a listener without
// SetDeadline: the server could not stop accepting at the end of a test
// without closing it.
var ErrListenerDeadline = errors.New("iperf3: listener must implement SetDeadline")

// listenerDeadline is implemented by *net.TCPListener.
type listenerDeadline interface {
	SetDeadline(t time.Time) error
}

// acceptCtx accepts one connection, giving up when ctx ends (when ln
// supports deadlines). It leaves ln without a deadline. When ctx ended
// just as a connection was accepted it returns both that connection and
// ctx.Err(): the caller decides whether to keep or close it.
func acceptCtx(ctx context.Context, ln net.Listener) (net.Conn, error) {
	dl, ok := ln.(listenerDeadline)
	if !ok {
		return ln.Accept()
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = dl.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	c, err := ln.Accept()
	if !stop() {
		<-fired
		_ = dl.SetDeadline(time.Time{})
	}
	if ctx.Err() != nil {
		return c, ctx.Err()
	}
	return c, err
}

// deny answers ACCESS_DENIED and closes c.
func deny(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeState(c, AccessDenied)
	_ = c.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// ServeOne runs exactly one test on ln (and udp for UDP streams): it waits
// for a permitted control connection, serves it, and returns when the test
// ends however it ends, with every goroutine and connection it started
// released. ln is not closed, and must implement SetDeadline (as
// *net.TCPListener does). While the test runs further control
// connections get ACCESS_DENIED. The error is non-nil only when no test was
// run (ctx ended or ln failed); test failures are in TestResult.Err.
func (s *Server) ServeOne(ctx context.Context, ln net.Listener, udp UDPAcceptor) (*TestResult, error) {
	if _, ok := ln.(listenerDeadline); !ok {
		return nil, fmt.Errorf("serve iperf3 on %T: %w", ln, ErrListenerDeadline)
	}
	for {
		c := s.carry
		s.carry = nil
		if c == nil {
			var err error
			if c, err = acceptCtx(ctx, ln); err != nil {
				if c != nil {
					_ = c.Close()
				}
				return nil, fmt.Errorf("accept control connection: %w", err)
			}
		}
		remote := addrPort(c.RemoteAddr())
		if s.cfg.AllowedSource.IsValid() && remote.Addr() != s.cfg.AllowedSource.Unmap() {
			s.cfg.Logger.Warn().Str("remote", remote.String()).Str("allowed", s.cfg.AllowedSource.String()).
				Msg("iperf3: control connection from a source not allowed: ACCESS_DENIED")
			deny(c)
			continue
		}
		return s.runTest(ctx, ln, udp, c, remote), nil
	}
}

// Serve runs tests one after another until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener, udp UDPAcceptor) error {
	s.sequential = true
	defer func() {
		if s.carry != nil {
			_ = s.carry.Close()
			s.carry = nil
		}
	}()
	for {
		if _, err := s.ServeOne(ctx, ln, udp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// ListenAndServe listens on addr for TCP (control and TCP streams) and UDP
// (UDP streams, same port) and serves tests until ctx ends, or one test
// when oneOff is set.
func ListenAndServe(ctx context.Context, addr string, cfg ServerConfig, oneOff bool) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("iperf3 listen tcp %s: %w", addr, err)
	}
	defer func() { _ = ln.Close() }()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("iperf3 listen address %q: %w", addr, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	var allow func(netip.AddrPort) bool
	if cfg.AllowedSource.IsValid() {
		want := cfg.AllowedSource.Unmap()
		allow = func(ap netip.AddrPort) bool { return ap.Addr() == want }
	}
	ua, err := udpaccept.NewAcceptor(ctx, net.JoinHostPort(host, fmt.Sprint(port)), allow)
	if err != nil {
		return fmt.Errorf("iperf3 listen udp: %w", err)
	}
	defer func() { _ = ua.Close() }()
	srv := NewServer(cfg)
	cfg.Logger.Info().Str("addr", ln.Addr().String()).Bool("one_off", oneOff).Msg("iperf3 server listening")
	if oneOff {
		_, err := srv.ServeOne(ctx, ln, ua)
		if err != nil && ctx.Err() != nil {
			return nil
		}
		return err
	}
	return srv.Serve(ctx, ln, ua)
}

// test is the state of one served test.
type test struct {
	srv    *Server
	cfg    *ServerConfig
	log    zerolog.Logger
	ctrl   net.Conn
	remote netip.AddrPort
	cookie [CookieSize]byte
	params Params
	res    *TestResult

	// accepted is when the control connection arrived; hard is the
	// test's teardown time as known so far (zero: none), hardCtx ends
	// then, testCtx also ends when the test is torn down.
	accepted time.Time
	hard     time.Time
	hardCtx  context.Context
	testCtx  context.Context
	cancels  []context.CancelFunc

	wantTCP atomic.Bool
	// resultsSent is set once our results are out: the client is finishing,
	// and a new control connection is the next test's (see Server.carry).
	resultsSent atomic.Bool
	carry       net.Conn // set by acceptLoop, read after wg.Wait
	conns       chan net.Conn
	msgs        chan ctrlMsg // control states read while streams run
	wg          sync.WaitGroup

	set  *streamSet
	quit chan struct{} // closed when the test is torn down
	out  *serverOutput
	// congestionUsed is the congestion control of the last stream set up.
	congestionUsed string
	// retrans: the server's senders report TCP retransmits.
	retrans bool
}

type ctrlMsg struct {
	state State
	err   error
}

// testEnd is how a phase ended the test early.
type testEnd struct {
	reason EndReason
	err    error
}

func (e *testEnd) Error() string { return e.err.Error() }
func (e *testEnd) Unwrap() error { return e.err }

// endWith ends the test for reason with err.
func endWith(reason EndReason, err error) error { return &testEnd{reason: reason, err: err} }

// runTest serves one test on ctrl, phase by phase.
func (s *Server) runTest(parent context.Context, ln net.Listener, udp UDPAcceptor, ctrl net.Conn, remote netip.AddrPort) *TestResult {
	t := s.newTest(parent, ctrl, remote)
	t.wg.Add(1)
	go t.acceptLoop(t.testCtx, ln)
	defer t.teardown()
	err := t.handshake()
	if err == nil {
		err = t.applyLimits()
	}
	if err == nil {
		err = t.setupStreams(udp)
	}
	var cpu cpuMeter
	if err == nil {
		cpu, err = t.run()
	}
	if err == nil {
		err = t.exchangeResults(cpu)
	}
	var te *testEnd
	switch {
	case err == nil:
		t.res.EndReason = EndDone
	case errors.As(err, &te):
		t.res.EndReason, t.res.Err = te.reason, te.err
	default:
		t.res.EndReason, t.res.Err = t.classify(err), err
	}
	return t.res
}

// newTest prepares the state of a test whose control connection arrived.
func (s *Server) newTest(parent context.Context, ctrl net.Conn, remote netip.AddrPort) *test {
	s.sent.Store(0)
	s.received.Store(0)
	t := &test{
		srv: s, cfg: &s.cfg, ctrl: ctrl, remote: remote, accepted: time.Now(),
		log:   s.cfg.Logger.With().Str("remote", remote.String()).Logger(),
		res:   &TestResult{Remote: remote},
		conns: make(chan net.Conn),
		msgs:  make(chan ctrlMsg, 4),
		quit:  make(chan struct{}),
	}
	t.hard = s.cfg.Deadline
	if s.cfg.TestTimeout > 0 {
		t.hard = earliest(t.hard, t.accepted.Add(s.cfg.TestTimeout))
	}
	t.hardCtx = parent
	t.tightenDeadline(t.hard)
	ctx, cancel := context.WithCancel(t.hardCtx)
	t.testCtx, t.cancels = ctx, append(t.cancels, cancel)
	return t
}

// tightenDeadline makes hard the test's teardown time when it is earlier.
func (t *test) tightenDeadline(hard time.Time) {
	t.hard = earliest(t.hard, hard)
	if t.hard.IsZero() {
		return
	}
	ctx, cancel := context.WithDeadline(t.hardCtx, t.hard)
	t.hardCtx, t.cancels = ctx, append(t.cancels, cancel)
}

// teardown releases everything the test started and logs its end.
func (t *test) teardown() {
	close(t.quit)
	for _, c := range t.cancels {
		c()
	}
	_ = t.ctrl.Close()
	t.wg.Wait()
	t.srv.carry = t.carry
	if t.set != nil {
		t.set.close()
	}
	res := t.res
	ev := t.log.Info()
	if res.EndReason != EndDone {
		ev = t.log.Warn().AnErr("err", res.Err)
	}
	ev.Str("end", string(res.EndReason)).Str("protocol", res.Protocol).Int("streams", res.Streams).
		Bool("reverse", res.Reverse).Bool("bidir", res.Bidir).
		Int64("bytes_sent", res.BytesSent).Int64("bytes_received", res.BytesReceived).
		Dur("duration", res.Duration).Msg("iperf3 test finished")
}

// classify names how an error of the control connection ended the test.
func (t *test) classify(err error) EndReason {
	switch {
	case t.hardCtx.Err() != nil || isTimeout(err):
		return EndDeadline
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		return EndClientGone
	}
	return EndError
}

// handshake reads the cookie and the parameters (PARAM_EXCHANGE).
func (t *test) handshake() error {
	ctrl := t.ctrl
	setEarliest(ctrl, t.accepted.Add(t.cfg.HandshakeTimeout), t.hard)
	if tc, ok := ctrl.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	// The handshake reads block on ctrl's deadline alone: end them at once
	// when the test's context ends (session closed, server shutting down).
	stopWatch := context.AfterFunc(t.testCtx, func() { _ = ctrl.SetDeadline(time.Unix(1, 0)) })
	defer stopWatch()
	if _, err := io.ReadFull(ctrl, t.cookie[:]); err != nil {
		return fmt.Errorf("read cookie: %w", err)
	}
	if err := writeState(ctrl, ParamExchange); err != nil {
		return err
	}
	b, err := readMessage(ctrl, MaxParamsSize)
	if stopWatch() && err == nil {
		t.params, err = ParseParams(b)
	} else if err == nil {
		err = fmt.Errorf("read parameters: %w", t.testCtx.Err())
	}
	if err == nil {
		p := t.params
		t.res.Params, t.res.Protocol, t.res.Reverse, t.res.Bidir, t.res.Streams = p, p.Protocol(), p.Reverse, p.Bidirectional, p.Streams()
		return nil
	}
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrParamType) || errors.Is(err, ErrMalformed) || t.classify(err) == EndError {
		t.log.Warn().Err(err).Msg("iperf3: bad parameters: SERVER_ERROR")
		_ = writeServerError(ctrl, ErrRecvParams, 0)
		return endWith(EndError, err)
	}
	return err
}

// applyLimits refuses what the protocol or the server does not allow,
// asks the policy hook, and fixes the hard deadline now that the duration
// is known.
func (t *test) applyLimits() error {
	p, cfg := t.params, t.cfg
	if err := t.checkLimits(); err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			t.log.Warn().Int32("iperf3_errno", int32(pe.Code)).Str("reason", pe.Detail).Msg("iperf3: request refused: SERVER_ERROR")
			_ = writeServerError(t.ctrl, pe.Code, pe.Errno)
		}
		return endWith(EndError, err)
	}
	if cfg.OnStart != nil {
		if err := cfg.OnStart(p); err != nil {
			t.log.Warn().Err(err).Msg("iperf3: test refused by policy: ACCESS_DENIED")
			_ = writeState(t.ctrl, AccessDenied)
			return endWith(EndError, fmt.Errorf("refused by policy: %w", err))
		}
	}
	switch {
	case p.Time > 0:
		t.tightenDeadline(t.accepted.Add(time.Duration(p.Time+p.Omit)*time.Second + testGrace))
	case cfg.MaxDuration > 0:
		t.tightenDeadline(t.accepted.Add(cfg.MaxDuration + testGrace))
	case cfg.TestTimeout <= 0 && cfg.Deadline.IsZero():
		t.tightenDeadline(t.accepted.Add(defaultUntimedLimit))
	}
	t.log.Info().Str("protocol", p.Protocol()).Int("parallel", max(p.Parallel, 1)).Bool("reverse", p.Reverse).
		Bool("bidir", p.Bidirectional).Int("time", p.Time).Int64("bytes", p.Bytes).Int64("blocks", p.Blocks).
		Int("len", p.BlockLen()).Uint64("bandwidth", p.Bandwidth).Str("client_version", p.ClientVersion).
		Bool("gsro", p.GSO != 0 || p.GRO != 0).Msg("iperf3 test accepted")
	t.out = newServerOutput(t.cfg.ServerOutputJSON, t)
	t.set = newStreamSet(p, &t.srv.sent, &t.srv.received, serverRcvLowat(p.Parallel))
	t.set.budget = t.cfg.Budget
	t.set.closeAtEnd = true
	t.set.gateLocal = p.GRO == 0 // see localgate.go
	t.retrans = t.senderHasRetransmits() == 1
	return nil
}

// setupStreams sends CREATE_STREAMS and takes the test's data connections
// in accept order (the first N are the server's receivers, the next N,
// with --bidir, its senders).
func (t *test) setupStreams(udp UDPAcceptor) error {
	p := t.params
	setEarliest(t.ctrl, time.Now().Add(t.cfg.HandshakeTimeout), t.hard)
	t.wg.Add(1)
	go t.readControl(t.msgs)
	if p.UDP {
		if udp == nil {
			_ = writeServerError(t.ctrl, ErrUnimplemented, 0)
			return endWith(EndError, errors.New("UDP test requested but the server has no UDP acceptor"))
		}
		t.wg.Add(1)
		go t.acceptUDP(t.testCtx, udp, p.Streams())
	} else {
		t.wantTCP.Store(true)
	}
	if err := writeState(t.ctrl, CreateStreams); err != nil {
		return err
	}
	n := max(p.Parallel, 1)
	for len(t.set.streams) < p.Streams() {
		select {
		case c := <-t.conns:
			st := t.set.add(c, p.Reverse || (p.Bidirectional && len(t.set.streams) >= n))
			t.out.connected(st)
			if err := t.applySockopts(st); err != nil {
				_ = writeServerError(t.ctrl, ErrStreamAccept, 0)
				return endWith(EndError, err)
			}
		case m := <-t.msgs:
			if m.err != nil {
				return fmt.Errorf("control connection during stream setup: %w", m.err)
			}
			if m.state == ClientTerminate {
				return endWith(EndClientGone, &ProtocolError{Code: ErrClientTerm})
			}
			return endWith(EndError, fmt.Errorf("state %v during stream setup: %w", m.state, ErrBadState))
		case <-t.hardCtx.Done():
			return endWith(EndDeadline, fmt.Errorf("stream setup: %w", t.hardCtx.Err()))
		}
	}
	t.wantTCP.Store(false)
	if err := t.set.preparePayload(); err != nil {
		_ = writeServerError(t.ctrl, ErrStreamAccept, 0)
		return endWith(EndError, err)
	}
	_ = t.ctrl.SetDeadline(t.hard)
	return nil
}

// run sends TEST_START and TEST_RUNNING, moves data until the client's
// TEST_END, and fixes the streams' final counters.
func (t *test) run() (cpuMeter, error) {
	cpu := startCPU()
	start := time.Now()
	t.set.begin(start)
	t.set.startWorkers(false)
	err := writeState(t.ctrl, TestStart)
	if err == nil {
		err = writeState(t.ctrl, TestRunning)
	}
	if err != nil {
		t.set.end(t.retrans)
		return cpu, err
	}
	t.set.startWorkers(true)
	var omitC <-chan time.Time
	if t.params.Omit > 0 {
		omit := time.NewTimer(time.Duration(t.params.Omit) * time.Second)
		defer omit.Stop()
		omitC = omit.C
	}
	measureStart := start
	defer func() {
		t.set.end(t.retrans)
		t.fillResult(time.Since(measureStart))
	}()
	for {
		select {
		case now := <-omitC:
			measureStart = now
			t.set.markOmitEnd(now, t.retrans)
		case m := <-t.msgs:
			if stop, err := t.runningState(m); stop {
				return cpu, err
			}
		case <-t.hardCtx.Done():
			return cpu, t.terminate(t.hardCtx.Err())
		}
	}
}

// runningState handles a control message while the test runs: stop
// reports whether the test stops running, with a nil error on TEST_END.
func (t *test) runningState(m ctrlMsg) (stop bool, err error) {
	switch {
	case m.err != nil && t.classify(m.err) == EndDeadline:
		return true, t.terminate(m.err)
	case m.err != nil:
		return true, fmt.Errorf("control connection while running: %w", m.err)
	case m.state == TestEnd:
		return true, nil
	case m.state == ClientTerminate:
		return true, endWith(EndClientGone, &ProtocolError{Code: ErrClientTerm})
	case m.state == TestStart || m.state == IperfDone:
		return false, nil
	}
	return true, endWith(EndError, fmt.Errorf("state %v while running: %w", m.state, ErrBadState))
}

// terminate ends a running test at the deadline, telling the client.
func (t *test) terminate(cause error) error {
	t.set.end(t.retrans)
	_ = t.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeState(t.ctrl, ServerTerminate)
	return endWith(EndDeadline, fmt.Errorf("test running: %w", cause))
}

// exchangeResults reads the client's results, sends ours and waits for
// IPERF_DONE (or the client closing).
func (t *test) exchangeResults(cpu cpuMeter) error {
	ctrl, p := t.ctrl, t.params
	total, user, sys := cpu.percent()
	setEarliest(ctrl, time.Now().Add(resultsTimeout), t.hard)
	if err := writeState(ctrl, ExchangeResults); err != nil {
		return err
	}
	b, err := readMessage(ctrl, MaxResultsSize)
	var cr Results
	if err == nil {
		cr, err = ParseResults(b, MaxResultsSize)
	}
	if err != nil {
		return fmt.Errorf("read client results: %w", err)
	}
	t.res.ClientResults = &cr
	ours := Results{
		CPUUtilTotal: total, CPUUtilUser: user, CPUUtilSystem: sys,
		SenderHasRetransmits: t.senderHasRetransmits(), Streams: t.set.results(),
	}
	if !p.UDP {
		ours.CongestionUsed = t.congestionUsed
	}
	if p.GetServerOutput {
		t.addServerOutput(&ours, &cr, total, user, sys)
	}
	ob, err := ours.Marshal()
	if err == nil {
		err = writeMessage(ctrl, ob)
	}
	if err == nil {
		t.resultsSent.Store(true)
		err = writeState(ctrl, DisplayResults)
	}
	if err != nil {
		return fmt.Errorf("send results: %w", err)
	}
	st, err := readState(ctrl)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("wait for IPERF_DONE: %w", err)
	}
	if err == nil && st != IperfDone {
		t.log.Debug().Str("state", st.String()).Msg("iperf3: unexpected state after results")
	}
	return nil
}

// addServerOutput adds --get-server-output's text or JSON to ours.
func (t *test) addServerOutput(ours, theirs *Results, total, user, sys float64) {
	t.out.finish(t.res, ours, theirs, total, user, sys)
	if t.cfg.ServerOutputJSON {
		ours.ServerOutputJSON = t.out.json()
		t.res.ServerOutput = ours.ServerOutputJSON
	} else {
		ours.ServerOutputText = t.out.text()
		t.res.ServerOutputText = ours.ServerOutputText
	}
}

// checkLimits applies protocol limits and the server's own.
func (t *test) checkLimits() error {
	p := t.params
	if err := p.Validate(); err != nil {
		return err
	}
	if max(p.Parallel, 1) > t.cfg.MaxStreams {
		return &ProtocolError{Code: ErrNumStreams, Detail: fmt.Sprintf("%d streams requested, server allows %d", p.Parallel, t.cfg.MaxStreams)}
	}
	if d := t.cfg.MaxDuration; d > 0 && time.Duration(p.Time+p.Omit)*time.Second > d {
		return &ProtocolError{Code: ErrDuration, Detail: fmt.Sprintf("%ds (time+omit) requested, server allows %v", p.Time+p.Omit, d)}
	}
	return nil
}

// senderHasRetransmits is the value of sender_has_retransmits we report.
func (t *test) senderHasRetransmits() int {
	if !t.params.Reverse && !t.params.Bidirectional {
		return -1
	}
	if !t.params.UDP && hasTCPRetransmits {
		return 1
	}
	return 0
}

// acceptLoop accepts TCP connections while the test lives: data streams
// with the test's cookie during stream setup, ACCESS_DENIED for the rest.
func (t *test) acceptLoop(ctx context.Context, ln net.Listener) {
	defer t.wg.Done()
	// Streams are handed over in accept order (--bidir depends on it): each
	// check waits for its predecessor before delivering.
	prev := make(chan struct{})
	close(prev)
	for {
		c, err := acceptCtx(ctx, ln)
		if c != nil && t.resultsSent.Load() && t.srv.sequential && !t.wantTCP.Load() {
			t.log.Debug().Str("from", c.RemoteAddr().String()).Msg("iperf3: next client arrived while the test ends: kept for the next test")
			t.carry = c
			return
		}
		if err != nil {
			if c != nil {
				_ = c.Close()
			}
			if ctx.Err() == nil {
				t.log.Warn().Err(err).Msg("iperf3: accept failed during test")
			}
			return
		}
		if !t.wantTCP.Load() {
			t.log.Info().Str("from", c.RemoteAddr().String()).Msg("iperf3: connection during a running test: ACCESS_DENIED")
			deny(c)
			continue
		}
		next := make(chan struct{})
		t.wg.Add(1)
		go t.checkStream(ctx, c, prev, next)
		prev = next
	}
}

// checkStream reads a would-be stream's cookie and, after the connection
// accepted before it is dealt with (prev closed), hands it to the test when
// the cookie matches; it closes next when done.
func (t *test) checkStream(ctx context.Context, c net.Conn, prev <-chan struct{}, next chan<- struct{}) {
	defer t.wg.Done()
	defer close(next)
	var ck [CookieSize]byte
	_ = c.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	if _, err := io.ReadFull(c, ck[:]); err != nil {
		_ = c.Close()
		return
	}
	if subtle.ConstantTimeCompare(ck[:], t.cookie[:]) != 1 || !t.wantTCP.Load() {
		t.log.Info().Str("from", c.RemoteAddr().String()).Msg("iperf3: connection with a foreign cookie: ACCESS_DENIED")
		deny(c)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	select {
	case <-prev:
	case <-ctx.Done():
		_ = c.Close()
		return
	}
	select {
	case t.conns <- c:
	case <-ctx.Done():
		_ = c.Close()
	}
}

// acceptUDP takes n UDP streams from the client's address.
func (t *test) acceptUDP(ctx context.Context, udp UDPAcceptor, n int) {
	defer t.wg.Done()
	for got := 0; got < n; {
		c, first, err := udp.AcceptUDP(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.log.Warn().Err(err).Msg("iperf3: UDP accept failed")
			}
			return
		}
		peer := addrPort(c.RemoteAddr())
		if peer.Addr() != t.remote.Addr() || !IsUDPConnectMsg(first) {
			t.log.Debug().Str("from", peer.String()).Int("len", len(first)).Msg("iperf3: ignoring foreign UDP datagram")
			_ = c.Close()
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(udpConnectReplyBytes); err != nil {
			_ = c.Close()
			continue
		}
		_ = c.SetWriteDeadline(time.Time{})
		select {
		case t.conns <- c:
			got++
		case <-ctx.Done():
			_ = c.Close()
			return
		}
	}
}

// readControl delivers control states until TEST_END, CLIENT_TERMINATE or
// an error.
func (t *test) readControl(out chan<- ctrlMsg) {
	defer t.wg.Done()
	for {
		st, err := readState(t.ctrl)
		select {
		case out <- ctrlMsg{state: st, err: err}:
		case <-t.quit:
			return
		}
		if err != nil || st == TestEnd || st == ClientTerminate {
			return
		}
	}
}

// applySockopts applies the client's socket options to a stream.
func (t *test) applySockopts(st *stream) error {
	p := t.params
	if p.Window > 0 {
		if b, ok := st.conn.(interface {
			SetReadBuffer(int) error
			SetWriteBuffer(int) error
		}); ok {
			if err := b.SetReadBuffer(p.Window); err != nil {
				return fmt.Errorf("set receive buffer %d: %w", p.Window, err)
			}
			if err := b.SetWriteBuffer(p.Window); err != nil {
				return fmt.Errorf("set send buffer %d: %w", p.Window, err)
			}
		}
	}
	if p.UDP {
		if p.Window == 0 && !st.sender {
			setUDPRecvBuffer(st.conn)
		}
		if p.FQRate > 0 && st.sender {
			if err := setPacingRate(st.conn, p.FQRate/8); err != nil {
				t.log.Debug().Err(err).Msg("iperf3: fq pacing not applied")
			}
		}
		return nil
	}
	if tc, ok := st.conn.(*net.TCPConn); ok && p.NoDelay {
		if err := tc.SetNoDelay(true); err != nil {
			return fmt.Errorf("set TCP_NODELAY: %w", err)
		}
	}
	if p.MSS > 0 {
		if err := setMSS(st.conn, p.MSS); err != nil {
			t.log.Debug().Err(err).Msg("iperf3: MSS not applied")
		}
	}
	if p.Congestion != "" {
		if err := setCongestion(st.conn, p.Congestion); err != nil {
			t.log.Warn().Err(err).Msg("iperf3: TCP congestion control algorithm not supported")
		}
	}
	if p.FQRate > 0 && st.sender {
		if err := setPacingRate(st.conn, p.FQRate/8); err != nil {
			t.log.Debug().Err(err).Msg("iperf3: fq pacing not applied")
		}
	}
	if name, err := congestion(st.conn); err == nil {
		t.congestionUsed = name
	}
	return nil
}

// fillResult copies the streams' final counters into the test's result.
func (t *test) fillResult(d time.Duration) {
	res := t.res
	res.Duration = d
	res.PerStream = res.PerStream[:0]
	res.BytesSent, res.BytesReceived, res.Retransmits = 0, 0, 0
	for _, st := range t.set.streams {
		r := st.results()
		ss := StreamStats{ID: st.id, Sender: st.sender, Bytes: int64(r.Bytes), Seconds: r.EndTime, Retransmits: r.Retransmits}
		if st.udp {
			ss.Packets = r.Packets - r.OmittedPackets
		}
		if st.udp && !st.sender {
			ss.Lost, ss.OutOfOrder, ss.Jitter = r.Errors-r.OmittedErrors, st.endOOO, r.Jitter
		}
		if st.sender {
			res.BytesSent += ss.Bytes
			if ss.Retransmits > 0 {
				res.Retransmits += ss.Retransmits
			}
		} else {
			res.BytesReceived += ss.Bytes
		}
		res.PerStream = append(res.PerStream, ss)
	}
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
