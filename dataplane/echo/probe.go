package echo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/internal/finesleep"
)

// Probe limits and defaults.
const (
	// MaxProbeSize is the largest probe: the largest IPv4 UDP payload.
	MaxProbeSize = 65507
	// MaxProbeRate is the highest pacing rate Probe accepts, in pps.
	MaxProbeRate = 10_000_000
	// DefaultProbeTimeout is how long Probe waits for late replies when
	// ProbeConfig.Timeout is 0.
	DefaultProbeTimeout = time.Second
	// ProgressInterval is how often Probe reports a ProbeInterval.
	ProgressInterval = time.Second

	// maxExactSamples bounds the RTT samples kept when the run's length is
	// known; longer or open-ended runs keep a reservoir of reservoirSize.
	maxExactSamples = 1 << 20
	reservoirSize   = 1 << 16
	// maxSeenBits bounds the duplicate-detection window.
	maxSeenBits = 1 << 24
	// openSeenBits is the window of an open-ended run.
	openSeenBits = 1 << 20
	// maxRecvErrors is how many consecutive failed reads the receiver
	// tolerates.
	maxRecvErrors = 100
	// coarseWait is the part of a pacing wait left to the pacer: a Go
	// timer oversleeps by up to 1 ms, and the pacer's sleep cannot be
	// cancelled, so it never sleeps more than twice this.
	coarseWait = time.Millisecond
)

// ProbeConfig describes one probing run. The run ends after Count probes or
// Duration, whichever comes first; with neither it runs until ctx is done.
type ProbeConfig struct {
	// Rate is the pacing rate in probes per second (1..MaxProbeRate).
	Rate int
	// Size is the datagram size in bytes, HeaderLen..MaxProbeSize.
	Size int
	// Count is the number of probes; 0 means no limit.
	Count int
	// Duration bounds the sending time; 0 means no limit.
	Duration time.Duration
	// Timestamped expects the server to stamp probes (Config.Timestamped).
	// Without it every reply must be bit-identical to the probe; with it
	// the server's flag and time fields may differ, nothing else.
	Timestamped bool
	// Timeout is how long to wait for late replies after the last probe;
	// 0 means DefaultProbeTimeout.
	Timeout time.Duration
	// Spin, when positive, is how long after each send the prober polls
	// for the reply without sleeping (never past the next probe's send
	// time; Linux sockets only, at most MaxProbeSpin). Waking a sleeping
	// thread costs tens of microseconds on a virtual machine, inside every
	// round trip; spinning trades up to Spin of CPU per probe for that,
	// as sockperf's ping-pong client does (it spins all the time). 0, the
	// default, sleeps.
	Spin time.Duration
}

// MaxProbeSpin bounds ProbeConfig.Spin.
const MaxProbeSpin = time.Millisecond

// ProbeInterval is a progress report covering [Start, End) of the run.
type ProbeInterval struct {
	// Start and End are offsets from the start of the run.
	Start, End time.Duration
	// Sent and Received count probes sent and intact replies received in
	// the interval.
	Sent, Received uint64
	// RTTMin, RTTAvg and RTTMax cover the replies of the interval.
	RTTMin, RTTAvg, RTTMax time.Duration
}

// ProbeResult summarizes a run.
type ProbeResult struct {
	// Sent counts probes sent; Received counts distinct intact replies;
	// Lost = Sent - Received (a corrupted reply counts as lost).
	Sent, Received, Lost uint64
	// Duplicates counts extra intact replies to an already answered
	// probe; Reordered counts replies arriving after a later probe's.
	Duplicates, Reordered uint64
	// RTT statistics over intact replies. Percentiles are exact for runs
	// of up to 2^20 probes and estimated from a uniform sample beyond.
	RTTMin, RTTAvg, RTTP50, RTTP90, RTTP99, RTTMax time.Duration
	// JitterRFC3550 is the RFC 3550 interarrival jitter of the RTTs.
	JitterRFC3550 time.Duration
	// ServerTime is the average time between the server's receive and
	// send stamps (timestamped runs only).
	ServerTime time.Duration
	// Corrupt counts replies that differ from every probe sent: wrong
	// size, header, sequence number, send time or padding.
	Corrupt uint64
	// Elapsed is the run's wall time including the wait for late replies.
	Elapsed time.Duration
}

