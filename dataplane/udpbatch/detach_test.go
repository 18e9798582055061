package udpbatch

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestDetach: a detached socket, polling or blocking (SetBlocking),
// echoes a batch, keeps its address, reads what is queued in one call, and
// Close wakes a ReadBatch blocked on it with net.ErrClosed.
func TestDetach(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		name := "polling"
		if blocking {
			name = "blocking"
		}
		t.Run(name, func(t *testing.T) { testDetach(t, blocking) })
	}
}

func testDetach(t *testing.T, blocking bool) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := uc.LocalAddr().String()
	d, err := Detach(uc, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.UDPConn().LocalAddr().String(); got != addr {
		t.Fatalf("local address %s after Detach, was %s", got, addr)
	}
	if blocking {
		if err := d.SetBlocking(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := d.Get()
	n, err := d.ReadBatch(b.Msgs)
	if err != nil || n != 1 || string(b.Msgs[0].Buf[:b.Msgs[0].N]) != "ping" {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if _, err := d.WriteBatch(b.Msgs[:1]); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if m, err := c.Read(buf); err != nil || string(buf[:m]) != "ping" {
		t.Fatalf("echo read %q, %v", buf[:m], err)
	}
	// Three queued datagrams come back from one call, in order (a
	// blocking receive waits for the first only).
	for _, p := range []string{"a", "b", "c"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	got := ""
	for deadline := time.Now().Add(5 * time.Second); len(got) < 3 && time.Now().Before(deadline); {
		n, err := d.ReadBatch(b.Msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range b.Msgs[:n] {
			got += string(m.Buf[:m.N])
		}
	}
	if got != "abc" {
		t.Fatalf("read %q, want abc", got)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.ReadBatch(b.Msgs)
		for err == nil { // a shut-down socket may first report an empty read
			_, err = d.ReadBatch(b.Msgs)
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block (either order is tested)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the blocked ReadBatch")
	}
	d.Put(b)
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
