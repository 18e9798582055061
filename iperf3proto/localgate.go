package iperf3proto

import (
	"net"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
	"github.com/packetparamedic/reflector/internal/finesleep"
)

// An unlimited (-b 0) UDP sender whose receiver is on this host gets no
// backpressure from the kernel: on loopback every datagram is handed to
// the receiving socket, or dropped there for want of room, inside the
// send call. A batched sender is then many times faster than a receiver
// that reads one datagram per call (a 3.12 client), the receiver loses
// more than nine datagrams in ten, and the sender's CPU goes into
// datagrams nobody reads. So a server sending to a local client without
// GRO watches the client's receive queue (udpbatch.PeerQueue) and sends
// only what fits: as fast as the receiver reads, which is what -b 0 asks
// for, and the loss it reports is the receiver's, not the flood's.
// A GRO receiver (`--gsro`) takes 64 KB per read and empties its queue in
// tens of microseconds, faster than a look at it costs to repeat, so its
// sender floods as before; so does a sender to a remote host, where the
// send buffer and the device give backpressure. Rate-limited senders
// (-b N) are paced and never gated.

const (
	// gateFill is the share of the receiver's buffer the sender fills,
	// in percent: the rest absorbs what the estimate of each datagram's
	// charge misses.
	gateFill = 90
	// gateMinSend divides the buffer into the smallest send worth a
	// call: with less room than Limit/gateMinSend the sender waits.
	gateMinSend = 8
	// gateCharge is added to the block size for the first estimate of
	// what a queued datagram costs the receiver (the skb and its
	// buffer's rounding: 2304 bytes for 1400 on Linux 6).
	gateCharge = 1024
	// gateSpin is the shortest nap: below it the sender looks again
	// at once (one look takes about 5 us).
	gateSpin = 20 * time.Microsecond
	// gateMaxNap bounds the nap; a receiver that stops reading costs
	// the sender one look per gateMaxNap until the test ends.
	gateMaxNap = time.Millisecond
)

// localGate holds an unlimited sender to its local receiver's free room.
type localGate struct {
	q      *udpbatch.PeerQueue
	nap    *finesleep.Sleeper // naps are shorter than a Go timer can sleep
	charge int                // estimated receiver bytes per datagram
	most   int                // the highest charge the estimate may reach
	drops  uint32             // the receiver's drop count at the last look
	wait   time.Duration      // the current nap while the receiver is full
}

// newLocalGate returns a gate for conn when it is a UDP socket whose
// peer is on this host and sock_diag can see it, else nil. The gate
// locks the calling goroutine to its thread until close, which the same
// goroutine must call.
func newLocalGate(conn net.Conn, blk int) *localGate {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return nil
	}
	la, lok := uc.LocalAddr().(*net.UDPAddr)
	ra, rok := uc.RemoteAddr().(*net.UDPAddr)
	if !lok || !rok {
		return nil
	}
	l, r := la.AddrPort(), ra.AddrPort()
	if !r.Addr().IsLoopback() && r.Addr().Unmap() != l.Addr().Unmap() {
		return nil
	}
	q, err := udpbatch.OpenPeerQueue(l, r)
	if err != nil {
		return nil
	}
	m, err := q.Read()
	if err != nil {
		_ = q.Close()
		return nil
	}
	return &localGate{q: q, nap: finesleep.New(), charge: blk + gateCharge, most: 4 * (blk + gateCharge), drops: m.Drops, wait: 4 * gateSpin}
}

// admit returns how many of k datagrams may go now, waiting while the
// receiver has no room for a worthwhile batch; 0 once stop is closed.
// When the receiver can no longer be seen (it closed), or g is nil (no
// gate), all k may go.
func (g *localGate) admit(k int, stop <-chan struct{}) int {
	if g == nil {
		return k
	}
	napped := false
	for {
		select {
		case <-stop:
			return 0
		default:
		}
		m, err := g.q.Read()
		if err != nil {
			return k
		}
		if m.Drops != g.drops {
			// The estimate was short: charge more from now on.
			g.charge = min(g.charge*5/4, g.most)
			g.drops = m.Drops
		}
		if napped && m.Queued < m.Limit/4 {
			g.wait = max(g.wait*3/4, time.Microsecond) // it nearly ran dry
		}
		room := (m.Limit*gateFill/100 - m.Queued) / g.charge
		if room >= max(1, min(k, m.Limit/g.charge/gateMinSend)) {
			return min(k, room)
		}
		if napped {
			g.wait = min(g.wait*5/4+time.Microsecond, gateMaxNap) // still full
		}
		napped = true
		if g.wait >= gateSpin {
			g.nap.Sleep(g.wait)
		}
	}
}

// close releases the gate (nil: nothing to do).
func (g *localGate) close() {
	if g == nil {
		return
	}
	g.nap.Stop()
	_ = g.q.Close()
}