// Probe runs cfg over conn, a connected datagram socket to an echo server,
// and returns the result. If conn has SetReadBuffer/SetWriteBuffer (as
// *net.UDPConn does) they are raised to SocketBuffer. Where it cannot run
// on conn's descriptor (a syscall.Conn on Linux, see DialUDP) Probe uses
// conn's read deadline to stop its receiver and clears it before
// returning. It does not close conn. progress, if not nil, is called about every
// ProgressInterval from a goroutine of its own, never concurrently with
// itself. When ctx ends the run early, Probe returns what it measured so
// far together with ctx's error.
func Probe(ctx context.Context, conn net.Conn, cfg ProbeConfig, progress func(ProbeInterval)) (*ProbeResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultProbeTimeout
	}
	if s, ok := conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = s.SetReadBuffer(SocketBuffer) // best effort: the kernel may cap it
	}
	if s, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		_ = s.SetWriteBuffer(SocketBuffer)
	}
	loop := newThreadLoop(conn)
	if loop == nil {
		if err := conn.SetReadDeadline(time.Time{}); err != nil {
			return nil, fmt.Errorf("probe: clear read deadline: %w", err)
		}
	}

	p := newProber(cfg)
	recvDone := make(chan error, 1)
	var sendDone chan error
	if loop != nil {
		defer loop.close()
		sendDone = make(chan error, 1)
		go func() { recvDone <- loop.run(ctx, p, sendDone) }()
	} else {
		go func() { recvDone <- p.receive(conn) }()
	}
	progDone := make(chan struct{})
	progStop := make(chan struct{})
	go func() {
		defer close(progDone)
		p.report(progress, progStop)
	}()

	var sendErr error
	if loop != nil {
		sendErr = <-sendDone
	} else {
		sendErr = p.send(ctx, conn)
	}

	// Wait for the last replies, then stop the receiver.
	p.mu.Lock()
	p.sendDone = true
	waitLate := sendErr == nil && ctx.Err() == nil && p.received < p.sent.Load()
	p.mu.Unlock()
	if waitLate {
		t := time.NewTimer(timeout)
		select {
		case <-p.allIn:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	p.stopping.Store(true)
	var deadlineErr error
	if loop != nil {
		loop.wake()
	} else {
		deadlineErr = conn.SetReadDeadline(time.Now())
	}
	recvErr := <-recvDone
	close(progStop)
	<-progDone
	if loop == nil {
		if err := conn.SetReadDeadline(time.Time{}); err != nil && deadlineErr == nil {
			deadlineErr = err
		}
	}
	res := p.result()
	switch {
	case sendErr != nil:
		return res, sendErr
	case recvErr != nil:
		return res, recvErr
	case deadlineErr != nil:
		return res, fmt.Errorf("probe: read deadline: %w", deadlineErr)
	case ctx.Err() != nil:
		return res, ctx.Err()
	}
	return res, nil
}

func (c ProbeConfig) validate() error {
	switch {
	case c.Rate < 1 || c.Rate > MaxProbeRate:
		return fmt.Errorf("probe: %w: rate %d pps not in 1..%d", ErrConfig, c.Rate, MaxProbeRate)
	case c.Size < HeaderLen || c.Size > MaxProbeSize:
		return fmt.Errorf("probe: %w: size %d not in %d..%d", ErrConfig, c.Size, HeaderLen, MaxProbeSize)
	case c.Count < 0 || c.Duration < 0 || c.Timeout < 0:
		return fmt.Errorf("probe: %w: negative count, duration or timeout", ErrConfig)
	}
	return nil
}

// expected returns the number of probes the run will send, or 0 if open.
func (c ProbeConfig) expected() uint64 {
	var n uint64
	if c.Duration > 0 {
		n = uint64(math.Ceil(c.Duration.Seconds()*float64(c.Rate))) + 1
	}
	if c.Count > 0 && (n == 0 || uint64(c.Count) < n) {
		n = uint64(c.Count)
	}
	return n
}

// prober is the state of one run. The sender owns its buffer and sent; the
// receiver owns the rest, under mu because report and Probe read it too.
type prober struct {
	cfg   ProbeConfig
	start time.Time
	sent  atomic.Uint64

	stopping atomic.Bool
	allIn    chan struct{}

	mu       sync.Mutex
	sendDone bool
	closedIn bool

	received, dups, reordered, corrupt uint64
	haveMax                            bool
	maxSeq                             uint64
	seen                               seenSet

	rttMin, rttMax time.Duration
	rttSum         float64
	samples        []time.Duration
	sampleCap      int
	reservoir      *rand.Rand
	jitter         float64
	prevRTT        time.Duration
	havePrev       bool
	serverSum      float64
	serverN        uint64

	iv ivStats
}

// ivStats accumulates one progress interval.
type ivStats struct {
	received uint64
	min, max time.Duration
	sum      time.Duration
	sentMark uint64
}

func newProber(cfg ProbeConfig) *prober {
	p := &prober{cfg: cfg, allIn: make(chan struct{})}
	exp := cfg.expected()
	bits := uint64(openSeenBits)
	if exp > 0 {
		bits = min(exp, maxSeenBits)
	}
	p.seen.init(bits)
	if exp > 0 && exp <= maxExactSamples {
		p.sampleCap = int(exp)
	} else {
		p.sampleCap = reservoirSize
		p.reservoir = rand.New(rand.NewPCG(1, 2))
	}
	p.start = time.Now()
	return p
}

// due returns the scheduled send offset of probe i: an absolute schedule,
// so pacing errors never accumulate.
func (p *prober) due(i uint64) time.Duration {
	r := uint64(p.cfg.Rate)
	return time.Duration(i/r)*time.Second + time.Duration(i%r*uint64(time.Second)/r)
}

// scheduleEnds reports whether the run ends before probe seq (Count or
// Duration reached).
func (p *prober) scheduleEnds(seq uint64) bool {
	return p.cfg.Count > 0 && seq >= uint64(p.cfg.Count) || p.cfg.Duration > 0 && p.due(seq) >= p.cfg.Duration
}

func (p *prober) send(ctx context.Context, conn net.Conn) error {
	buf := make([]byte, p.cfg.Size)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	done := ctx.Done()
	pace := finesleep.New()
	defer pace.Stop()
	for seq := uint64(0); ; seq++ {
		if p.scheduleEnds(seq) {
			return nil
		}
		if !p.waitUntil(p.due(seq), pace, timer, done) {
			return nil
		}
		h := Header{Seq: seq, ClientSend: int64(time.Since(p.start))}
		if err := h.Encode(buf); err != nil {
			return err
		}
		fillPadding(buf[HeaderLen:], seq, h.ClientSend)
		p.sent.Store(seq + 1)
		if _, err := conn.Write(buf); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("probe: send %d: %w", seq, err)
		}
	}
}

