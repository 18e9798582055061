package udpaccept

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/sockopt"
	"github.com/packetparamedic/reflector/internal/testutil"
)

const ioTimeout = 5 * time.Second

func newAcceptor(t *testing.T, addr string, allow func(netip.AddrPort) bool) *Acceptor {
	t.Helper()
	a, err := NewAcceptor(context.Background(), addr, allow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// dial opens a client socket from local (may be nil) to the acceptor.
func dial(t *testing.T, a *Acceptor, network string, local *net.UDPAddr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP(network, local, a.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
}

func accept(t *testing.T, a *Acceptor) (*net.UDPConn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, first, err := a.AcceptUDP(ctx)
	if err != nil {
		t.Fatalf("AcceptUDP: %v", err)
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		t.Fatalf("AcceptUDP returned %T, want *net.UDPConn", c)
	}
	t.Cleanup(func() { _ = uc.Close() })
	return uc, string(first)
}

func recv(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read on %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n])
}

// expectEmpty asserts that nothing is queued on c.
func expectEmpty(t *testing.T, c *net.UDPConn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("unexpected datagram %q on %v", buf[:n], c.LocalAddr())
	}
}

func sameAddr(a, b net.Addr) bool {
	x, y := a.(*net.UDPAddr).AddrPort(), b.(*net.UDPAddr).AddrPort()
	return unmap(x) == unmap(y)
}

func TestTwoStreamsGetTheirOwnSockets(t *testing.T) {
	for _, tc := range []struct{ name, listen, network string }{
		{"ipv4", "127.0.0.1:0", "udp4"},
		{"ipv6", "[::1]:0", "udp6"},
		{"dual-stack with ipv4 client", "[::]:0", "udp4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcceptor(t, tc.listen, nil)
			target := a.Addr().(*net.UDPAddr)
			if tc.listen == "[::]:0" {
				target = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: target.Port}
			}
			c1, err := net.DialUDP(tc.network, nil, target)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			t.Cleanup(func() { _ = c1.Close() })
			c2, err := net.DialUDP(tc.network, nil, target)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c2.Close() })

			send(t, c1, "open-1")
			s1, first := accept(t, a)
			if first != "open-1" {
				t.Fatalf("first datagram %q, want open-1", first)
			}
			if s1.RemoteAddr() == nil || !sameAddr(s1.RemoteAddr(), c1.LocalAddr()) {
				t.Fatalf("stream 1 RemoteAddr %v, want %v", s1.RemoteAddr(), c1.LocalAddr())
			}
			send(t, c2, "open-2")
			s2, first := accept(t, a)
			if first != "open-2" {
				t.Fatalf("first datagram %q, want open-2", first)
			}
			if !sameAddr(s2.RemoteAddr(), c2.LocalAddr()) {
				t.Fatalf("stream 2 RemoteAddr %v, want %v", s2.RemoteAddr(), c2.LocalAddr())
			}
			if !sameAddr(s1.LocalAddr(), s2.LocalAddr()) {
				t.Fatalf("streams on different local addresses %v and %v", s1.LocalAddr(), s2.LocalAddr())
			}

			for i := range 20 {
				send(t, c1, "data-1")
				send(t, c2, "data-2")
				if got := recv(t, s1); got != "data-1" {
					t.Fatalf("packet %d on stream 1: %q", i, got)
				}
				if got := recv(t, s2); got != "data-2" {
					t.Fatalf("packet %d on stream 2: %q", i, got)
				}
			}
			expectEmpty(t, s1)
			expectEmpty(t, s2)

			// The connected sockets also write to their own sender.
			if _, err := s1.Write([]byte("reply-1")); err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Write([]byte("reply-2")); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c1); got != "reply-1" {
				t.Fatalf("client 1 got %q", got)
			}
			if got := recv(t, c2); got != "reply-2" {
				t.Fatalf("client 2 got %q", got)
			}

			// A third sender is still accepted after two hand-offs.
			c3, err := net.DialUDP(tc.network, nil, target)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c3.Close() })
			send(t, c3, "open-3")
			if _, first := accept(t, a); first != "open-3" {
				t.Fatalf("third stream opened with %q", first)
			}
			if a.Dropped() != 0 {
				t.Fatalf("Dropped = %d, want 0", a.Dropped())
			}
		})
	}
}

