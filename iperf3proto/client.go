package iperf3proto

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetparamedic/reflector/internal/buildinfo"
)

// Dialer opens the client's connections: the control connection and each
// TCP stream through DialTCP, each UDP stream through DialUDP. Tunneled
// modes supply their own.
type Dialer interface {
	DialTCP(ctx context.Context) (net.Conn, error)
	DialUDP(ctx context.Context) (net.Conn, error)
}

// NetDialer dials Address ("host:port") directly.
type NetDialer struct {
	Address string
	// Dialer carries options such as LocalAddr; the zero value is fine.
	Dialer net.Dialer
}

var _ Dialer = (*NetDialer)(nil)

// DialTCP implements Dialer.
func (d *NetDialer) DialTCP(ctx context.Context) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, "tcp", d.Address)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", d.Address, err)
	}
	return c, nil
}

// DialUDP implements Dialer.
func (d *NetDialer) DialUDP(ctx context.Context) (net.Conn, error) {
	u := d.Dialer
	if a, ok := u.LocalAddr.(*net.TCPAddr); ok {
		u.LocalAddr = &net.UDPAddr{IP: a.IP, Zone: a.Zone}
	}
	c, err := u.DialContext(ctx, "udp", d.Address)
	if err != nil {
		return nil, fmt.Errorf("dial udp %s: %w", d.Address, err)
	}
	return c, nil
}

// ClientConfig describes the test the client asks for; the fields map to
// iperf3 client flags.
type ClientConfig struct {
	UDP              bool          // -u
	Duration         time.Duration // -t (default 10s unless Bytes or Blocks is set)
	Bytes            int64         // -n
	Blocks           int64         // -k
	BlockLen         int           // -l (default 128 KiB TCP, 1460 UDP)
	Parallel         int           // -P (default 1)
	Reverse          bool          // -R
	Bidir            bool          // --bidir
	Bandwidth        uint64        // -b, bits/s per stream, 0 unlimited
	Omit             time.Duration // -O, whole seconds
	Window           int           // -w
	MSS              int           // -M
	NoDelay          bool          // -N
	Congestion       string        // -C
	ZeroCopy         bool          // -Z
	RepeatingPayload bool          // --repeating-payload
	GetServerOutput  bool          // --get-server-output
	UDP64            bool          // --udp-counters-64bit
	Title            string        // -T
	// Interval is the progress report period (default 1s).
	Interval time.Duration
	// HandshakeTimeout bounds each setup step (default 10s).
	HandshakeTimeout time.Duration
}

// Interval is one progress report.
type Interval struct {
	Start, End    time.Duration // since the test started
	BytesSent     int64         // this interval, all streams
	BytesReceived int64
	Omitted       bool
}

// CPUUtil is a CPU utilisation report in percent of one CPU.
type CPUUtil struct{ Total, User, System float64 }

// DirectionResult summarises one direction of a test.
type DirectionResult struct {
	Streams         int
	SentBytes       int64   // counted by the sender, after omit
	ReceivedBytes   int64   // counted by the receiver, after omit
	SenderSeconds   float64 // sender's measured time
	ReceiverSeconds float64
	Retransmits     int64 // -1 when the sender cannot tell
	// UDP receiver statistics (summed over streams; jitter averaged)
	Packets    int64
	Lost       int64
	OutOfOrder int64
	Jitter     float64 // seconds
}

// ReceiverBitsPerSecond is the received throughput.
func (d *DirectionResult) ReceiverBitsPerSecond() float64 {
	if d.ReceiverSeconds <= 0 {
		return 0
	}
	return float64(d.ReceivedBytes) * 8 / d.ReceiverSeconds
}

// ClientResult is what RunClient measured and received.
type ClientResult struct {
	Params   Params
	Duration time.Duration
	// Upload is client -> server (nil in reverse mode); Download is
	// server -> client (reverse or bidir).
	Upload, Download     *DirectionResult
	LocalCPU, RemoteCPU  CPUUtil
	CongestionUsed       string // the server's
	Server               Results
	ServerOutputText     string
	ServerOutputJSON     json.RawMessage
	SenderHasRetransmits bool
}

// newCookie returns 36 random characters and a NUL, like iperf3's cookie.
func newCookie() ([CookieSize]byte, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var c [CookieSize]byte
	if _, err := rand.Read(c[:CookieSize-1]); err != nil {
		return c, fmt.Errorf("cookie: %w", err)
	}
	for i := 0; i < CookieSize-1; i++ {
		c[i] = alphabet[c[i]%32]
	}
	c[CookieSize-1] = 0
	return c, nil
}

