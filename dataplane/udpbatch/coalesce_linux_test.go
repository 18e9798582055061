package udpbatch

import (
	"net"
	"testing"
	"time"
)

// TestCoalesce: after a read that did not fill the batch the next read
// pauses first; a full batch, or a read that brought a sixteenth of the
// receive buffer, is followed by none; every datagram arrives once, in
// order. (TestDetach covers Close waking a blocked reader.)
func TestCoalesce(t *testing.T) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.SetReadBuffer(64 << 10); err != nil { // the kernel doubles it
		t.Fatal(err)
	}
	d, err := Detach(uc, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Coalesce(time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d.napBytes < 4<<10 || d.napBytes > 16<<10 {
		t.Fatalf("pause limit %d bytes for a 64 KiB buffer, want a sixteenth of 128 KiB", d.napBytes)
	}
	c, err := net.Dial("udp", uc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := byte(0)
	send := func(k, size int) {
		t.Helper()
		for range k {
			b := make([]byte, size)
			b[0] = next
			next++
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs := make([]Message, 4)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 32<<10)
	}
	want := byte(0)
	read := func(n int, pauseAfter bool) {
		t.Helper()
		got, err := d.ReadBatch(msgs)
		if err != nil || got != n {
			t.Fatalf("ReadBatch = %d, %v; want %d datagrams", got, err, n)
		}
		for _, m := range msgs[:got] {
			if m.Buf[0] != want {
				t.Fatalf("datagram %d arrived where %d was due", m.Buf[0], want)
			}
			want++
		}
		if d.nap.Load() != pauseAfter {
			t.Fatalf("after a read of %d: pause next %v, want %v", got, !pauseAfter, pauseAfter)
		}
	}
	send(1, 100)
	read(1, true) // short read: pause before the next
	send(4, 100)
	read(4, false) // the batch was full
	send(2, 100)
	read(2, true)
	send(1, d.napBytes) // as much as the limit: reading again at once
	read(1, false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
