package udpbatch

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func listen(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// readAll reads batches until want datagrams arrived or the deadline passed.
func readAll(t *testing.T, c *Conn, want int) []Message {
	t.Helper()
	var got []Message
	if err := c.UDPConn().SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for len(got) < want {
		b := c.Get()
		n, err := c.ReadBatch(b.Msgs)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d: %v", len(got), want, err)
		}
		for _, m := range b.Msgs[:n] {
			m.Buf = bytes.Clone(m.Buf[:m.N])
			got = append(got, m)
		}
		c.Put(b)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name, network, srv, cli string
	}{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0", "[::1]:0"},
		{"dual stack, v4 peer", "udp", "[::]:0", "127.0.0.1:0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := New(listen(t, tc.network, tc.srv), 16)
			cliNet := "udp4"
			if netip.MustParseAddrPort(tc.cli).Addr().Is6() {
				cliNet = "udp6"
			}
			cli := New(listen(t, cliNet, tc.cli), 16)
			dst := addrOf(srv.UDPConn())
			if dst.Addr().IsUnspecified() {
				dst = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port())
			}
			const total = 40 // more than one batch of 16
			out := make([]Message, total)
			for i := range out {
				out[i] = Message{Buf: []byte{byte(i), 0xAA, byte(i * 3)}, N: 3, Addr: dst}
			}
			if n, err := cli.WriteBatch(out); n != total || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, total)
			}
			got := readAll(t, srv, total)
			want := addrOf(cli.UDPConn())
			for i, m := range got {
				if m.Addr != want {
					t.Fatalf("msg %d from %v, want %v", i, m.Addr, want)
				}
				if !bytes.Equal(m.Buf, []byte{byte(i), 0xAA, byte(i * 3)}) || m.Truncated {
					t.Fatalf("msg %d = %x (truncated %v)", i, m.Buf, m.Truncated)
				}
			}
			// Echo back to the reported source addresses.
			for i := range got {
				got[i].N = len(got[i].Buf)
			}
			if n, err := srv.WriteBatch(got); n != total || err != nil {
				t.Fatalf("echo WriteBatch = %d, %v", n, err)
			}
			back := readAll(t, cli, total)
			for i, m := range back {
				if m.Buf[0] != byte(i) {
					t.Fatalf("echo %d = %x", i, m.Buf)
				}
			}
		})
	}
}

func TestTruncatedAndTimestamps(t *testing.T) {
	srv := New(listen(t, "udp4", "127.0.0.1:0"), 8)
	stamps := srv.EnableRxTimestamps() == nil
	if runtime.GOOS == "linux" && !stamps {
		t.Fatal("SO_TIMESTAMPNS not accepted on linux")
	}
	cli := New(listen(t, "udp4", "127.0.0.1:0"), 8)
	big := bytes.Repeat([]byte{7}, 3000)
	before := time.Now().UnixNano()
	if _, err := cli.WriteBatch([]Message{{Buf: big, N: len(big), Addr: addrOf(srv.UDPConn())}}); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, srv, 1)
	after := time.Now().UnixNano()
	if got[0].N != DefaultBufSize {
		t.Fatalf("N = %d, want %d", got[0].N, DefaultBufSize)
	}
	if runtime.GOOS == "linux" && !got[0].Truncated {
		t.Fatal("truncation not reported")
	}
	if stamps && (got[0].RxTime < before-int64(time.Second) || got[0].RxTime > after) {
		t.Fatalf("RxTime %d outside [%d, %d]", got[0].RxTime, before, after)
	}
}

func TestWriteErrors(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), 4)
	dst := addrOf(c.UDPConn())
	msgs := []Message{
		{Buf: []byte("ok"), N: 2, Addr: dst},
		{Buf: []byte("bad"), N: 9, Addr: dst},
		{Buf: []byte("ok"), N: 2, Addr: dst},
	}
	n, err := c.WriteBatch(msgs)
	if n != 1 || !errors.Is(err, ErrBadLength) {
		t.Fatalf("WriteBatch = %d, %v; want 1, ErrBadLength", n, err)
	}
	if runtime.GOOS == "linux" {
		v6 := netip.MustParseAddrPort("[2001:db8::1]:9")
		n, err = c.WriteBatch([]Message{{Buf: []byte("x"), N: 1, Addr: v6}})
		if n != 0 || !errors.Is(err, ErrAddrFamily) {
			t.Fatalf("v6 on v4 socket = %d, %v; want 0, ErrAddrFamily", n, err)
		}
	}
}

func TestReadAfterClose(t *testing.T) {
	c := New(listen(t, "udp4", "127.0.0.1:0"), 4)
	done := make(chan error, 1)
	go func() {
		b := c.Get()
		defer c.Put(b)
		_, err := c.ReadBatch(b.Msgs)
		done <- err
	}()
	time.AfterFunc(20*time.Millisecond, func() { c.Close() })
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch did not return after Close")
	}
}

func TestNoAllocPerBatch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("batch path is linux only")
	}
	srv := New(listen(t, "udp4", "127.0.0.1:0"), 32)
	if err := srv.UDPConn().SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	cli := New(listen(t, "udp4", "127.0.0.1:0"), 32)
	if err := srv.EnableRxTimestamps(); err != nil {
		t.Fatal(err)
	}
	dst := addrOf(srv.UDPConn())
	out := cli.Get()
	for i := range out.Msgs {
		out.Msgs[i].N, out.Msgs[i].Addr = 64, dst
	}
	in := srv.Get()
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := cli.WriteBatch(out.Msgs); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(out.Msgs); {
			n, err := srv.ReadBatch(in.Msgs)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch round trip, want 0", allocs)
	}
}
