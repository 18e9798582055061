//go:build linux

package iperf3proto

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestLocalGateHoldsUnlimitedSender: an unlimited sender to a local
// receiver that does not read stops at the receiver's free room, with
// nothing dropped; it sends again once the receiver reads; and every
// datagram it counted arrives, in order.
func TestLocalGateHoldsUnlimitedSender(t *testing.T) {
	const blk = 1400 // charged 2304 bytes on Linux 6, under the gate's first estimate
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	q, err := udpbatch.OpenPeerQueue(sc.LocalAddr().(*net.UDPAddr).AddrPort(), rc.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatalf("sock_diag: %v", err)
	}
	defer q.Close()
	pl, err := newPayload(blk, false, false)
	if err != nil {
		t.Fatal(err)
	}
	st := &stream{id: 1, sender: true, udp: true, conn: sc, done: make(chan struct{})}
	stop := make(chan struct{})
	var meter atomic.Int64
	go st.runUDPSender(pl, udpSendOpts{blk: blk, sendBytes: udpSendBytes, gate: true}, nil, &meter, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-st.done
	}()

	next := uint64(1) // the sequence number the receiver expects
	for round := range 2 {
		testutil.Eventually(t, 10*time.Second, "the sender fills the receiver's queue", func() bool {
			m, err := q.Read()
			return err == nil && m.Queued >= m.Limit/2
		})
		m, err := q.Read()
		if err != nil {
			t.Fatal(err)
		}
		sent := st.packets.Load()
		if m.Drops != 0 || sent-int64(next-1) > int64(m.Limit/blk) {
			t.Fatalf("round %d: %d datagrams sent, %d read, receiver %+v: the gate let the queue overflow", round, sent, next-1, m)
		}
		next = readSeqs(t, rc, next, sent)
	}
	close(stop)
	<-st.done
	next = readSeqs(t, rc, next, st.packets.Load())
	if m, err := q.Read(); err != nil || m.Drops != 0 {
		t.Fatalf("receiver %+v, %v: want no drops", m, err)
	}
	if n := st.packets.Load(); uint64(n) != next-1 || st.bytes.Load() != n*blk || meter.Load() != n*blk {
		t.Fatalf("sent %d datagrams, %d bytes (meter %d); read %d", n, st.bytes.Load(), meter.Load(), next-1)
	}
	if _, err := rc.Read(make([]byte, blk)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a datagram beyond the count: %v", err)
	}
}

// readSeqs reads the datagrams with sequence numbers next to upto, all
// already queued, checking their order; it returns the next expected.
func readSeqs(t *testing.T, c *net.UDPConn, next uint64, upto int64) uint64 {
	t.Helper()
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for ; int64(next) <= upto; next++ {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read datagram %d of %d: %v", next, upto, err)
		}
		h, err := DecodeUDPHeader(buf[:n], false)
		if err != nil || h.Seq != next {
			t.Fatalf("datagram %d: %+v, %v", next, h, err)
		}
	}
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	return next
}

// TestLocalGateOnlyForLocalUDP: a stream that is not a UDP socket, or
// whose peer is not on this host, is not gated.
func TestLocalGateOnlyForLocalUDP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if g := newLocalGate(a, 1400); g != nil {
		t.Fatal("a pipe got a gate")
	}
	remote, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9})
	if err != nil {
		t.Skipf("no route for a remote address: %v", err)
	}
	defer remote.Close()
	if g := newLocalGate(remote, 1400); g != nil {
		g.close()
		t.Fatal("a socket to 192.0.2.1 got a gate")
	}
}