// params turns the config into the parameter JSON values.
func (cfg ClientConfig) params() Params {
	p := Params{
		TCP: !cfg.UDP, UDP: cfg.UDP, Omit: int(cfg.Omit / time.Second),
		Bytes: cfg.Bytes, Blocks: cfg.Blocks, MSS: cfg.MSS, NoDelay: cfg.NoDelay,
		Parallel: max(cfg.Parallel, 1), Reverse: cfg.Reverse, Bidirectional: cfg.Bidir,
		Window: cfg.Window, Len: cfg.BlockLen, Bandwidth: cfg.Bandwidth, Title: cfg.Title,
		Congestion: cfg.Congestion, GetServerOutput: cfg.GetServerOutput,
		UDPCounters64Bit: cfg.UDP64, RepeatingPayload: cfg.RepeatingPayload, ZeroCopy: cfg.ZeroCopy,
		PacingTimer: 1000, ClientVersion: "reflector " + buildinfo.Version,
	}
	if p.Len == 0 {
		p.Len = p.BlockLen()
	}
	if cfg.Bytes == 0 && cfg.Blocks == 0 {
		d := cfg.Duration
		if d <= 0 {
			d = 10 * time.Second
		}
		p.Time = int((d + time.Second - 1) / time.Second)
	}
	return p
}

// client is one client test run.
type client struct {
	cfg    ClientConfig
	p      Params
	d      Dialer
	ctrl   net.Conn
	cookie [CookieSize]byte
	set    *streamSet
	sent   atomic.Int64
	recv   atomic.Int64
	cong   string
}

// RunClient runs one test against an iperf3 server reached through d and
// calls progress (when non-nil) once per interval. It returns when the test
// is over, with every connection closed.
func RunClient(ctx context.Context, d Dialer, cfg ClientConfig, progress func(Interval)) (*ClientResult, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	c := &client{cfg: cfg, p: cfg.params(), d: d}
	c.set = newStreamSet(c.p, &c.sent, &c.recv, 0)
	if err := c.p.Validate(); err != nil {
		return nil, fmt.Errorf("iperf3 client: %w", err)
	}
	var err error
	if c.cookie, err = newCookie(); err != nil {
		return nil, err
	}
	ctrl, err := d.DialTCP(ctx)
	if err != nil {
		return nil, fmt.Errorf("iperf3 client: control connection: %w", err)
	}
	c.ctrl = ctrl
	stopCtx := context.AfterFunc(ctx, func() { _ = ctrl.SetDeadline(time.Unix(1, 0)) })
	defer stopCtx()
	defer c.close()
	res, err := c.run(ctx, progress)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return res, err
}

// close stops workers and closes every connection.
func (c *client) close() {
	_ = c.ctrl.Close()
	c.set.close()
}

// readState reads one state, turning the server's error states into errors.
func (c *client) readState() (State, error) {
	st, err := readState(c.ctrl)
	if err != nil {
		return 0, fmt.Errorf("iperf3 client: %w", err)
	}
	return st, c.stateError(st)
}

// stateError turns error states into errors (reading SERVER_ERROR's codes).
func (c *client) stateError(st State) error {
	switch st {
	case AccessDenied:
		return ErrAccessDeniedByServer
	case ServerTerminate:
		return ErrServerTerminated
	case ServerError:
		var b [8]byte
		if _, err := io.ReadFull(c.ctrl, b[:]); err != nil {
			return fmt.Errorf("iperf3 client: read server error: %w", err)
		}
		return &ProtocolError{Code: ErrorCode(int32(be32(b[0:]))), Errno: int32(be32(b[4:]))}
	}
	return nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (c *client) deadline() { _ = c.ctrl.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout)) }

