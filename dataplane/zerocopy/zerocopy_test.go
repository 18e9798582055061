package zerocopy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

const ioTimeout = 10 * time.Second

// tcpPair returns both ends of a fresh loopback TCP connection; the caller
// closes them.
func tcpPair(tb testing.TB) (client, server *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// closePair closes both ends when the test ends.
func closePair(tb testing.TB, a, b net.Conn) {
	tb.Cleanup(func() { _ = a.Close(); _ = b.Close() })
}

// writeN writes n bytes from a 256 KiB buffer.
func writeN(w io.Writer, n int64) error {
	buf := make([]byte, 256<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		m, err := w.Write(chunk)
		n -= int64(m)
		if err != nil {
			return err
		}
	}
	return nil
}

// noSyscallConn hides SyscallConn, as *tls.Conn does.
type noSyscallConn struct{ net.Conn }

func TestDiscardCountsExactly(t *testing.T) {
	const size = 8<<20 + 12345
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", func(c net.Conn) net.Conn { return c }},
		{"copy fallback", func(c net.Conn) net.Conn { return noSyscallConn{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			closePair(t, c, s)
			errc := make(chan error, 1)
			go func() {
				err := writeN(c, size)
				_ = c.CloseWrite()
				errc <- err
			}()
			var metered atomic.Int64
			calls := 0
			n, err := Discard(tc.wrap(s), func(k int) { metered.Add(int64(k)); calls++ })
			if err != nil {
				t.Fatalf("Discard: %v", err)
			}
			if n != size || metered.Load() != size {
				t.Fatalf("Discard = %d, metered %d; sent %d", n, metered.Load(), size)
			}
			if calls < 2 {
				t.Fatalf("onBytes called %d times for %d bytes; want live metering", calls, size)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDiscardOverPipe(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		_ = writeN(a, 300000)
		_ = a.Close()
	}()
	n, err := Discard(b, nil)
	if err != nil || n != 300000 {
		t.Fatalf("Discard(net.Pipe) = %d, %v", n, err)
	}
}

// TestDiscardDeadline stops a Discard with a read deadline while the sender
// is paused, then finishes the stream with a second Discard: together they
// must count exactly what was sent.
func TestDiscardDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", func(c net.Conn) net.Conn { return c }},
		{"copy fallback", func(c net.Conn) net.Conn { return noSyscallConn{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const first, second = 3<<20 + 7, 5<<20 + 1
			c, s := tcpPair(t)
			closePair(t, c, s)
			resume := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				err := writeN(c, first)
				<-resume
				if err == nil {
					err = writeN(c, second)
				}
				_ = c.CloseWrite()
				errc <- err
			}()
			if err := s.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			n1, err := Discard(tc.wrap(s), nil)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Discard past its deadline: %v", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("deadline error %v is not a net.Error timeout", err)
			}
			if time.Since(start) > ioTimeout {
				t.Fatal("deadline not honoured")
			}
			close(resume)
			if err := s.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
				t.Fatal(err)
			}
			n2, err := Discard(tc.wrap(s), nil)
			if err != nil {
				t.Fatalf("second Discard: %v", err)
			}
			if n1+n2 != first+second {
				t.Fatalf("Discard counted %d + %d, sent %d", n1, n2, first+second)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDiscardEndsOnClose(t *testing.T) {
	c, s := tcpPair(t)
	closePair(t, c, s)
	if _, err := c.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	counted := make(chan struct{})
	go func() {
		var seen int
		n, err := Discard(s, func(k int) {
			if seen += k; seen == 10 {
				close(counted)
			}
		})
		done <- result{n, err}
	}()
	select {
	case <-counted:
	case <-time.After(ioTimeout):
		t.Fatal("Discard did not count the queued bytes")
	}
	_ = s.Close()
	select {
	case r := <-done:
		if !errors.Is(r.err, net.ErrClosed) || r.n != 10 {
			t.Fatalf("Discard after Close = %d, %v; want 10, net.ErrClosed", r.n, r.err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Discard still running after Close")
	}
}

func TestPayloadContent(t *testing.T) {
	p, err := NewPayload(1000, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	b := p.Bytes()
	if len(b) != 1000 || p.Len() != 1000 {
		t.Fatalf("len %d", len(b))
	}
	if !bytes.HasPrefix(b, []byte("01234567890123")) || b[999] != '9' {
		t.Fatalf("repeating payload starts %q ends %q", b[:14], b[990:])
	}
	for i, v := range b {
		if v != '0'+byte(i%10) {
			t.Fatalf("byte %d = %q", i, v)
		}
	}
	r1, err := NewPayload(4096, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r1.Close() }()
	r2, err := NewPayload(4096, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r2.Close() }()
	if bytes.Equal(r1.Bytes(), r2.Bytes()) || bytes.Equal(r1.Bytes(), make([]byte, 4096)) {
		t.Fatal("random payloads are not random")
	}
	for _, size := range []int{0, -1} {
		if _, err := NewPayload(size, false); err == nil {
			t.Fatalf("NewPayload(%d) accepted", size)
		}
	}
}

func TestPayloadSendExactly(t *testing.T) {
	send := (*Payload).Send
	for _, tc := range []struct {
		name      string
		repeating bool
		wrap      func(net.Conn) net.Conn
		send      func(*Payload, net.Conn, int) (int, error)
	}{
		{"sendfile random", false, func(c net.Conn) net.Conn { return c }, send},
		{"sendfile repeating", true, func(c net.Conn) net.Conn { return c }, send},
		{"send falls back to write", true, func(c net.Conn) net.Conn { return noSyscallConn{c} }, send},
		{"write", false, func(c net.Conn) net.Conn { return c }, (*Payload).Write},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 1 << 20
			p, err := NewPayload(size, tc.repeating)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = p.Close() }()
			c, s := tcpPair(t)
			closePair(t, c, s)
			sizes := []int{size, 1, 0, 131072, size - 1, 7}
			var want bytes.Buffer
			for _, n := range sizes {
				want.Write(p.Bytes()[:n])
			}
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(s)
				got <- b
			}()
			conn := tc.wrap(c)
			for _, n := range sizes {
				sent, err := tc.send(p, conn, n)
				if err != nil || sent != n {
					t.Fatalf("Send(%d) = %d, %v", n, sent, err)
				}
			}
			_ = c.CloseWrite()
			if b := <-got; !bytes.Equal(b, want.Bytes()) {
				t.Fatalf("receiver got %d bytes, want %d (equal: false)", len(b), want.Len())
			}
			if _, err := tc.send(p, conn, size+1); err == nil {
				t.Fatal("Send beyond the payload accepted")
			}
		})
	}
}

// TestPayloadSendDeadline blocks Send on a receiver that does not read: it
// must return at the write deadline with a count the receiver then sees
// exactly.
func TestPayloadSendDeadline(t *testing.T) {
	const size = 16 << 20
	p, err := NewPayload(size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	c, s := tcpPair(t)
	closePair(t, c, s)
	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	sent, err := p.Send(c, size)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send to a stalled receiver: %d, %v", sent, err)
	}
	if sent <= 0 || sent >= size {
		t.Fatalf("Send wrote %d of %d before its deadline", sent, size)
	}
	_ = c.Close()
	if err := s.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != sent || !bytes.Equal(b, p.Bytes()[:sent]) {
		t.Fatalf("receiver got %d bytes, Send reported %d", len(b), sent)
	}
}

func TestPayloadClosed(t *testing.T) {
	p, err := NewPayload(100, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	a, b := net.Pipe()
	defer func() { _ = a.Close(); _ = b.Close() }()
	if _, err := p.Send(a, 10); !errors.Is(err, ErrPayloadClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := p.Write(a, 10); !errors.Is(err, ErrPayloadClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if len(p.Bytes()) != 100 {
		t.Fatal("Bytes gone after Close")
	}
}
