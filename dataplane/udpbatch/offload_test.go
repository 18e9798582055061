package udpbatch

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestSegments(t *testing.T) {
	cases := []struct {
		n, seg int
		want   []int
	}{
		{10, 0, []int{10}},
		{10, 10, []int{10}},
		{10, 20, []int{10}},
		{10, 4, []int{4, 4, 2}},
		{12, 4, []int{4, 4, 4}},
	}
	for _, c := range cases {
		var got []int
		Segments(make([]byte, c.n), c.seg, func(d []byte) { got = append(got, len(d)) })
		if len(got) != len(c.want) {
			t.Fatalf("Segments(%d, %d) = %v, want %v", c.n, c.seg, got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("Segments(%d, %d) = %v, want %v", c.n, c.seg, got, c.want)
			}
		}
	}
}

// TestGSOToGRO sends one segmented message and reads it back with and
// without GRO: the datagrams arrive whole and in order either way.
func TestGSOToGRO(t *testing.T) {
	for _, gro := range []bool{false, true} {
		rx := New(listen(t, "udp4", "127.0.0.1:0"), 0)
		tx := New(listen(t, "udp4", "127.0.0.1:0"), 0)
		if err := tx.EnableGSO(); err != nil {
			if errors.Is(err, ErrUnsupported) {
				t.Skipf("no GSO here: %v", err)
			}
			t.Fatal(err)
		}
		if gro {
			if err := rx.EnableGRO(); err != nil {
				t.Skipf("no GRO here: %v", err)
			}
		}
		const seg, count = 1000, 10
		buf := make([]byte, seg*count-300)
		for i := range buf {
			buf[i] = byte(i / seg)
		}
		msgs := []Message{{Buf: buf, N: len(buf), Seg: seg, Addr: addrOf(rx.UDPConn())}}
		if n, err := tx.WriteBatch(msgs); n != 1 || err != nil {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		_ = rx.UDPConn().SetReadDeadline(time.Now().Add(5 * time.Second))
		var got [][]byte
		rmsgs := make([]Message, 16)
		for i := range rmsgs {
			rmsgs[i].Buf = make([]byte, MaxGROBuf)
		}
		for len(got) < count {
			n, err := rx.ReadBatch(rmsgs)
			if err != nil {
				t.Fatalf("gro=%v: ReadBatch after %d datagrams: %v", gro, len(got), err)
			}
			for _, m := range rmsgs[:n] {
				if !gro && m.Seg != 0 {
					t.Fatalf("Seg %d without GRO", m.Seg)
				}
				Segments(m.Buf[:m.N], m.Seg, func(d []byte) { got = append(got, bytes.Clone(d)) })
			}
		}
		for i, d := range got {
			want := seg
			if i == count-1 {
				want = seg - 300
			}
			if len(d) != want || d[0] != byte(i) || d[len(d)-1] != byte(i) {
				t.Fatalf("gro=%v: datagram %d: %d bytes starting %d, want %d bytes of %d", gro, i, len(d), d[0], want, i)
			}
		}
	}
}

// TestSegmentedWithoutGSO: a segmented message is refused, not sent as
// one oversized datagram, when GSO is off.
func TestSegmentedWithoutGSO(t *testing.T) {
	rx := listen(t, "udp4", "127.0.0.1:0")
	tx := New(listen(t, "udp4", "127.0.0.1:0"), 0)
	buf := make([]byte, 3000)
	_, err := tx.WriteBatch([]Message{{Buf: buf, N: len(buf), Seg: 1000, Addr: addrOf(rx)}})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("WriteBatch without GSO: %v, want ErrUnsupported", err)
	}
}
