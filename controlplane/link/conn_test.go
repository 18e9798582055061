package link

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

const testTimeout = 5 * time.Second

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		client.Close()
		r.c.Close()
	})
	return client, r.c
}

// serve answers each request like a minimal reflector until the peer
// closes: hello -> server_hello, get_status -> error 403, unknown types ->
// error 400, anything else -> ok with a wrong request_id for "bad-id".
func serve(t *testing.T, sc *Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			id, m, err := sc.ReadMessage(testTimeout)
			var ute *UnknownTypeError
			switch {
			case errors.Is(err, io.EOF):
				done <- nil
				return
			case errors.As(err, &ute):
				if err := sc.WriteMessage(id, Error{Code: CodeUnexpected, Message: "unexpected message type"}, testTimeout); err != nil {
					done <- err
					return
				}
				continue
			case err != nil:
				done <- err
				return
			}
			var reply Message = OK{}
			switch m.(type) {
			case *Hello:
				reply = ServerHello{Version: ProtocolVersion, Features: []string{FeatureThroughput}}
			case *GetStatus:
				reply = Error{Code: CodePairingRequired, Message: "pair first"}
			}
			if id == "bad-id" {
				id = "other"
			}
			if err := sc.WriteMessage(id, reply, testTimeout); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

func TestConnCall(t *testing.T) {
	c, s := tcpPair(t)
	cc, sc := NewConn(c), NewConn(s)
	done := serve(t, sc)
	var ids RequestIDs

	reply, err := cc.Call(ids.Next(), Hello{Version: "1.0", Features: []string{"throughput", "udp_echo"}}, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if sh, ok := reply.(*ServerHello); !ok || sh.Version != "1.0" {
		t.Fatalf("hello reply = %#v", reply)
	}

	_, err = cc.Call(ids.Next(), GetStatus{}, testTimeout)
	var le *Error
	if !errors.As(err, &le) || le.Code != CodePairingRequired {
		t.Fatalf("get_status: err = %v, want *Error 403", err)
	}

	if _, err := cc.Call("bad-id", GetPathMeta{}, testTimeout); !errors.Is(err, ErrRequestIDMismatch) {
		t.Fatalf("mismatched id: err = %v", err)
	}

	// An unknown type is answered with 400 and the connection goes on.
	if err := cc.WriteMessage("req-9", notStruct2{Kind: "x"}, testTimeout); err != nil {
		t.Fatal(err)
	}
	id, m, err := cc.ReadMessage(testTimeout)
	if err != nil || id != "req-9" {
		t.Fatalf("unknown type reply: id %q err %v", id, err)
	}
	if e, ok := m.(*Error); !ok || e.Code != CodeUnexpected {
		t.Fatalf("unknown type reply = %#v", m)
	}
	if _, err := cc.Call(ids.Next(), SessionClose{TestID: "t"}, testTimeout); err != nil {
		t.Fatalf("call after unknown type: %v", err)
	}

	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// notStruct2 is a message type the decoder does not know.
type notStruct2 struct {
	Kind string `json:"kind"`
}

func (notStruct2) MessageType() string { return "heartbeat" }

func TestConnReadTimeout(t *testing.T) {
	c, _ := tcpPair(t)
	cc := NewConn(c)
	_, _, err := cc.ReadMessage(20 * time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if _, err := cc.Call("r", OK{}, 20*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("call err = %v, want a timeout", err)
	}
}

func TestConnRejectsNonPositiveTimeout(t *testing.T) {
	c, _ := tcpPair(t)
	cc := NewConn(c)
	if _, _, err := cc.ReadMessage(0); !errors.Is(err, ErrBadTimeout) {
		t.Fatalf("ReadMessage(0): %v", err)
	}
	if err := cc.WriteMessage("r", OK{}, -1); !errors.Is(err, ErrBadTimeout) {
		t.Fatalf("WriteMessage(-1): %v", err)
	}
	if _, err := cc.Call("r", OK{}, 0); !errors.Is(err, ErrBadTimeout) {
		t.Fatalf("Call(0): %v", err)
	}
}

func TestConnMalformedFrame(t *testing.T) {
	c, s := tcpPair(t)
	sc := NewConn(s)
	if err := WriteFrame(c, []byte(`{"request_id":"req-1","payload":{"type":"hello"}}`)); err != nil {
		t.Fatal(err)
	}
	id, _, err := sc.ReadMessage(testTimeout)
	if !errors.Is(err, ErrMalformed) || id != "req-1" {
		t.Fatalf("id %q err %v, want req-1 and ErrMalformed", id, err)
	}
	if _, err := c.Write([]byte{0x7f, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sc.ReadMessage(testTimeout); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized: err = %v", err)
	}
}

// Concurrent writers never interleave frames.
func TestConnConcurrentWrites(t *testing.T) {
	c, s := tcpPair(t)
	cc, sc := NewConn(c), NewConn(s)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			big := make([]byte, 20_000)
			for i := range big {
				big[i] = byte('a' + w)
			}
			for range each {
				if err := cc.WriteMessage("w", Error{Code: w, Message: string(big)}, testTimeout); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	counts := make([]int, writers)
	for range writers * each {
		_, m, err := sc.ReadMessage(testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		e := m.(*Error)
		for i := range len(e.Message) {
			if e.Message[i] != byte('a'+e.Code) {
				t.Fatalf("frame from writer %d corrupted at %d", e.Code, i)
			}
		}
		counts[e.Code]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w, n := range counts {
		if n != each {
			t.Fatalf("writer %d: %d frames, want %d", w, n, each)
		}
	}
}

// After a tunnel attach the connection is a raw pipe: bytes the client sent
// right behind the attach frame are still there, and deadlines are cleared.
func TestConnRawAfterAttach(t *testing.T) {
	c, s := tcpPair(t)
	rec := &deadlineRecorder{Conn: s}
	sc := NewConn(rec)
	frame, err := Encode("attach-0", TunnelAttach{TestID: "t-1", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	buf = append(buf, byte(len(frame)>>24), byte(len(frame)>>16), byte(len(frame)>>8), byte(len(frame)))
	buf = append(buf, frame...)
	buf = append(buf, "iperf3 cookie..."...)
	if _, err := c.Write(buf); err != nil {
		t.Fatal(err)
	}
	_, m, err := sc.ReadMessage(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := m.(*TunnelAttach); !ok || a.TestID != "t-1" {
		t.Fatalf("attach = %#v", m)
	}
	if err := sc.WriteMessage("attach-0", TunnelAttachResult{OK: true}, testTimeout); err != nil {
		t.Fatal(err)
	}
	if !rec.cleared() {
		t.Fatalf("deadlines left set: %v", rec.last)
	}
	raw := make([]byte, len("iperf3 cookie..."))
	if _, err := io.ReadFull(sc.NetConn(), raw); err != nil {
		t.Fatalf("raw read after attach: %v", err)
	}
	if string(raw) != "iperf3 cookie..." {
		t.Fatalf("raw = %q", raw)
	}
}

// deadlineRecorder remembers the last read and write deadlines set.
type deadlineRecorder struct {
	net.Conn
	mu   sync.Mutex
	last [2]time.Time
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.last[0] = t
	d.mu.Unlock()
	return d.Conn.SetReadDeadline(t)
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.last[1] = t
	d.mu.Unlock()
	return d.Conn.SetWriteDeadline(t)
}

func (d *deadlineRecorder) cleared() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last[0].IsZero() && d.last[1].IsZero()
}

// TestConnLimitReads: with LimitReads a frame over the limit is refused,
// and a frame whose first byte arrived must be complete within the frame
// timeout, however long the idle timeout (issue 11, item 1).
func TestConnLimitReads(t *testing.T) {
	c, s := tcpPair(t)
	sc := NewConn(s)
	sc.LimitReads(MaxRequestSize, 200*time.Millisecond)
	if _, err := c.Write(header(MaxRequestSize + 1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sc.ReadMessage(testTimeout); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame over the limit: err = %v, want ErrFrameTooLarge", err)
	}

	c, s = tcpPair(t)
	sc = NewConn(s)
	sc.LimitReads(MaxRequestSize, 200*time.Millisecond)
	if _, err := c.Write(append(header(100), `{"request_id"`...)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err := sc.ReadMessage(time.Hour)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled frame: err = %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("stalled frame was allowed %v (frame timeout 200ms, idle 1h)", el)
	}
}
