package tunnel

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestConnListenerPushAccept(t *testing.T) {
	ln := NewConnListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000})
	t.Cleanup(func() { _ = ln.Close() })
	a, b := tcpPair(t)
	errc := make(chan error, 1)
	go func() { errc <- ln.Push(context.Background(), b) }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("push: %v", err)
	}
	if c.RemoteAddr().String() != a.LocalAddr().String() {
		t.Fatalf("accepted conn remote %v, want the peer's %v", c.RemoteAddr(), a.LocalAddr())
	}
	if ln.Addr().String() != "127.0.0.1:4000" {
		t.Fatalf("Addr = %v", ln.Addr())
	}
	if _, err := a.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func TestConnListenerClose(t *testing.T) {
	ln := NewConnListener(&net.TCPAddr{})
	a, b := tcpPair(t)
	pushErr := make(chan error, 1)
	go func() { pushErr <- ln.Push(context.Background(), b) }()
	acceptErr := make(chan error, 1)
	// A second listener's Accept shows a blocked Accept ends on Close.
	ln2 := NewConnListener(&net.TCPAddr{})
	go func() {
		_, err := ln2.Accept()
		acceptErr <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	_ = ln2.Close()
	if err := <-pushErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("push after close: %v, want net.ErrClosed", err)
	}
	if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v, want net.ErrClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on closed: %v", err)
	}
	// The pending pushed conn was closed: its peer sees EOF.
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("peer of a refused push can still read")
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConnListenerPushContext(t *testing.T) {
	ln := NewConnListener(&net.TCPAddr{})
	t.Cleanup(func() { _ = ln.Close() })
	_, b := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ln.Push(ctx, b); !errors.Is(err, context.Canceled) {
		t.Fatalf("push with done ctx: %v", err)
	}
}

func TestConnListenerDeadline(t *testing.T) {
	ln := NewConnListener(&net.TCPAddr{})
	t.Cleanup(func() { _ = ln.Close() })
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	// A deadline set while Accept blocks is picked up.
	if err := ln.SetDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	err := <-done
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("accept past deadline: %v", err)
	}
	// Cleared, a push is accepted again.
	_ = ln.SetDeadline(time.Time{})
	_, b := tcpPair(t)
	go func() { _ = ln.Push(context.Background(), b) }()
	if _, err := ln.Accept(); err != nil {
		t.Fatalf("accept after clearing deadline: %v", err)
	}
}

func TestConnListenerHandoff(t *testing.T) {
	ln := NewConnListener(&net.TCPAddr{})
	t.Cleanup(func() { _ = ln.Close() })
	_, b := tcpPair(t)
	ret := make(chan error, 1)
	go func() { ret <- ln.Handoff(context.Background(), b) }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ret:
		t.Fatalf("Handoff returned %v before the consumer closed the conn", err)
	default:
	}
	_ = c.Close()
	if err := <-ret; err != nil {
		t.Fatalf("Handoff: %v", err)
	}

	// ctx ending first closes the conn.
	_, b2 := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ret <- ln.Handoff(ctx, b2) }()
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-ret; !errors.Is(err, context.Canceled) {
		t.Fatalf("Handoff after cancel: %v", err)
	}
	if _, err := c2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on conn closed by Handoff: %v", err)
	}
}
