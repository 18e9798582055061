package iperf3proto

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
)

// UDP data path: datagrams move in batches (recvmmsg/sendmmsg through
// dataplane/udpbatch) whether or not the client asked for offloads, and
// with the kernel's UDP GSO and GRO where a probe finds them: a sender
// hands the kernel up to udpbatch.MaxSegments datagrams per message, a
// receiver may get that many coalesced in one buffer. Sequence numbers,
// loss, out-of-order and jitter are still taken per datagram
// (UDPStats.addSegments). Streams that are not plain UDP sockets (the
// QUIC tunnel) move one datagram per call through the same loops.

const (
	// udpRecvBatch is how many buffers of udpbatch.MaxGROBuf bytes one
	// receive call fills at most: 1 MiB per receiving stream.
	udpRecvBatch = 16
	// udpSendBytes bounds the datagram bytes one send call carries.
	udpSendBytes = 512 << 10
	// udpTestBuffers bounds the batch buffers of all of a test's UDP
	// streams on one end: with many streams each gets less (at least one
	// receive buffer and one GSO message), so a client's -P 128 costs no
	// more memory than -P 16.
	udpTestBuffers = 16 << 20
	// udpMaxMsgs bounds the messages of one send call.
	udpMaxMsgs = 64
	// udpPaceSlice is how much sending time one paced round covers.
	udpPaceSlice = time.Millisecond
	// udpYieldEvery is how often a sender yields the processor. A sender
	// that never blocks spends its life in send calls, and Go's sysmon,
	// seeing one goroutine hold its P for more than 10 ms, takes the P
	// away on every tick and stays in its fastest (20 us) polling mode:
	// 50,000 thread switches a second on a 2-core VM, and the sender
	// stalls and then bursts into the receiver's queue. Yielding lets the
	// scheduler see progress (an upstream `--gsro -R` client got 55
	// instead of 36 Gbit/s, with 10,000 switches a second).
	udpYieldEvery = time.Millisecond
	// udpRecvPause is the longest a receiver sleeps after a read that did
	// not fill its batch (udpbatch.Detached.Coalesce), so that a sender
	// of one datagram per system call does not wake it per datagram.
	// Measured with a 3.12 client (-u -b 0 -l 1400, alternating rounds):
	// server CPU 1.95 s/GB at 50 us, 1.32 at 200 us, 1.00 at 500 us, the
	// throughput the same (the client is the limit); GRO streams pause
	// less (Coalesce bounds the pause by the rate).
	udpRecvPause = 200 * time.Microsecond
)

// datagramIO moves batches of datagrams; *udpbatch.Conn implements it and
// connIO adapts any net.Conn.
type datagramIO interface {
	ReadBatch(msgs []udpbatch.Message) (int, error)
	WriteBatch(msgs []udpbatch.Message) (int, error)
}

// connIO moves one datagram per call over a net.Conn (tunnel streams).
type connIO struct{ c net.Conn }