func (c *client) run(ctx context.Context, progress func(Interval)) (*ClientResult, error) {
	c.deadline()
	if _, err := c.ctrl.Write(c.cookie[:]); err != nil {
		return nil, fmt.Errorf("iperf3 client: send cookie: %w", err)
	}
	// Setup: PARAM_EXCHANGE, CREATE_STREAMS, TEST_START, TEST_RUNNING.
	for running := false; !running; {
		st, err := c.readState()
		if err != nil {
			return nil, err
		}
		switch st {
		case ParamExchange:
			b, err := c.p.Marshal()
			if err == nil {
				err = writeMessage(c.ctrl, b)
			}
			if err != nil {
				return nil, fmt.Errorf("iperf3 client: send params: %w", err)
			}
		case CreateStreams:
			if err := c.createStreams(ctx); err != nil {
				return nil, err
			}
		case TestStart:
		case TestRunning:
			running = true
		default:
			return nil, fmt.Errorf("iperf3 client: state %v during setup: %w", st, ErrBadState)
		}
		c.deadline()
	}
	if len(c.set.streams) != c.p.Streams() {
		return nil, fmt.Errorf("iperf3 client: test started with %d of %d streams: %w", len(c.set.streams), c.p.Streams(), ErrBadState)
	}
	if err := c.set.preparePayload(); err != nil {
		return nil, fmt.Errorf("iperf3 client: %w", err)
	}
	_ = c.ctrl.SetDeadline(time.Time{})
	cpu := startCPU()
	start := time.Now()
	c.set.begin(start)
	c.set.startWorkers(false)
	c.set.startWorkers(true)
	msgs := make(chan ctrlMsg, 2)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		st, err := readState(c.ctrl)
		msgs <- ctrlMsg{state: st, err: err}
	}()
	// On an early return the reader may still wait for a state the server
	// will never send: unblock it before waiting for it.
	defer func() {
		_ = c.ctrl.SetReadDeadline(time.Unix(1, 0))
		rwg.Wait()
	}()

	measureStart, err := c.runLoop(ctx, start, msgs, progress)
	if err != nil {
		return nil, err
	}
	// TEST_END and the results exchange.
	retrans := c.senderHasRetransmits() == 1
	c.set.end(retrans)
	for _, st := range c.set.streams {
		if st.sender && st.sendErr != nil && st.bytes.Load() == 0 {
			return nil, fmt.Errorf("iperf3 client: nothing was sent: %w", st.sendErr)
		}
	}
	duration := time.Since(measureStart)
	total, user, sys := cpu.percent()
	c.deadline()
	if err := writeState(c.ctrl, TestEnd); err != nil {
		return nil, fmt.Errorf("iperf3 client: %w", err)
	}
	m := <-msgs
	if m.err != nil {
		return nil, fmt.Errorf("iperf3 client: waiting for EXCHANGE_RESULTS: %w", m.err)
	}
	if err := c.stateError(m.state); err != nil {
		return nil, err
	}
	if m.state != ExchangeResults {
		return nil, fmt.Errorf("iperf3 client: state %v instead of EXCHANGE_RESULTS: %w", m.state, ErrBadState)
	}
	ours := Results{CPUUtilTotal: total, CPUUtilUser: user, CPUUtilSystem: sys, SenderHasRetransmits: c.senderHasRetransmits(),
		CongestionUsed: c.cong, Streams: c.set.results()}
	b, err := ours.Marshal()
	if err == nil {
		err = writeMessage(c.ctrl, b)
	}
	if err != nil {
		return nil, fmt.Errorf("iperf3 client: send results: %w", err)
	}
	b, err = readMessage(c.ctrl, MaxResultsSize)
	if err != nil {
		return nil, fmt.Errorf("iperf3 client: read server results: %w", err)
	}
	srv, err := ParseResults(b, MaxResultsSize)
	if err != nil {
		return nil, fmt.Errorf("iperf3 client: %w", err)
	}
	st, err := c.readState()
	if err != nil {
		return nil, err
	}
	if st != DisplayResults {
		return nil, fmt.Errorf("iperf3 client: state %v instead of DISPLAY_RESULTS: %w", st, ErrBadState)
	}
	if err := writeState(c.ctrl, IperfDone); err != nil {
		return nil, fmt.Errorf("iperf3 client: %w", err)
	}
	return c.summarise(srv, duration, CPUUtil{total, user, sys}), nil
}

