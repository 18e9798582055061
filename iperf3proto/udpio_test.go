package iperf3proto

import (
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
)

// coalesced builds one GRO-style buffer: a datagram of seg bytes per
// sequence number (send time base+offsets[i] microseconds), the last one
// cut to last bytes when last > 0.
func coalesced(seqs []uint64, offsets []int64, seg, last int, c64 bool) []byte {
	base := time.Unix(1_700_000_000, 0)
	var b []byte
	for i, q := range seqs {
		d := make([]byte, seg)
		at := base.Add(time.Duration(offsets[i]) * time.Microsecond)
		h := UDPHeader{Sec: uint32(at.Unix()), Usec: uint32(at.Nanosecond() / 1000), Seq: q}
		_, _ = h.Encode(d, c64)
		if i == len(seqs)-1 && last > 0 {
			d = d[:last]
		}
		b = append(b, d...)
	}
	return b
}

func TestAddSegmentsGolden(t *testing.T) {
	arrive := time.Unix(1_700_000_000, 0).Add(time.Second)
	zeros := func(n int) []int64 { return make([]int64, n) }
	cases := []struct {
		name      string
		bufs      [][]uint64 // sequence numbers per coalesced buffer
		offsets   []int64    // send time offsets (us) of the first buffer, for jitter
		c64       bool
		last      int // cut the first buffer's last datagram to this length
		datagrams int
		packets   uint64
		lost, ooo int64
		bytes     uint64
		jitter    float64
	}{
		{name: "in order", bufs: [][]uint64{{1, 2, 3, 4, 5}}, datagrams: 5, packets: 5, bytes: 500},
		{name: "gap inside a buffer", bufs: [][]uint64{{1, 2, 5, 6}}, datagrams: 4, packets: 6, lost: 2, bytes: 400},
		{name: "late datagram in the next buffer", bufs: [][]uint64{{1, 2, 4}, {3, 5}}, datagrams: 5, packets: 5, ooo: 1, bytes: 500},
		{name: "reordered inside a buffer", bufs: [][]uint64{{1, 3, 2, 4}}, datagrams: 4, packets: 4, ooo: 1, bytes: 400},
		{name: "64-bit counters past 2^32", bufs: [][]uint64{{1 << 33, 1<<33 + 2}}, c64: true, datagrams: 2, packets: 1<<33 + 2, lost: 1<<33 - 1 + 1, bytes: 200},
		{name: "short tail counts bytes only", bufs: [][]uint64{{1, 2, 3}}, last: 8, datagrams: 3, packets: 2, bytes: 208},
		// transits T, T-100us, T-300us: |d| = 0, 100us, 200us;
		// jitter = 100/16, then += (200 - 6.25)/16 microseconds.
		{name: "jitter", bufs: [][]uint64{{1, 2, 3}}, offsets: []int64{0, 100, 300}, datagrams: 3, packets: 3, bytes: 300, jitter: 18.359375e-6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s UDPStats
			got := 0
			for i, seqs := range c.bufs {
				off, last := zeros(len(seqs)), 0
				if i == 0 {
					last = c.last
					if c.offsets != nil {
						off = c.offsets
					}
				}
				got += s.addSegments(coalesced(seqs, off, 100, last, c.c64), 100, c.c64, arrive)
			}
			if got != c.datagrams || s.Packets != c.packets || s.Lost != c.lost || s.OutOfOrder != c.ooo || s.Bytes != c.bytes {
				t.Fatalf("datagrams %d packets %d lost %d ooo %d bytes %d; want %d %d %d %d %d",
					got, s.Packets, s.Lost, s.OutOfOrder, s.Bytes, c.datagrams, c.packets, c.lost, c.ooo, c.bytes)
			}
			if math.Abs(s.Jitter-c.jitter) > 1e-12 {
				t.Fatalf("jitter %g, want %g", s.Jitter, c.jitter)
			}
		})
	}
}

// TestAddSegmentsMatchesOneByOne: a coalesced buffer gives exactly the
// statistics of the same datagrams received one at a time.
func TestAddSegmentsMatchesOneByOne(t *testing.T) {
	seqs := []uint64{1, 2, 4, 3, 7, 8, 6, 9, 12}
	offs := []int64{0, 10, 35, 20, 90, 95, 60, 140, 200}
	at := time.Unix(1_700_000_001, 500)
	var whole, single UDPStats
	whole.addSegments(coalesced(seqs, offs, 64, 0, false), 64, false, at)
	for i := range seqs {
		single.addSegments(coalesced(seqs[i:i+1], offs[i:i+1], 64, 0, false), 0, false, at)
	}
	if whole != single {
		t.Fatalf("coalesced %+v\n one by one %+v", whole, single)
	}
}