// waitUntil blocks until offset due of the run and reports true, or
// reports false as soon as done is closed. Waits longer than coarseWait
// sleep on timer until about coarseWait before due, so cancellation stays
// prompt; the rest is slept by pace (finesleep), which, unlike a Go timer,
// keeps sub-millisecond gaps.
func (p *prober) waitUntil(due time.Duration, pace *finesleep.Sleeper, timer *time.Timer, done <-chan struct{}) bool {
	for {
		select {
		case <-done:
			return false
		default:
		}
		wait := due - time.Since(p.start)
		switch {
		case wait <= 0:
			return true
		case wait > 2*coarseWait:
			timer.Reset(wait - coarseWait)
			select {
			case <-done:
				return false
			case <-timer.C:
			}
		default:
			pace.Sleep(wait)
		}
	}
}

func (p *prober) receive(conn net.Conn) error {
	buf := make([]byte, p.cfg.Size+1) // one extra byte exposes oversized replies
	failures := 0
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if p.stopping.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("probe: receive: %w", err)
			}
			// Typically ECONNREFUSED while the server is down: every
			// probe shows as lost until too many reads in a row fail.
			if failures++; failures > maxRecvErrors {
				return fmt.Errorf("probe: receive: %w", err)
			}
			continue
		}
		failures = 0
		p.handle(buf[:n], time.Since(p.start))
	}
}

// since returns the time since the run began.
func (p *prober) since() time.Duration { return time.Since(p.start) }

// handle verifies one reply and accounts for it.
func (p *prober) handle(b []byte, now time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.verify(b, now)
	if !ok {
		p.corrupt++
		return
	}
	if p.seen.add(h.Seq) {
		p.dups++
		return
	}
	if p.haveMax && h.Seq < p.maxSeq {
		p.reordered++
	} else {
		p.haveMax, p.maxSeq = true, h.Seq
	}
	rtt := now - time.Duration(h.ClientSend)
	p.received++
	p.addRTT(rtt)
	if p.cfg.Timestamped {
		if st := h.ServerTx - h.ServerRx; st >= 0 {
			p.serverSum += float64(st)
			p.serverN++
		}
	}
	if p.sendDone && !p.closedIn && p.received >= p.sent.Load() {
		p.closedIn = true
		close(p.allIn)
	}
}

// verify checks that b is exactly a probe this run sent (modulo the
// server's fields in timestamped mode).
func (p *prober) verify(b []byte, now time.Duration) (Header, bool) {
	if len(b) != p.cfg.Size {
		return Header{}, false
	}
	h, err := ParseHeader(b)
	if err != nil || h.Seq >= p.sent.Load() || h.ClientSend < 0 || h.ClientSend > int64(now) {
		return Header{}, false
	}
	if p.cfg.Timestamped {
		if h.Flags != FlagStamped {
			return Header{}, false
		}
	} else if h.Flags != 0 || h.ServerRx != 0 || h.ServerTx != 0 {
		return Header{}, false
	}
	return h, checkPadding(b[HeaderLen:], h.Seq, h.ClientSend)
}

