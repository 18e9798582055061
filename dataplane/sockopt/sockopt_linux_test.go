package sockopt

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T, network, addr string) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// wrapped stands for *tls.Conn: no SyscallConn, but NetConn.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

func TestTCPInfoOnLiveConnection(t *testing.T) {
	c, s := tcpPair(t, "tcp4", "127.0.0.1:0")
	const size = 1 << 20
	go func() { _, _ = c.Write(make([]byte, size)) }()
	if _, err := io.CopyN(io.Discard, s, size); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []net.Conn{c, wrapped{c}} {
		info, err := TCPInfo(conn)
		if err != nil {
			t.Fatalf("TCPInfo(%T): %v", conn, err)
		}
		if info.RTT <= 0 || info.SndMSS == 0 || info.SndCwnd == 0 || info.PMTU == 0 {
			t.Fatalf("TCPInfo(%T) = %+v; want RTT, MSS, cwnd, PMTU > 0", conn, info)
		}
		if info.State != 1 {
			t.Fatalf("state %d, want ESTABLISHED (1)", info.State)
		}
		if info.BytesAcked < size {
			t.Fatalf("BytesAcked %d after sending %d", info.BytesAcked, size)
		}
	}
	rinfo, err := TCPInfo(s)
	if err != nil {
		t.Fatal(err)
	}
	if rinfo.BytesReceived < size {
		t.Fatalf("receiver BytesReceived %d, want >= %d", rinfo.BytesReceived, size)
	}
}

func TestNotSupportedWithoutTCPSocket(t *testing.T) {
	p1, p2 := net.Pipe()
	defer func() { _ = p1.Close(); _ = p2.Close() }()
	if _, err := TCPInfo(p1); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("TCPInfo(net.Pipe): %v", err)
	}
	if err := SetCongestion(p1, "reno"); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("SetCongestion(net.Pipe): %v", err)
	}
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = u.Close() }()
	if _, err := TCPInfo(u); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("TCPInfo(udp): %v", err)
	}
}

func TestCongestion(t *testing.T) {
	c, _ := tcpPair(t, "tcp4", "127.0.0.1:0")
	if err := SetCongestion(c, "reno"); err != nil {
		t.Fatalf("SetCongestion(reno): %v", err)
	}
	if got, err := Congestion(c); err != nil || got != "reno" {
		t.Fatalf("Congestion = %q, %v; want reno", got, err)
	}
	err := SetCongestion(c, "no-such-algo")
	if !errors.Is(err, ErrCongestionUnavailable) {
		t.Fatalf("SetCongestion(bogus) = %v, want ErrCongestionUnavailable", err)
	}
	if got, _ := Congestion(c); got != "reno" {
		t.Fatalf("failed SetCongestion changed the algorithm to %q", got)
	}
}

func TestMSSBuffersPacingTOS(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s: %v", tc.network, err)
			}
			defer func() { _ = ln.Close() }()
			c, err := net.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()

			if err := SetMSS(c, 1200); err != nil {
				t.Fatalf("SetMSS: %v", err)
			}
			if err := SetBuffers(c, 256<<10, 0); err != nil {
				t.Fatalf("SetBuffers: %v", err)
			}
			snd, rcv, err := Buffers(c)
			if err != nil {
				t.Fatal(err)
			}
			if snd != 512<<10 && snd < 256<<10 {
				t.Fatalf("SO_SNDBUF = %d after asking 256 KiB", snd)
			}
			if rcv <= 0 {
				t.Fatalf("SO_RCVBUF = %d", rcv)
			}
			if err := SetMaxPacingRate(c, 10<<20); err != nil {
				t.Fatalf("SetMaxPacingRate: %v", err)
			}
			if info, err := TCPInfo(c); err != nil || info.PacingRate > 10<<20 {
				t.Fatalf("pacing rate %d after capping to %d (%v)", info.PacingRate, 10<<20, err)
			}
			if err := SetTOS(c, 0x28); err != nil {
				t.Fatalf("SetTOS: %v", err)
			}
			level, opt := unix.IPPROTO_IP, unix.IP_TOS
			if tc.network == "tcp6" {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
			}
			var tos int
			if err := control(c, func(fd int) (err error) { tos, err = unix.GetsockoptInt(fd, level, opt); return }); err != nil || tos != 0x28 {
				t.Fatalf("TOS read back %#x, %v", tos, err)
			}
		})
	}
}

func TestDontFragment(t *testing.T) {
	u, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = u.Close() }()
	if err := SetDontFragment(u); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := control(u, func(fd int) (err error) {
		v, err = unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER)
		return
	}); err != nil || v != unix.IP_PMTUDISC_DO {
		t.Fatalf("IP_MTU_DISCOVER = %d, %v", v, err)
	}
}

func TestReusePort(t *testing.T) {
	ctx := context.Background()
	a, err := ListenUDPReusePort(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	addr := a.LocalAddr().String()
	b, err := ListenUDPReusePort(ctx, addr)
	if err != nil {
		t.Fatalf("second SO_REUSEPORT socket on %s: %v", addr, err)
	}
	defer func() { _ = b.Close() }()
	if _, err := net.ListenPacket("udp4", addr); err == nil {
		t.Fatalf("a socket without SO_REUSEPORT also bound %s", addr)
	}

	lc := ListenConfig(true)
	l1, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l1.Close() }()
	l2, err := lc.Listen(ctx, "tcp", l1.Addr().String())
	if err != nil {
		t.Fatalf("second reuseport TCP listener: %v", err)
	}
	_ = l2.Close()
	plain := ListenConfig(false)
	if l3, err := plain.Listen(ctx, "tcp", l1.Addr().String()); err == nil {
		_ = l3.Close()
		t.Fatal("listener without SO_REUSEPORT shared the port")
	}
	l4, err := plain.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = l4.Close()
}

// TestDrops: datagrams sent to a UDP socket that reads nothing are either
// queued or counted as dropped, never neither.
func TestDrops(t *testing.T) {
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	if err := rc.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	sc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sc.Close() }()
	const sent = 200
	payload := make([]byte, 1000)
	for range sent {
		if _, err := sc.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	drops, err := Drops(rc)
	if err != nil {
		t.Fatal(err)
	}
	// Loopback delivers during the send: what was not dropped is queued.
	if err := rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var queued uint64
	buf := make([]byte, 2000)
	for {
		if _, err := rc.Read(buf); err != nil {
			break
		}
		queued++
	}
	if drops == 0 || queued+drops != sent {
		t.Fatalf("%d queued + %d dropped, want %d sent with some dropped", queued, drops, sent)
	}
}
