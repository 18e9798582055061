package iperf3proto

import (
	"fmt"
	"net"
	"time"

	"github.com/packetparamedic/reflector/dataplane/zerocopy"
)

// sendChunkTarget is how much an unpaced TCP sender hands the kernel per
// write: several blocks at once mean fewer syscalls and wakeups.
const sendChunkTarget = 1 << 20

// sendChunk returns the bytes per write for a TCP sender with block length
// blk and rate bps (0 unlimited): whole blocks, one when paced, -Z (which
// sends block by block as iperf3 does) or already large.
func sendChunk(blk int, bps uint64, zeroCopy bool) int {
	if bps != 0 || zeroCopy || blk >= sendChunkTarget {
		return blk
	}
	return blk * (sendChunkTarget / blk)
}

// serverRcvLowat returns the largest receive low-watermark of the server
// TCP receivers of a test of streams streams (the client ends the test,
// so the tail is drained after TEST_END); the receiver lowers it for slow
// streams so their counters stay current (truncDiscard). A large
// watermark cuts our CPU per GB (2 MiB: 0.02-0.03 s/GB, 512 KiB: about
// 0.065-0.09, 128 KiB: about 0.25), but it holds back a client that
// drives several streams from one thread (iperf3 3.12): with -P 4 against
// stock iperf3 -s on loopback (bench/cmd/compare, 5 rounds each, same
// period) 512 KiB gave 0.69-0.94 of stock's rate, 256 KiB 0.69, 128 KiB
// 0.95-1.02 (CPU 0.55-0.62 of stock's s/GB). One stream keeps 512 KiB
// (1.65x stock, CPU 0.33x); several get 128 KiB.
func serverRcvLowat(streams int) int {
	if streams > 1 {
		return 128 << 10
	}
	return 512 << 10
}

// discardTCP reads conn until EOF or error, reporting every chunk to
// onBytes, and returns the total. On TCP sockets it discards in the kernel
// with recv(MSG_TRUNC), with an adaptive receive low-watermark of at most
// lowat; anything else (TLS, tunnel streams) goes through
// zerocopy.Discard. lowat is only for a receiver whose peer decides the
// end (the server), since the tail below it is counted only by a later
// drainQueued. A budget bounds the bytes read: recv(MSG_TRUNC) takes
// before it reads (exact); the other paths count what they read and stop
// when it is over (at most one read too many). Spent, it returns
// ErrBudgetSpent.
func discardTCP(conn net.Conn, lowat int, b *ByteBudget, onBytes func(int)) (int64, error) {
	if n, ok, err := truncDiscard(conn, lowat, b, onBytes); ok {
		return n, err
	}
	spent := false
	n, err := zerocopy.Discard(conn, func(n int) {
		onBytes(n)
		if !spent && !b.spend(n) {
			spent = true
			_ = conn.SetReadDeadline(time.Unix(1, 0))
		}
	})
	if spent {
		return n, ErrBudgetSpent
	}
	return n, err
}

// payload is the data a sender transmits (dataplane/zerocopy): random
// bytes, or iperf3's repeating "0123456789" pattern when the client asks
// for it. With -Z TCP senders transmit it with sendfile(2) from its memfd;
// plain writes are the default because on loopback they measured faster.
type payload struct {
	zp       *zerocopy.Payload
	zeroCopy bool
}

// newPayload builds a payload of size bytes; zeroCopy selects sendfile.
func newPayload(size int, repeating, zeroCopy bool) (*payload, error) {
	zp, err := zerocopy.NewPayload(size, repeating)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return &payload{zp: zp, zeroCopy: zeroCopy}, nil
}

// bytes returns the payload data.
func (p *payload) bytes() []byte { return p.zp.Bytes() }

// send writes n bytes of the payload to conn (n <= len).
func (p *payload) send(conn net.Conn, n int) (int, error) {
	if p.zeroCopy {
		return p.zp.Send(conn, n)
	}
	return p.zp.Write(conn, n)
}

// close releases the payload's kernel resources.
func (p *payload) close() {
	if p != nil {
		_ = p.zp.Close()
	}
}

// udpRecvBuffer is the receive buffer asked for on UDP receivers when the
// client sets no window: a few milliseconds of scheduling delay must not
// turn into loss the network did not cause (the kernel caps it at
// net.core.rmem_max).
const udpRecvBuffer = 4 << 20

// setUDPRecvBuffer enlarges a UDP receiver's socket buffer, best effort.
func setUDPRecvBuffer(c net.Conn) {
	if u, ok := c.(interface{ SetReadBuffer(int) error }); ok {
		_ = u.SetReadBuffer(udpRecvBuffer)
	}
}