func (p *prober) addRTT(rtt time.Duration) {
	if p.received == 1 || rtt < p.rttMin {
		p.rttMin = rtt
	}
	if rtt > p.rttMax {
		p.rttMax = rtt
	}
	p.rttSum += float64(rtt)
	switch {
	case len(p.samples) < p.sampleCap:
		p.samples = append(p.samples, rtt)
	case p.reservoir != nil:
		// Algorithm R: keep each of the received samples with equal chance.
		if j := p.reservoir.Uint64N(p.received); j < uint64(p.sampleCap) {
			p.samples[j] = rtt
		}
	}
	if p.havePrev {
		d := float64(rtt - p.prevRTT)
		p.jitter += (math.Abs(d) - p.jitter) / 16
	}
	p.prevRTT, p.havePrev = rtt, true

	iv := &p.iv
	if iv.received == 0 || rtt < iv.min {
		iv.min = rtt
	}
	iv.max = max(iv.max, rtt)
	iv.sum += rtt
	iv.received++
}

// report calls progress every ProgressInterval until stop is closed, then
// once more for the last partial interval.
func (p *prober) report(progress func(ProbeInterval), stop <-chan struct{}) {
	if progress == nil {
		<-stop
		return
	}
	t := time.NewTicker(ProgressInterval)
	defer t.Stop()
	var last time.Duration
	for {
		final := false
		select {
		case <-t.C:
		case <-stop:
			final = true
		}
		now := time.Since(p.start)
		p.mu.Lock()
		iv := p.iv
		sent := p.sent.Load()
		p.iv = ivStats{sentMark: sent}
		p.mu.Unlock()
		out := ProbeInterval{Start: last, End: now, Sent: sent - iv.sentMark, Received: iv.received, RTTMin: iv.min, RTTMax: iv.max}
		if iv.received > 0 {
			out.RTTAvg = iv.sum / time.Duration(iv.received)
		}
		last = now
		if !final || out.Sent > 0 || out.Received > 0 {
			progress(out)
		}
		if final {
			return
		}
	}
}

func (p *prober) result() *ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &ProbeResult{
		Sent:       p.sent.Load(),
		Received:   p.received,
		Duplicates: p.dups,
		Reordered:  p.reordered,
		Corrupt:    p.corrupt,
		Elapsed:    time.Since(p.start),
	}
	r.Received = min(r.Received, r.Sent)
	r.Lost = r.Sent - r.Received
	if p.received > 0 {
		r.RTTMin, r.RTTMax = p.rttMin, p.rttMax
		r.RTTAvg = time.Duration(p.rttSum / float64(p.received))
		r.JitterRFC3550 = time.Duration(p.jitter)
		s := slices.Clone(p.samples)
		slices.Sort(s)
		r.RTTP50, r.RTTP90, r.RTTP99 = percentile(s, 50), percentile(s, 90), percentile(s, 99)
	}
	if p.serverN > 0 {
		r.ServerTime = time.Duration(p.serverSum / float64(p.serverN))
	}
	return r
}

// percentile returns the nearest-rank pct percentile of sorted s.
func percentile(s []time.Duration, pct int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*pct + 99) / 100
	return s[max(i-1, 0)]
}

// seenSet remembers which sequence numbers were answered within a window
// of the newest ones, in bounded memory.
type seenSet struct {
	bits []uint64
	size uint64 // window, in sequence numbers
	hi   uint64 // newest sequence number seen + 1
}

func (s *seenSet) init(window uint64) {
	words := (window + 63) / 64
	s.bits = make([]uint64, words)
	s.size = words * 64
}

func (s *seenSet) slot(seq uint64) (int, uint64) {
	i := seq % s.size
	return int(i / 64), 1 << (i % 64)
}

// add records seq and reports whether it was already recorded. Numbers
// older than the window cannot be checked and count as new.
func (s *seenSet) add(seq uint64) bool {
	if seq >= s.hi {
		if seq-s.hi >= s.size {
			clear(s.bits)
		} else {
			for x := s.hi; x <= seq; x++ {
				w, m := s.slot(x)
				s.bits[w] &^= m
			}
		}
		s.hi = seq + 1
	} else if s.hi-seq > s.size {
		return false
	}
	w, m := s.slot(seq)
	dup := s.bits[w]&m != 0
	s.bits[w] |= m
	return dup
}