// runLoop waits for the end condition, reporting progress; it returns the
// start of the measured (non-omitted) period.
func (c *client) runLoop(ctx context.Context, start time.Time, msgs <-chan ctrlMsg, progress func(Interval)) (time.Time, error) {
	p := c.p
	measureStart := start
	omitEnd := start.Add(time.Duration(p.Omit) * time.Second)
	omitting := p.Omit > 0
	var endC <-chan time.Time
	if p.Time > 0 {
		end := time.NewTimer(time.Duration(p.Time+p.Omit) * time.Second)
		defer end.Stop()
		endC = end.C
	}
	var omitC <-chan time.Time
	if omitting {
		ot := time.NewTimer(time.Duration(p.Omit) * time.Second)
		defer ot.Stop()
		omitC = ot.C
	}
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	last, lastSent, lastRecv := start, int64(0), int64(0)
	report := func(now time.Time) {
		s, r := c.sent.Load(), c.recv.Load()
		if progress != nil {
			progress(Interval{Start: last.Sub(start), End: now.Sub(start), BytesSent: s - lastSent, BytesReceived: r - lastRecv, Omitted: now.Before(omitEnd)})
		}
		last, lastSent, lastRecv = now, s, r
	}
	bw := budgetWatch{budget: p.byteBudget(), idle: peerStopIdle(p)}
	for {
		select {
		case <-ctx.Done():
			return start, fmt.Errorf("iperf3 client: %w", ctx.Err())
		case m := <-msgs:
			if m.err != nil {
				return start, fmt.Errorf("iperf3 client: control connection while running: %w", m.err)
			}
			if err := c.stateError(m.state); err != nil {
				return start, err
			}
			return start, fmt.Errorf("iperf3 client: state %v while running: %w", m.state, ErrBadState)
		case now := <-omitC:
			omitting = false
			measureStart = now
			bw.restart(c, now)
			c.set.markOmitEnd(now, c.senderHasRetransmits() == 1)
		case now := <-tick.C:
			report(now)
		case <-endC:
			report(time.Now())
			return measureStart, nil
		case now := <-poll.C:
			if !omitting && bw.done(c, now) {
				report(now)
				return measureStart, nil
			}
		}
	}
}

// budgetWatch decides when a -n/-k test has reached its byte budget.
type budgetWatch struct {
	budget             int64         // 0: not a -n/-k test
	idle               time.Duration // see peerStopIdle
	sentBase, recvBase int64         // the counters when omitting ended
	lastRecv           int64
	lastMove           time.Time
}

// restart counts from now on (the omit period ended).
func (w *budgetWatch) restart(c *client, now time.Time) {
	w.sentBase, w.recvBase, w.lastRecv, w.lastMove = c.sent.Load(), c.recv.Load(), 0, now
}

// done reports whether this end sent or received the budget since
// omitting ended, or its senders stopped at it. A client that only
// receives (-R) also ends once nothing has arrived for w.idle: the
// server's senders stop at the budget counted from the server's own omit
// end, which under load fires apart from ours, so the bytes we count may
// never reach the budget.
func (w *budgetWatch) done(c *client, now time.Time) bool {
	if w.budget == 0 {
		return false
	}
	sent, recv := c.sent.Load()-w.sentBase, c.recv.Load()-w.recvBase
	if sent >= w.budget || recv >= w.budget || c.set.sendersDone() {
		return true
	}
	if recv != w.lastRecv || w.lastMove.IsZero() {
		w.lastRecv, w.lastMove = recv, now
		return false
	}
	return !c.set.hasSender() && recv > 0 && now.Sub(w.lastMove) >= w.idle
}

// peerStopIdle is how long a receive-only -n/-k client waits without data
// before it takes the server's senders as stopped: 2 s, or four blocks'
// time at a paced rate so slow that a block takes longer.
func peerStopIdle(p Params) time.Duration {
	idle := 2 * time.Second
	if p.Bandwidth > 0 {
		idle = max(idle, time.Duration(4*float64(p.BlockLen())*8/float64(p.Bandwidth)*float64(time.Second)))
	}
	return idle
}

// senderHasRetransmits mirrors what the reference client reports.
func (c *client) senderHasRetransmits() int {
	if c.p.Reverse {
		return -1
	}
	if !c.p.UDP && hasTCPRetransmits {
		return 1
	}
	return 0
}

// createStreams opens the data connections: senders first, then receivers
// (--bidir), as the reference client does.
func (c *client) createStreams(ctx context.Context) error {
	n := max(c.p.Parallel, 1)
	var roles []bool
	switch {
	case c.p.Bidirectional:
		for i := 0; i < 2*n; i++ {
			roles = append(roles, i < n)
		}
	default:
		for i := 0; i < n; i++ {
			roles = append(roles, !c.p.Reverse)
		}
	}
	for _, sender := range roles {
		conn, err := c.openStream(ctx)
		if err != nil {
			return err
		}
		c.applySockopts(c.set.add(conn, sender))
	}
	return nil
}