func (c connIO) ReadBatch(msgs []udpbatch.Message) (int, error) {
	n, err := c.c.Read(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Seg = n, 0
	return 1, nil
}

func (c connIO) WriteBatch(msgs []udpbatch.Message) (int, error) {
	for i := range msgs {
		if _, err := c.c.Write(msgs[i].Buf[:msgs[i].N]); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// batchIO returns the batched I/O of conn: udpbatch over a UDP socket, with
// GRO and kernel receive timestamps (recv: jitter from the kernel's
// arrival time, not from when the reader woke) or GSO (send) turned on
// when the kernel has them, else connIO. gso reports GSO for a sender.
func batchIO(conn net.Conn, batch int, recv bool) (io datagramIO, gso bool) {
	if dc, ok := conn.(*udpbatch.DetachedConn); ok {
		d := dc.Detached()
		_ = d.EnableGRO()
		_ = d.EnableRxTimestamps()
		return d, false
	}
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return connIO{conn}, false
	}
	bc := udpbatch.New(uc, batch)
	if recv {
		_ = bc.EnableGRO()
		_ = bc.EnableRxTimestamps()
		return bc, false
	}
	return bc, bc.EnableGSO() == nil
}

// detachReceiver returns conn ready for runUDPReceiver: a UDP socket is
// taken out of the netpoller and coalesces its reads (udpRecvPause), so
// the receiver sleeps in the kernel on its own thread and a datagram wakes
// it directly, once per batch rather than per datagram. Anything else, or
// a socket that cannot be detached, is returned as it is. Call it before
// the receiver starts: it replaces the stream's connection.
func detachReceiver(conn net.Conn, batch int) net.Conn {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return conn
	}
	dc, err := udpbatch.DetachConn(uc, batch)
	if err != nil {
		return conn
	}
	_ = dc.Detached().Coalesce(udpRecvPause) // best effort: without it every read may wait
	return dc
}

// udpBatchSizes returns, for a test of streams UDP streams, how many
// receive buffers each receiver uses and how many bytes each sender hands
// the kernel per call (see udpTestBuffers).
func udpBatchSizes(streams int) (recvBatch, sendBytes int) {
	per := udpTestBuffers / max(streams, 1)
	recvBatch = max(1, min(udpRecvBatch, per/udpbatch.MaxGROBuf))
	sendBytes = max(udpbatch.MaxGROBuf, min(udpSendBytes, per))
	return recvBatch, sendBytes
}

// addSegments records the datagrams in b, one received buffer: a single
// datagram, or with seg > 0 several of seg bytes back to back (the last
// may be shorter), all arrived at at. Datagrams too short for a header
// count as bytes only. It returns the number of datagrams.
func (s *UDPStats) addSegments(b []byte, seg int, c64 bool, at time.Time) int {
	n := 0
	udpbatch.Segments(b, seg, func(d []byte) {
		n++
		if h, err := DecodeUDPHeader(d, c64); err == nil {
			s.Add(h, len(d), at)
		} else {
			s.Bytes += uint64(len(d))
		}
	})
	return n
}

// runUDPReceiver reads datagrams, batch buffers at a time, until the
// connection is closed, updating the statistics while counting is on and
// draining afterwards. A detached socket (detachReceiver) is read on a
// thread of the receiver's own.
func (s *stream) runUDPReceiver(c64 bool, batch int, meter *atomic.Int64) {
	defer close(s.done)
	rio, _ := batchIO(s.conn, batch, true)
	if _, ok := rio.(*udpbatch.Detached); ok {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	msgs := make([]udpbatch.Message, batch)
	if _, ok := rio.(connIO); ok {
		msgs = msgs[:1]
	}
	slab := make([]byte, len(msgs)*udpbatch.MaxGROBuf)
	for i := range msgs {
		msgs[i].Buf = slab[i*udpbatch.MaxGROBuf : (i+1)*udpbatch.MaxGROBuf]
	}
	for {
		n, err := rio.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue // an ICMP error from the peer: keep reading
			}
			return
		}
		now := time.Now()
		s.mu.Lock()
		if s.count {
			var got int64
			for _, m := range msgs[:n] {
				if !s.budget.spend(m.N) {
					break // the budget is spent: nothing more is counted
				}
				got += int64(m.N)
				at := now
				if m.RxTime != 0 {
					at = time.Unix(0, m.RxTime)
				}
				s.stats.addSegments(m.Buf[:m.N], m.Seg, c64, at)
			}
			s.bytes.Add(got)
			meter.Add(got)
		}
		s.mu.Unlock()
	}
}

// udpSender lays datagrams out for batched sends: msgs[i] carries segs
// datagrams of blk bytes (one GSO message) or one when segs is 1, and
// one call carries at most maxBytes.
type udpSender struct {
	io       datagramIO
	blk      int
	maxBytes int
	segs     int
	slab     []byte
	msgs     []udpbatch.Message
	c64      bool
}

// layout prepares the messages for segs datagrams per message, each slot
// prefilled with the payload (only headers change per datagram).
func (u *udpSender) layout(pl []byte, segs int) {
	u.segs = segs
	per := segs * u.blk
	n := max(1, min(udpMaxMsgs, u.maxBytes/per))
	if _, ok := u.io.(connIO); ok {
		n = 1
	}
	u.slab = make([]byte, n*per)
	for off := 0; off < len(u.slab); off += u.blk {
		copy(u.slab[off:off+u.blk], pl)
	}
	u.msgs = make([]udpbatch.Message, n)
	for i := range u.msgs {
		u.msgs[i].Buf = u.slab[i*per : (i+1)*per]
	}
}

// capacity is the most datagrams one send call carries.
func (u *udpSender) capacity() int { return len(u.msgs) * u.segs }