func TestPaceRound(t *testing.T) {
	for _, c := range []struct {
		bps       uint64
		blk, cap_ int
		want      int
	}{
		{0, 1400, 368, 368},
		{1e6, 1400, 368, 1},     // 89 datagrams/s: one per round
		{1e9, 1400, 368, 89},    // 1 ms at 1 Gbit/s
		{100e9, 1400, 368, 368}, // capped by the call
	} {
		if got := paceRound(c.bps, c.blk, c.cap_); got != c.want {
			t.Errorf("paceRound(%d, %d, %d) = %d, want %d", c.bps, c.blk, c.cap_, got, c.want)
		}
	}
	if got := gsoSegments(1400); got != 46 {
		t.Errorf("gsoSegments(1400) = %d, want 46", got)
	}
	if got := gsoSegments(65000); got != 1 {
		t.Errorf("gsoSegments(65000) = %d, want 1", got)
	}
}

// TestUDPBatchSizes: a test's batch buffers stay within udpTestBuffers
// (plus the floor of one buffer per stream) however many streams it has.
func TestUDPBatchSizes(t *testing.T) {
	for _, n := range []int{1, 4, 16, 32, 128} {
		r, snd := udpBatchSizes(n)
		if r < 1 || r > udpRecvBatch || snd < 64<<10 || snd > udpSendBytes {
			t.Fatalf("udpBatchSizes(%d) = %d, %d out of range", n, r, snd)
		}
		if total := n * max(r*(64<<10), snd); total > max(udpTestBuffers, n*(64<<10)) {
			t.Errorf("%d streams use %d bytes of batch buffers", n, total)
		}
	}
	if r, snd := udpBatchSizes(1); r != udpRecvBatch || snd != udpSendBytes {
		t.Errorf("one stream gets %d, %d; want the full %d, %d", r, snd, udpRecvBatch, udpSendBytes)
	}
}

// TestUDPReceiverDetached: a receiving UDP stream is read outside the
// netpoller (detachReceiver) and still counts every datagram exactly
// (a gap filled late is one out-of-order and no loss), stops counting at
// the test's end while it keeps draining, and closing the set wakes the
// reader blocked on an idle socket.
func TestUDPReceiverDetached(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setUDPRecvBuffer(srv)
	cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var sent, recv atomic.Int64
	s := newStreamSet(Params{UDP: true}, &sent, &recv, 0)
	st := s.add(srv, false)
	s.begin(time.Now())
	s.startWorkers(false)
	if _, ok := st.conn.(*udpbatch.DetachedConn); !ok {
		t.Fatalf("receiver conn is %T, want *udpbatch.DetachedConn", st.conn)
	}
	const n, size, late = 600, 200, 251
	send := func(seq uint64) {
		b := make([]byte, size)
		_, _ = UDPHeader{Seq: seq}.Encode(b, false)
		if _, err := cli.Write(b); err != nil {
			t.Fatalf("send %d: %v", seq, err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	packets := func() uint64 { st.mu.Lock(); defer st.mu.Unlock(); return st.stats.Packets }
	for seq := uint64(1); seq <= n; seq++ {
		if seq != late {
			send(seq)
		}
		if seq%50 == 0 { // in steps the receive buffer holds even under load
			waitFor("datagrams up to "+strconv.FormatUint(seq, 10), func() bool { return packets() == seq })
		}
	}
	send(late)
	waitFor("the late datagram", func() bool { return st.bytes.Load() == n*size })
	s.end(false)
	send(n + 1) // after the end: drained, not counted
	r := st.results()
	if r.Packets != n || r.Errors != 0 || st.endOOO != 1 || r.Bytes != n*size || recv.Load() != n*size {
		t.Fatalf("packets %d lost %d ooo %d bytes %d (meter %d); want %d 0 1 %d", r.Packets, r.Errors, st.endOOO, r.Bytes, recv.Load(), n, n*size)
	}
	closed := make(chan struct{})
	go func() { s.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the set did not end the detached receiver")
	}
}
