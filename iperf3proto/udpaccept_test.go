package iperf3proto

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestUDPAcceptorContract(t *testing.T) {
	ctx := context.Background()
	a, err := listenUDPAcceptor(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A datagram gives a socket connected to its sender.
	c, err := net.Dial("udp", a.local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write(udpConnectMsgBytes); err != nil {
		t.Fatal(err)
	}
	sc, first, err := a.AcceptUDP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !IsUDPConnectMsg(first) || sc.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("first %x from %v", first, sc.RemoteAddr())
	}
	if _, err := sc.Write(udpConnectReplyBytes); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || !IsUDPConnectReply(buf[:n]) {
		t.Fatalf("reply %x %v", buf[:n], err)
	}
	// Later datagrams from that sender go to the connected socket.
	if _, err := c.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "data" {
		t.Fatalf("connected socket read %q %v", buf[:n], err)
	}
	_ = sc.Close()
	// Context cancellation ends a pending accept.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, _, err := a.AcceptUDP(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled accept: %v", err)
	}
	// Close makes a pending accept return net.ErrClosed.
	errc := make(chan error, 1)
	go func() {
		_, _, err := a.AcceptUDP(ctx)
		errc <- err
	}()
	_ = a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AcceptUDP did not return after Close")
	}
	if _, _, err := a.AcceptUDP(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after Close: %v", err)
	}
}

// TestServerIgnoresForeignUDP: a connect datagram from an address other
// than the control connection's gets no reply.
func TestServerIgnoresForeignUDP(t *testing.T) {
	ts := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 3 * time.Second}, 1)
	r := dialRaw(t, ts.port, "")
	r.cookie()
	r.params(`{"udp":true,"time":1,"parallel":1,"len":1400,"bandwidth":1000000}`)
	if st := r.state(); st != CreateStreams {
		t.Fatalf("state %v", st)
	}
	foreign, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")},
		&net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: ts.port})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = foreign.Close() }()
	if _, err := foreign.Write(udpConnectMsgBytes); err != nil {
		t.Fatal(err)
	}
	_ = foreign.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 16)
	if n, err := foreign.Read(buf); err == nil {
		t.Fatalf("foreign source got a reply %x", buf[:n])
	}
	// The real client's stream is still accepted.
	own, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = own.Close() }()
	if _, err := own.Write(udpConnectMsgBytes); err != nil {
		t.Fatal(err)
	}
	_ = own.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := own.Read(buf); err != nil || !IsUDPConnectReply(buf[:n]) {
		t.Fatalf("own stream reply %x %v", buf[:n], err)
	}
	if st := r.state(); st != TestStart {
		t.Fatalf("state %v, want TEST_START", st)
	}
	_ = r.c.Close()
	ts.result(t)
}
