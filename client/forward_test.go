package client_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/internal/testutil"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// pipeDialer hands the far end of every TCP stream to the test, in dial
// order, and dials UDP streams to udpAddr.
type pipeDialer struct {
	tcp     chan net.Conn
	udpAddr string
}

var _ iperf3proto.Dialer = (*pipeDialer)(nil)

func (d *pipeDialer) DialTCP(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case d.tcp <- b:
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *pipeDialer) DialUDP(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "udp", d.udpAddr)
}

// startForwarder serves a Forwarder on loopback (TCP, and UDP when udp)
// until the test ends, checking that Serve returns after cancel.
func startForwarder(t *testing.T, d iperf3proto.Dialer, udp bool) (*client.Forwarder, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var uc *net.UDPConn
	if udp {
		if uc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())); err != nil {
			t.Fatal(err)
		}
	}
	f := &client.Forwarder{Dialer: d, OnError: func(err error) { t.Logf("forwarder: %v", err) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Serve(ctx, ln, uc) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			t.Error("listener still open after Serve returned")
		}
	})
	return f, ln.Addr().String()
}

// TestForwardAcceptOrder: connections reach the reflector in the order
// they were accepted, each with its first bytes first; a silent
// connection ahead of them (a port probe) neither holds them up nor is
// forwarded, also once it closes.
func TestForwardAcceptOrder(t *testing.T) {
	d := &pipeDialer{tcp: make(chan net.Conn)}
	f, addr := startForwarder(t, d, false)
	probe, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var locals []net.Conn
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "stream-%d", i); err != nil {
			t.Fatal(err)
		}
		locals = append(locals, c)
	}
	for i := range n {
		var remote net.Conn
		select {
		case remote = <-d.tcp:
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d not forwarded", i)
		}
		defer remote.Close()
		buf := make([]byte, 8)
		if _, err := io.ReadFull(remote, buf); err != nil || string(buf) != fmt.Sprintf("stream-%d", i) {
			t.Fatalf("forwarded stream %d starts %q (%v)", i, buf, err)
		}
		// Bytes flow both ways after the first ones.
		if _, err := remote.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		back := make([]byte, 2)
		if _, err := io.ReadFull(locals[i], back); err != nil || string(back) != "ok" {
			t.Fatalf("stream %d got %q back (%v)", i, back, err)
		}
	}
	_ = probe.Close()
	testutil.Eventually(t, 10*time.Second, "the probe counted as silent", func() bool {
		return f.Stats().TCPSilent == 1
	})
	if st := f.Stats(); st.TCPForwarded != n {
		t.Fatalf("stats %+v, want %d forwarded", st, n)
	}
	select {
	case c := <-d.tcp:
		t.Fatalf("the silent probe was forwarded: %v", c)
	default:
	}
}

// TestForwardLateSpeaker: a connection silent past the grace is attached
// after later ones, once it speaks.
func TestForwardLateSpeaker(t *testing.T) {
	d := &pipeDialer{tcp: make(chan net.Conn)}
	f, addr := startForwarder(t, d, false)
	late, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	early, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	_, _ = early.Write([]byte("E"))
	first := <-d.tcp
	defer first.Close()
	_, _ = late.Write([]byte("L"))
	second := <-d.tcp
	defer second.Close()
	for want, c := range map[string]net.Conn{"E": first, "L": second} {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != want {
			t.Fatalf("got %q (%v), want %q", b, err, want)
		}
	}
	// The forwarder counts a connection after its first bytes went out,
	// which the reader above may see first.
	testutil.Eventually(t, 10*time.Second, "both connections counted as forwarded", func() bool {
		return f.Stats().TCPForwarded == 2
	})
	if st := f.Stats(); st.TCPSilent != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestForwardUDP: each local source gets a stream of its own, and replies
// return to the source that sent.
func TestForwardUDP(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, src, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(append([]byte(src.String()+" "), buf[:n]...), src)
		}
	}()
	f, addr := startForwarder(t, &pipeDialer{udpAddr: echo.LocalAddr().String()}, true)
	var srcs []string
	for i := range 2 {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A datagram larger than any QUIC packet passes whole.
		msg := make([]byte, 32<<10)
		msg[0] = byte('a' + i)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64<<10)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		var from string
		var rest []byte
		if _, err := fmt.Sscan(string(buf[:n]), &from); err != nil {
			t.Fatal(err)
		}
		rest = buf[len(from)+1 : n]
		if len(rest) != len(msg) || rest[0] != msg[0] {
			t.Fatalf("source %d got %d bytes starting %q back", i, len(rest), rest[:1])
		}
		srcs = append(srcs, from)
	}
	if srcs[0] == srcs[1] {
		t.Fatalf("both local sources shared the stream from %s", srcs[0])
	}
	if st := f.Stats(); st.UDPSources != 2 || st.UDPWriteErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestForwardEndsWhenListenerCloses: a listener closed by someone else
// ends the forwarding as the end of ctx does, UDP socket included.
func TestForwardEndsWhenListenerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &client.Forwarder{Dialer: &pipeDialer{tcp: make(chan net.Conn)}}
	done := make(chan struct{})
	go func() { defer close(done); f.Serve(context.Background(), ln, uc) }()
	_ = ln.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running after its listener closed")
	}
	if _, err := uc.WriteToUDP([]byte("x"), uc.LocalAddr().(*net.UDPAddr)); err == nil {
		t.Fatal("UDP socket still open after Serve returned")
	}
}
