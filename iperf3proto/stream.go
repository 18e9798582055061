package iperf3proto

import (
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// stream is one data connection of a test, from either side's view.
type stream struct {
	id     int
	sender bool
	udp    bool
	conn   net.Conn
	// started is set (by the test goroutine) when the worker runs; done is
	// closed when it returns.
	started bool
	// budget, when set, bounds the bytes the stream moves (ByteBudget).
	budget *ByteBudget

	bytes   atomic.Int64 // bytes moved (sent or received) since the test began
	packets atomic.Int64 // UDP datagrams sent (sender side)
	// sendErr is why a UDP sender gave up (written before done is closed).
	sendErr error

	mu    sync.Mutex // guards stats and counting for UDP receivers
	stats UDPStats
	count bool // receiver counts only while the test runs

	// snapshot at the end of the omit period
	omitBytes   int64
	omitPackets int64
	omitErrors  int64
	omitRetrans int64
	start       time.Time

	// final values, fixed at test end
	endBytes   int64
	endPackets int64
	endErrors  int64
	endOOO     int64
	endJitter  float64
	endRetrans int64
	end        time.Time

	done chan struct{}
}

// sendLimit is a test-wide budget of bytes for senders (-n / -k); zero
// means unlimited. While omitting (the -O period) it lets everything
// through, and restart starts counting when the period ends, so the
// budget bounds the measured bytes as in iperf3.
type sendLimit struct {
	limit    int64
	used     atomic.Int64
	omitting atomic.Bool
}

// take reserves up to n bytes, returning how many may be sent (0 = stop);
// the last block is trimmed so the total is exactly the limit.
func (l *sendLimit) take(n int) int {
	if l == nil || l.limit == 0 || l.omitting.Load() {
		return n
	}
	u := l.used.Add(int64(n))
	before := u - int64(n)
	if before >= l.limit {
		return 0
	}
	return int(min(int64(n), l.limit-before))
}

// giveBack returns n reserved bytes that were not sent; nil-safe.
func (l *sendLimit) giveBack(n int64) {
	if l != nil && l.limit != 0 && n > 0 && !l.omitting.Load() {
		l.used.Add(-n)
	}
}

// restart starts the budget over (the omit period ended); nil-safe.
func (l *sendLimit) restart() {
	if l != nil {
		l.used.Store(0)
		l.omitting.Store(false)
	}
}

// pacer spaces sends so that the average rate stays at most bps bits/s,
// as iperf3's throttle does (send while bits-so-far / elapsed < rate).
type pacer struct {
	bps   uint64
	start time.Time
	sent  uint64
	timer *time.Timer
}

// wait blocks until n more bytes may be sent or stop is closed; it returns
// false when stopped.
func (p *pacer) wait(n int, stop <-chan struct{}) bool {
	if p.bps == 0 {
		return true
	}
	due := time.Duration(float64(p.sent*8) / float64(p.bps) * float64(time.Second))
	p.sent += uint64(n)
	d := due - time.Since(p.start)
	if d <= 0 {
		return true
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-stop:
		p.timer.Stop()
		return false
	}
}

// runTCPSender sends blocks until stop, a write error or the byte budget.
func (s *stream) runTCPSender(p *payload, blk int, bps uint64, lim *sendLimit, meter *atomic.Int64, stop <-chan struct{}) {
	defer close(s.done)
	pc := pacer{bps: bps, start: time.Now()}
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := s.budget.take(lim.take(blk))
		if n == 0 || !pc.wait(n, stop) {
			return
		}
		w, err := p.send(s.conn, n)
		s.budget.give(n - max(w, 0))
		if w > 0 {
			s.bytes.Add(int64(w))
			meter.Add(int64(w))
		}
		if err != nil {
			return
		}
	}
}

// runTCPReceiver drains the connection until EOF or close (lowat: see
// discardTCP).
func (s *stream) runTCPReceiver(lowat int, meter *atomic.Int64) {
	defer close(s.done)
	_, err := discardTCP(s.conn, lowat, s.budget, func(n int) {
		s.bytes.Add(int64(n))
		meter.Add(int64(n))
	})
	if errors.Is(err, ErrBudgetSpent) {
		_ = s.conn.Close() // nothing more is read or drained
	}
}

// markOmitEnd snapshots counters at the end of the omit period.
func (s *stream) markOmitEnd(now time.Time, retrans bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.omitBytes = s.bytes.Load()
	s.start = now
	if s.udp && !s.sender {
		s.omitPackets = int64(s.stats.Packets)
		s.omitErrors = s.stats.Lost
		s.stats.Jitter = 0
	} else {
		s.omitPackets = s.packets.Load()
	}
	if retrans {
		s.omitRetrans, _ = tcpRetransmits(s.conn)
	}
}

// markEnd stops counting and fixes the final values.
func (s *stream) markEnd(now time.Time, retrans bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count = false
	s.end = now
	s.endBytes = s.bytes.Load() - s.omitBytes
	if s.udp && !s.sender {
		s.endPackets = int64(s.stats.Packets)
		s.endErrors = s.stats.Lost
		s.endOOO = s.stats.OutOfOrder
		s.endJitter = s.stats.Jitter
	} else {
		s.endPackets = s.packets.Load()
	}
	s.endRetrans = -1
	if retrans {
		if r, err := tcpRetransmits(s.conn); err == nil {
			s.endRetrans = r - s.omitRetrans
		}
	}
}

// results returns the stream's entry for the results JSON.
func (s *stream) results() StreamResults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StreamResults{
		ID:             s.id,
		Bytes:          uint64(max(s.endBytes, 0)),
		Retransmits:    s.endRetrans,
		Jitter:         s.endJitter,
		Errors:         s.endErrors,
		OmittedErrors:  s.omitErrors,
		Packets:        s.endPackets,
		OmittedPackets: s.omitPackets,
		StartTime:      0,
		EndTime:        math.Max(0, s.end.Sub(s.start).Seconds()),
	}
}

// streamID returns the id iperf3 gives the i-th stream of a test (0-based):
// 1, 3, 4, 5, ... (a historical quirk both sides keep).
func streamID(i int) int {
	if i == 0 {
		return 1
	}
	return i + 2
}
