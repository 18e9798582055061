package iperf3proto

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// streamSet is the data streams of one test, with the machinery both ends
// share: the payload senders transmit, the test-wide -n/-k byte budget,
// the stop signal and the meters of bytes moved. The client and the server
// differ only in which streams send and in the receive low-watermark.
type streamSet struct {
	p       Params
	streams []*stream
	// sent and received meter all streams' bytes (the owner's counters).
	sent, received *atomic.Int64
	// rcvLowat is the largest SO_RCVLOWAT of TCP receivers (see discardTCP).
	rcvLowat int
	// closeAtEnd closes TCP streams in end (the server does; a client
	// closing them while a stock server still sends makes it abort).
	closeAtEnd bool
	// gateLocal holds unlimited UDP senders to a local receiver's free
	// room (localGate). The server sets it for clients that receive
	// without GRO; a client cannot tell how the server receives.
	gateLocal bool

	// budget, when set, bounds the bytes every stream moves (ByteBudget).
	budget *ByteBudget

	pl   *payload
	lim  *sendLimit    // nil when neither -n nor -k is set
	stop chan struct{} // closed by end to stop senders
	once sync.Once     // makes end idempotent
	quit sync.Once     // makes close idempotent
}

// newStreamSet returns an empty set for a test with parameters p.
func newStreamSet(p Params, sent, received *atomic.Int64, rcvLowat int) *streamSet {
	s := &streamSet{p: p, sent: sent, received: received, rcvLowat: rcvLowat, stop: make(chan struct{})}
	if b := p.byteBudget(); b > 0 {
		s.lim = &sendLimit{limit: b}
		s.lim.omitting.Store(p.Omit > 0)
	}
	return s
}

// byteBudget is the test's -n or -k budget in bytes (0: none).
func (p Params) byteBudget() int64 {
	if p.Bytes > 0 {
		return p.Bytes
	}
	if p.Blocks > 0 {
		return p.Blocks * int64(p.BlockLen())
	}
	return 0
}

// add appends a stream whose role (sender or receiver) is fixed.
func (s *streamSet) add(conn net.Conn, sender bool) *stream {
	st := &stream{id: streamID(len(s.streams)), sender: sender, udp: s.p.UDP, conn: conn, done: make(chan struct{}), budget: s.budget}
	s.streams = append(s.streams, st)
	return st
}

// hasSender reports whether any stream of the set sends.
func (s *streamSet) hasSender() bool {
	for _, st := range s.streams {
		if st.sender {
			return true
		}
	}
	return false
}

// preparePayload builds the send payload when a stream sends.
func (s *streamSet) preparePayload() error {
	if !s.hasSender() {
		return nil
	}
	p := s.p
	size := p.BlockLen()
	if !p.UDP {
		size = sendChunk(size, p.Bandwidth, p.ZeroCopy)
	}
	pl, err := newPayload(size, p.RepeatingPayload, !p.UDP && p.ZeroCopy)
	if err != nil {
		return err
	}
	s.pl = pl
	return nil
}

// begin marks every stream as counting from start.
func (s *streamSet) begin(start time.Time) {
	for _, st := range s.streams {
		st.mu.Lock()
		st.start = start
		st.count = true
		st.mu.Unlock()
	}
}

// startWorkers starts the data goroutines of the senders (senders true) or
// of the receivers (false).
func (s *streamSet) startWorkers(senders bool) {
	for _, st := range s.streams {
		if st.sender == senders {
			s.startWorker(st)
		}
	}
}

// startWorker starts one stream's data goroutine.
func (s *streamSet) startWorker(st *stream) {
	p := s.p
	st.started = true
	recvBatch, sendBytes := udpBatchSizes(len(s.streams))
	switch {
	case st.sender && p.UDP:
		go st.runUDPSender(s.pl, udpSendOpts{blk: p.BlockLen(), sendBytes: sendBytes, c64: p.UDPCounters64Bit, bps: p.Bandwidth, gate: s.gateLocal}, s.lim, s.sent, s.stop)
	case st.sender:
		go st.runTCPSender(s.pl, sendChunk(p.BlockLen(), p.Bandwidth, p.ZeroCopy), p.Bandwidth, s.lim, s.sent, s.stop)
	case p.UDP:
		st.conn = detachReceiver(st.conn, recvBatch)
		go st.runUDPReceiver(p.UDPCounters64Bit, recvBatch, s.received)
	default:
		go st.runTCPReceiver(s.rcvLowat, s.received)
	}
}

// markOmitEnd ends the omit period: counters restart from now, and so
// does the byte budget (-n/-k count measured bytes, as iperf3 resets its
// totals when omitting ends).
func (s *streamSet) markOmitEnd(now time.Time, retrans bool) {
	s.lim.restart()
	for _, st := range s.streams {
		st.markOmitEnd(now, retrans && st.sender)
	}
}

// end stops the senders and fixes every stream's final counters; with
// closeAtEnd it closes TCP streams (UDP receivers keep draining until
// close). Only the first call does anything.
func (s *streamSet) end(retrans bool) {
	s.once.Do(func() { s.endNow(retrans) })
}

func (s *streamSet) endNow(retrans bool) {
	now := time.Now()
	close(s.stop)
	for _, st := range s.streams {
		if st.sender {
			_ = st.conn.SetWriteDeadline(now)
		} else if !st.udp {
			_ = st.conn.SetReadDeadline(now)
		}
	}
	for _, st := range s.streams {
		if st.started && (st.sender || !st.udp) {
			<-st.done
		}
		if st.started && !st.sender && !st.udp {
			if n := drainQueued(st.conn, st.budget); n > 0 {
				st.bytes.Add(n)
				s.received.Add(n)
			}
		}
	}
	for _, st := range s.streams {
		st.markEnd(now, retrans && st.sender)
		if s.closeAtEnd && !st.udp {
			_ = st.conn.Close()
		}
	}
}

// sendersDone reports whether the set has senders bound by a byte budget
// and all of them have stopped.
func (s *streamSet) sendersDone() bool {
	if s.lim == nil || !s.hasSender() {
		return false
	}
	for _, st := range s.streams {
		if !st.sender {
			continue
		}
		select {
		case <-st.done:
		default:
			return false
		}
	}
	return true
}

// results returns every stream's entry for the results JSON.
func (s *streamSet) results() []StreamResults {
	out := make([]StreamResults, 0, len(s.streams))
	for _, st := range s.streams {
		out = append(out, st.results())
	}
	return out
}

// close stops the workers, closes every connection, waits for the workers
// and releases the payload. It is idempotent and may follow end or not.
func (s *streamSet) close() {
	s.quit.Do(func() {
		s.once.Do(func() { close(s.stop) })
		for _, st := range s.streams {
			_ = st.conn.Close()
		}
		for _, st := range s.streams {
			if st.started {
				<-st.done
			}
		}
		s.pl.close()
	})
}