// openStream dials one stream and performs its handshake.
func (c *client) openStream(ctx context.Context) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	if !c.p.UDP {
		conn, err := c.d.DialTCP(hctx)
		if err != nil {
			return nil, fmt.Errorf("iperf3 client: stream: %w", err)
		}
		if _, err := conn.Write(c.cookie[:]); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("iperf3 client: stream cookie: %w", err)
		}
		return conn, nil
	}
	conn, err := c.d.DialUDP(hctx)
	if err != nil {
		return nil, fmt.Errorf("iperf3 client: udp stream: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	if _, err := conn.Write(udpConnectMsgBytes); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("iperf3 client: udp connect: %w", err)
	}
	buf := make([]byte, 64<<10)
	for tries := 0; tries < 3; tries++ {
		n, err := conn.Read(buf)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("iperf3 client: udp connect reply: %w", err)
		}
		if IsUDPConnectReply(buf[:n]) {
			_ = conn.SetDeadline(time.Time{})
			return conn, nil
		}
	}
	_ = conn.Close()
	return nil, fmt.Errorf("iperf3 client: udp connect: no valid reply: %w", ErrBadState)
}

// applySockopts applies the client's own socket options (best effort, as
// the reference client warns and continues on some).
func (c *client) applySockopts(st *stream) {
	p := c.p
	if p.Window > 0 {
		if b, ok := st.conn.(interface {
			SetReadBuffer(int) error
			SetWriteBuffer(int) error
		}); ok {
			_ = b.SetReadBuffer(p.Window)
			_ = b.SetWriteBuffer(p.Window)
		}
	}
	if p.UDP {
		if p.Window == 0 && !st.sender {
			setUDPRecvBuffer(st.conn)
		}
		return
	}
	if tc, ok := st.conn.(*net.TCPConn); ok && p.NoDelay {
		_ = tc.SetNoDelay(true)
	}
	if p.MSS > 0 {
		_ = setMSS(st.conn, p.MSS)
	}
	if p.Congestion != "" {
		_ = setCongestion(st.conn, p.Congestion)
	}
	if name, err := congestion(st.conn); err == nil {
		c.cong = name
	}
}

// summarise combines both sides' results.
func (c *client) summarise(srv Results, d time.Duration, cpu CPUUtil) *ClientResult {
	res := &ClientResult{
		Params: c.p, Duration: d, LocalCPU: cpu, Server: srv,
		RemoteCPU:        CPUUtil{srv.CPUUtilTotal, srv.CPUUtilUser, srv.CPUUtilSystem},
		CongestionUsed:   srv.CongestionUsed,
		ServerOutputText: srv.ServerOutputText, ServerOutputJSON: srv.ServerOutputJSON,
		SenderHasRetransmits: c.senderHasRetransmits() == 1 ||
			(c.p.Reverse && srv.SenderHasRetransmits == 1),
	}
	remote := map[int]StreamResults{}
	for _, s := range srv.Streams {
		remote[s.ID] = s
	}
	dir := func(up bool) *DirectionResult {
		if up {
			if res.Upload == nil {
				res.Upload = &DirectionResult{}
			}
			return res.Upload
		}
		if res.Download == nil {
			res.Download = &DirectionResult{}
		}
		return res.Download
	}
	var jitterN = map[*DirectionResult]int{}
	for _, st := range c.set.streams {
		local := st.results()
		rs := remote[st.id]
		dr := dir(st.sender)
		dr.Streams++
		snd, rcv := local, rs
		if !st.sender {
			snd, rcv = rs, local
		}
		dr.SentBytes += int64(snd.Bytes)
		dr.ReceivedBytes += int64(rcv.Bytes)
		dr.SenderSeconds = max(dr.SenderSeconds, snd.EndTime-snd.StartTime)
		dr.ReceiverSeconds = max(dr.ReceiverSeconds, rcv.EndTime-rcv.StartTime)
		if snd.Retransmits >= 0 {
			dr.Retransmits += snd.Retransmits
		} else if dr.Retransmits == 0 {
			dr.Retransmits = -1
		}
		if c.p.UDP {
			dr.Packets += snd.Packets - snd.OmittedPackets
			dr.Lost += rcv.Errors - rcv.OmittedErrors
			if !st.sender {
				dr.OutOfOrder += st.endOOO
			}
			dr.Jitter += rcv.Jitter
			jitterN[dr]++
		}
	}
	for dr, n := range jitterN {
		dr.Jitter /= float64(n)
	}
	return res
}