func TestDisallowedSenderDropped(t *testing.T) {
	allowed := netip.MustParseAddr("127.0.0.1")
	var seen []netip.AddrPort
	a := newAcceptor(t, "127.0.0.1:0", func(ap netip.AddrPort) bool {
		seen = append(seen, ap)
		return ap.Addr() == allowed
	})
	foreign, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, a.Addr().(*net.UDPAddr))
	if err != nil {
		t.Skipf("cannot send from 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { _ = foreign.Close() })
	good := dial(t, a, "udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})

	send(t, foreign, "intruder")
	send(t, foreign, "intruder")
	send(t, good, "open")
	s, first := accept(t, a)
	if first != "open" {
		t.Fatalf("accepted stream opened with %q, want open", first)
	}
	if !sameAddr(s.RemoteAddr(), good.LocalAddr()) {
		t.Fatalf("stream connected to %v, want %v", s.RemoteAddr(), good.LocalAddr())
	}
	if got := a.Dropped(); got != 2 {
		t.Fatalf("Dropped = %d, want 2", got)
	}
	if len(seen) != 3 || seen[0].Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("allow saw %v", seen)
	}
}

func TestQueuedDatagramsOfOtherSendersAreNotLost(t *testing.T) {
	a := newAcceptor(t, "127.0.0.1:0", nil)
	ca := dial(t, a, "udp4", nil)
	cb := dial(t, a, "udp4", nil)
	// Everything is queued on the listening socket before the first
	// accept: B's datagram sits behind A's first one.
	send(t, ca, "a-1")
	send(t, cb, "b-1")
	send(t, ca, "a-2")

	sa, first := accept(t, a)
	if first != "a-1" {
		t.Fatalf("first stream opened with %q", first)
	}
	sb, first := accept(t, a)
	if first != "b-1" {
		t.Fatalf("second stream opened with %q, want b-1", first)
	}
	if !sameAddr(sb.RemoteAddr(), cb.LocalAddr()) {
		t.Fatalf("second stream connected to %v, want %v", sb.RemoteAddr(), cb.LocalAddr())
	}
	if got := recv(t, sa); got != "a-2" {
		t.Fatalf("stream A read %q, want a-2", got)
	}
	send(t, ca, "a-3")
	send(t, cb, "b-2")
	if got := recv(t, sa); got != "a-3" {
		t.Fatalf("stream A read %q, want a-3", got)
	}
	if got := recv(t, sb); got != "b-2" {
		t.Fatalf("stream B read %q, want b-2", got)
	}
	expectEmpty(t, sa)
	expectEmpty(t, sb)
}

func TestCloseUnblocksAccept(t *testing.T) {
	a, err := NewAcceptor(context.Background(), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := a.AcceptUDP(context.Background())
		errc <- err
	}()
	testutil.Eventually(t, ioTimeout, "AcceptUDP blocked in read", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "udpaccept.(*Acceptor).read")
	})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("AcceptUDP after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("AcceptUDP still blocked after Close")
	}
	if _, _, err := a.AcceptUDP(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptUDP on closed acceptor: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestContextEndsAcceptAndAcceptorStaysUsable(t *testing.T) {
	a := newAcceptor(t, "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, _, err := a.AcceptUDP(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcceptUDP with expired ctx: %v", err)
	}
	c := dial(t, a, "udp4", nil)
	send(t, c, "after")
	if _, first := accept(t, a); first != "after" {
		t.Fatalf("got %q after a cancelled accept", first)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

func TestNoDescriptorLeak(t *testing.T) {
	run := func() {
		a, err := NewAcceptor(context.Background(), "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for range 3 {
			c, err := net.DialUDP("udp4", nil, a.Addr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			s, _, err := a.AcceptUDP(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, s)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run() // warm up the runtime poller and lazily opened descriptors
	before := openFDs(t)
	for range 5 {
		run()
	}
	if after := openFDs(t); after != before {
		t.Fatalf("open descriptors %d before, %d after", before, after)
	}
}

func TestFailedRebindBreaksTheAcceptor(t *testing.T) {
	a := newAcceptor(t, "127.0.0.1:0", nil)
	c := dial(t, a, "udp4", nil)
	failure := errors.New("out of descriptors")
	rebind = func(context.Context, string) (*net.UDPConn, error) { return nil, failure }
	t.Cleanup(func() { rebind = sockopt.ListenUDPReusePort })

	before := openFDs(t)
	send(t, c, "open")
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if _, _, err := a.AcceptUDP(ctx); !errors.Is(err, failure) {
		t.Fatalf("AcceptUDP with a failing rebind: %v", err)
	}
	if _, _, err := a.AcceptUDP(ctx); !errors.Is(err, failure) {
		t.Fatalf("AcceptUDP on a broken acceptor: %v, want the rebind error again", err)
	}
	if after := openFDs(t); after != before {
		t.Fatalf("failed hand-off changed open descriptors %d -> %d", before, after)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AcceptUDP(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptUDP after Close: %v", err)
	}
}