// send stamps k datagrams with sequence numbers after seq and the time
// now, sends them and returns how many datagrams left.
func (u *udpSender) send(k int, seq uint64, now time.Time) (int, error) {
	sec, usec := uint32(now.Unix()), uint32(now.Nanosecond()/1000)
	for d := range k {
		h := UDPHeader{Sec: sec, Usec: usec, Seq: seq + uint64(d) + 1}
		_, _ = h.Encode(u.slab[d*u.blk:], u.c64)
	}
	nm := (k + u.segs - 1) / u.segs
	for i := range nm {
		cnt := min(u.segs, k-i*u.segs)
		u.msgs[i].N = cnt * u.blk
		u.msgs[i].Seg = 0
		if cnt > 1 {
			u.msgs[i].Seg = u.blk
		}
	}
	sent, err := u.io.WriteBatch(u.msgs[:nm])
	return min(sent*u.segs, k), err
}

// gsoSegments is how many datagrams of blk bytes one GSO message carries.
func gsoSegments(blk int) int {
	return max(1, min(udpbatch.MaxSegments, udpbatch.MaxGSOBytes/blk))
}

// paceRound is how many datagrams one round sends: all that fit a call
// when unpaced, else about udpPaceSlice worth at bps (at least one).
func paceRound(bps uint64, blk, capacity int) int {
	if bps == 0 {
		return capacity
	}
	per := int(float64(bps) / 8 / float64(blk) * udpPaceSlice.Seconds())
	return max(1, min(capacity, per))
}

// udpSendOpts are the settings of one UDP sender.
type udpSendOpts struct {
	blk       int    // datagram size
	sendBytes int    // most datagram bytes per send call
	c64       bool   // 64-bit sequence numbers
	bps       uint64 // rate limit, 0 for none
	gate      bool   // hold an unlimited sender to a local receiver's room
}

// runUDPSender sends datagrams with the iperf3 header, up to sendBytes
// per call, until stop, an unrecoverable error or the budget.
func (s *stream) runUDPSender(p *payload, o udpSendOpts, lim *sendLimit, meter *atomic.Int64, stop <-chan struct{}) {
	defer close(s.done)
	blk := o.blk
	wio, gso := batchIO(s.conn, udpMaxMsgs, false)
	u := &udpSender{io: wio, blk: blk, maxBytes: o.sendBytes, c64: o.c64}
	segs := 1
	if gso {
		segs = gsoSegments(blk)
	}
	u.layout(p.bytes(), segs)
	var gate *localGate
	if o.gate && o.bps == 0 {
		gate = newLocalGate(s.conn, blk)
	}
	defer gate.close()
	pc := pacer{bps: o.bps, start: time.Now()}
	yielded := pc.start
	var seq uint64
	softErrors := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		k := gate.admit(paceRound(o.bps, blk, u.capacity()), stop)
		if k == 0 {
			return
		}
		allowed := lim.take(k * blk)
		if allowed == 0 {
			return
		}
		want := (allowed + blk - 1) / blk
		if k = s.budget.takeDatagrams(want, blk); k == 0 {
			return
		}
		if k < want {
			lim.giveBack(int64(allowed - k*blk))
		}
		if !pc.wait(k*blk, stop) {
			return
		}
		now := time.Now()
		if now.Sub(yielded) >= udpYieldEvery {
			runtime.Gosched()
			yielded = now
		}
		sent, err := u.send(k, seq, now)
		s.budget.give((k - sent) * blk)
		seq += uint64(sent)
		if sent > 0 {
			softErrors = 0
			s.packets.Store(int64(seq))
			s.bytes.Add(int64(sent * blk))
			meter.Add(int64(sent * blk))
		}
		if err == nil {
			continue
		}
		lim.giveBack(int64((k - sent) * blk))
		pc.sent -= uint64((k - sent) * blk)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		if u.segs > 1 && isGSOError(err) {
			// The path cannot segment: send datagram by datagram.
			if bc, ok := wio.(*udpbatch.Conn); ok {
				bc.DisableGSO()
			}
			u.layout(p.bytes(), 1)
			continue
		}
		// The peer's socket may not be ready yet (ICMP unreachable) or
		// the send buffer is full: retry a bounded number of times. A
		// datagram too large for the path never fits: give up at once.
		softErrors++
		if softErrors > 1000 || errors.Is(err, syscall.EMSGSIZE) {
			s.sendErr = fmt.Errorf("udp stream %d: send %d-byte datagrams: %w", s.id, blk, err)
			return
		}
	}
}

// isGSOError reports a send error that means the kernel or device cannot
// segment (wireguard-go switches GSO off on the same).
func isGSOError(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported)
}
