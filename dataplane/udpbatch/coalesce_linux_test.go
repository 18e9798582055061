package udpbatch

import (
	"net"
	"testing"
	"time"
)

// TestCoalesceDecide: after a read that did not fill the batch the next
// read pauses for the longest pause, shortened so that at the rate data
// came in since the last decision it lets in at most the limit (a
// sixteenth of the receive buffer), and none when that is below
// minPause; a full batch decides nothing; a long idle time neither
// overflows the arithmetic nor shortens the pause.
func TestCoalesceDecide(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clock := t0
	c := coalescer{pause: 200 * time.Microsecond, limit: 10_000, start: t0, now: func() time.Time { return clock }}
	msgs := func(k, size int) []Message {
		m := make([]Message, k)
		for i := range m {
			m[i].N = size
		}
		return m
	}
	step := func(d time.Duration, m []Message, full bool, want time.Duration) {
		t.Helper()
		clock = clock.Add(d)
		c.nap = 0 // ReadBatch clears it before reading
		c.decide(m, full)
		if c.nap < want-time.Microsecond || c.nap > want+time.Microsecond {
			t.Fatalf("after %d datagrams (full %v) at +%v: pause %v, want %v", len(m), full, clock.Sub(t0), c.nap, want)
		}
	}
	us := func(f float64) time.Duration { return time.Duration(f * float64(time.Microsecond)) }
	step(10*time.Millisecond, msgs(1, 100), false, c.pause)   // 1.1 KB in 10 ms: the longest pause
	step(10*time.Microsecond, msgs(4, 100), true, 0)          // a full batch: read again at once
	step(90*time.Microsecond, msgs(1, 9000), false, us(68.9)) // 14.5 KB in 100 us: 10 KB take 68.9 us
	step(100*time.Microsecond, msgs(8, 1000), false, us(61.8))
	step(10*time.Microsecond, msgs(16, 65000), false, 0) // 1 MB in 10 us: under minPause
	step(1000*time.Hour, msgs(1, 65000), false, c.pause) // after an hour idle
}

// TestCoalesce: with coalescing on, a detached socket still delivers
// every datagram once and in order, and a read that did not fill the
// batch is followed by a pause (a full one by none). (TestDetach covers Close waking a blocked reader.)
func TestCoalesce(t *testing.T) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	d, err := Detach(uc, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Coalesce(time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d.co.limit < 64<<10 {
		t.Fatalf("pause limit %d bytes for a 1 MiB buffer, want a sixteenth of the doubled size", d.co.limit)
	}
	slow := d.co.start
	d.co.now = func() time.Time { slow = slow.Add(time.Second); return slow } // a slow sender
	c, err := net.Dial("udp", uc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next, want := byte(0), byte(0)
	b := d.Get()
	defer d.Put(b)
	for _, k := range []int{1, 4, 2, 4, 3} {
		for range k {
			if _, err := c.Write([]byte{next, 1, 2, 3}); err != nil {
				t.Fatal(err)
			}
			next++
		}
		for want != next { // loopback normally delivers before Write returns, but may defer
			got, err := d.ReadBatch(b.Msgs)
			if err != nil || got == 0 || got > int(next-want) {
				t.Fatalf("ReadBatch = %d, %v; want 1 to %d datagrams", got, err, next-want)
			}
			for _, m := range b.Msgs[:got] {
				if m.N != 4 || m.Buf[0] != want {
					t.Fatalf("datagram %d (%d bytes) arrived where %d was due", m.Buf[0], m.N, want)
				}
				want++
			}
			if (d.co.nap == time.Millisecond) != (got < 4) {
				t.Fatalf("after a read of %d of 4: pause next %v", got, d.co.nap)
			}
		}
	}
}
