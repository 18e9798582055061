package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers pair with a fixed PairResult, status with a map, and
// reports every other request back as its result.
type echo struct{ calls atomic.Int32 }

func (e *echo) HandleAdmin(ctx context.Context, req Request) (any, error) {
	e.calls.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("handler context has no deadline")
	}
	switch req.Op {
	case OpPair:
		return PairResult{EndpointID: "PP-SELF", Token: "ABCD-EFGH-JKMN-PQRS",
			ExpiresAt: time.Unix(1700000000, 0).Add(time.Duration(req.TTLSec) * time.Second).UTC()}, nil
	case OpStatus:
		return map[string]any{"audit_ok": true, "peers": 3}, nil
	case OpPeersList:
		return nil, nil
	default:
		return req, nil
	}
}

func sockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "run", "admin.sock")
}

func start(t *testing.T, path string, h Handler) *Server {
	t.Helper()
	s, err := Listen(path, h)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestRoundTrip(t *testing.T) {
	path := sockPath(t)
	h := &echo{}
	start(t, path, h)
	ctx := context.Background()

	var pr PairResult
	if err := Call(ctx, path, Request{Op: OpPair, TTLSec: 600}, &pr); err != nil {
		t.Fatalf("pair: %v", err)
	}
	if pr.EndpointID != "PP-SELF" || pr.Token != "ABCD-EFGH-JKMN-PQRS" || !pr.ExpiresAt.Equal(time.Unix(1700000600, 0)) {
		t.Fatalf("pair result = %+v", pr)
	}
	var st map[string]any
	if err := Call(ctx, path, Request{Op: OpStatus}, &st); err != nil {
		t.Fatal(err)
	}
	if st["audit_ok"] != true || st["peers"] != 3.0 {
		t.Fatalf("status = %v", st)
	}
	var got Request
	want := Request{Op: OpPeersAdd, ID: "PP-PEER", Note: "lab"}
	if err := Call(ctx, path, want, &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("handler saw %+v, want %+v", got, want)
	}
	// A handler returning nil: ok without a result; result is untouched.
	list := []string{"unchanged"}
	if err := Call(ctx, path, Request{Op: OpPeersList}, &list); err != nil || len(list) != 1 {
		t.Fatalf("peers_list = %v, %v", list, err)
	}
	if n := h.calls.Load(); n != 4 {
		t.Fatalf("handler called %d times, want 4", n)
	}
}

func TestRequestErrors(t *testing.T) {
	path := sockPath(t)
	boom := errors.New("pairing window duration out of range")
	var calls atomic.Int32
	start(t, path, HandlerFunc(func(ctx context.Context, req Request) (any, error) {
		calls.Add(1)
		if req.Op == OpPair {
			return nil, boom
		}
		return make(chan int), nil // not encodable
	}))
	tests := []struct {
		name    string
		req     Request
		want    string
		handled bool
	}{
		{"handler error", Request{Op: OpPair, TTLSec: 1 << 30}, boom.Error(), true},
		{"unencodable result", Request{Op: OpStatus}, "encode status result", true},
		{"unknown op", Request{Op: "reboot"}, `unknown op "reboot"`, false},
		{"no op", Request{}, "no op", false},
		{"add without id", Request{Op: OpPeersAdd}, "needs an id", false},
		{"remove without id", Request{Op: OpPeersRemove}, "needs an id", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			err := Call(context.Background(), path, tc.req, nil)
			var re *RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Message, tc.want) || re.Op != tc.req.Op {
				t.Fatalf("Call = %v, want a RemoteError containing %q", err, tc.want)
			}
			if handled := calls.Load() != before; handled != tc.handled {
				t.Fatalf("handler called: %v, want %v", handled, tc.handled)
			}
		})
	}
}

// rawExchange writes data to the socket, half-closes and returns the decoded response.
func rawExchange(t *testing.T, path string, data []byte) Response {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		t.Fatalf("response %q: %v", line, err)
	}
	return resp
}

func TestMalformedRequests(t *testing.T) {
	path := sockPath(t)
	h := &echo{}
	start(t, path, h)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"oversize", []byte(strings.Repeat("a", MaxRequest+100)), "too large"},
		{"oversize with newline after the limit", []byte(`{"op":"status","note":"` + strings.Repeat("a", MaxRequest) + "\"}\n"), "too large"},
		{"not JSON", []byte("status\n"), "bad admin request"},
		{"trailing garbage", []byte(`{"op":"status"} {}` + "\n"), "bad admin request"},
		{"wrong type", []byte(`{"op":"pair","ttl_sec":"600"}` + "\n"), "bad admin request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawExchange(t, path, tc.data)
			if resp.OK || !strings.Contains(resp.Error, tc.want) {
				t.Fatalf("response %+v, want an error containing %q", resp, tc.want)
			}
		})
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times for malformed requests", n)
	}
	// A request at exactly the limit, without newline, is accepted.
	req := `{"op":"status","note":"`
	req += strings.Repeat("n", MaxRequest-len(req)-2) + `"}`
	if resp := rawExchange(t, path, []byte(req)); !resp.OK {
		t.Fatalf("request of exactly %d bytes refused: %+v", len(req), resp)
	}
}

func TestSocketModeAndCleanup(t *testing.T) {
	path := sockPath(t)
	s := start(t, path, &echo{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != socketMode {
		t.Fatalf("socket mode = %v, want a socket with mode 0600", fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != dirMode {
		t.Fatalf("created directory mode = %v (%v), want 0700", di.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only the socket", entries, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left after Close (%v)", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Call after Close = %v, want ErrNotRunning", err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	path := sockPath(t)
	start(t, path, &echo{})
	if s, err := Listen(path, &echo{}); !errors.Is(err, ErrAlreadyRunning) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("second Listen = %v, want ErrAlreadyRunning", err)
	}
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); err != nil {
		t.Fatalf("first server stopped answering: %v", err)
	}
}

// staleSocket leaves a socket file at path that nobody listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocket(t *testing.T) {
	path := sockPath(t)
	staleSocket(t, path)
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Call on a stale socket = %v, want ErrNotRunning", err)
	}
	start(t, path, &echo{})
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); err != nil {
		t.Fatalf("Call after replacing the stale socket: %v", err)
	}
}

func TestNotASocket(t *testing.T) {
	path := sockPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, &echo{}); err == nil {
		_ = s.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if got, _ := os.ReadFile(path); string(got) != "keep" {
		t.Fatal("Listen changed the regular file")
	}
}

func TestPathTooLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "admin.sock")
	s, err := Listen(path, &echo{})
	if err == nil {
		_ = s.Close()
		t.Fatal("Listen on an overlong path succeeded")
	}
	if !strings.Contains(err.Error(), "path too long") {
		t.Fatalf("Listen = %v, want a path-too-long explanation", err)
	}
}

func TestNotRunning(t *testing.T) {
	path := sockPath(t)
	err := Call(context.Background(), path, Request{Op: OpStatus}, nil)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Call without a server = %v, want ErrNotRunning naming %s", err, path)
	}
}

func TestCloseKeepsReplacement(t *testing.T) {
	path := sockPath(t)
	a := start(t, path, &echo{})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	start(t, path, &echo{})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); err != nil {
		t.Fatalf("closing the old server removed the new one's socket: %v", err)
	}
}

func TestCloseCancelsHandlers(t *testing.T) {
	path := sockPath(t)
	entered := make(chan struct{})
	s := start(t, path, HandlerFunc(func(ctx context.Context, req Request) (any, error) {
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	errc := make(chan error, 1)
	go func() { errc <- Call(context.Background(), path, Request{Op: OpStatus}, nil) }()
	<-entered
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var re *RemoteError
	if err := <-errc; !errors.As(err, &re) || !strings.Contains(re.Message, "canceled") {
		t.Fatalf("Call during Close = %v, want the handler's cancellation", err)
	}
}

func TestIdleConnectionDeadline(t *testing.T) {
	path := sockPath(t)
	s, err := listen(path, &echo{}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("idle client got no answer before its own deadline: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil || resp.OK || !strings.Contains(resp.Error, "timeout") {
		t.Fatalf("idle client got %q (%v), want a timeout error", line, err)
	}
}

func TestCallContext(t *testing.T) {
	path := sockPath(t)
	start(t, path, HandlerFunc(func(ctx context.Context, req Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Call(ctx, path, Request{Op: OpStatus}, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Call past its context deadline = %v, want a timeout", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	path := sockPath(t)
	h := &echo{}
	start(t, path, h)
	const n = 40 // more than maxConns: the rest wait in the backlog
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pr PairResult
			if err := Call(context.Background(), path, Request{Op: OpPair, TTLSec: i + 1}, &pr); err != nil {
				t.Error(err)
				return
			}
			if want := time.Unix(1700000000+int64(i+1), 0); !pr.ExpiresAt.Equal(want) {
				t.Errorf("call %d got %v, want %v", i, pr.ExpiresAt, want)
			}
		}()
	}
	wg.Wait()
	if got := h.calls.Load(); got != n {
		t.Fatalf("handler called %d times, want %d", got, n)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"pair","ttl_sec":600}`, `{"op":"peers_add","id":"PP-X","note":"n"}`, `{"op":"status"}`,
		`{"op":"peers_remove"}`, `{}`, `[]`, `{"op":1}`, "{\"op\":\"status\"}\n{", "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		line, err := readLine(strings.NewReader(string(data)), 256)
		if err != nil {
			if len(data) == 0 && !errors.Is(err, io.ErrUnexpectedEOF) || len(data) > 0 && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("readLine(%q) = %v", data, err)
			}
			return
		}
		if len(line) > 256 {
			t.Fatalf("readLine returned %d bytes, limit 256", len(line))
		}
		req, err := parseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("parseRequest(%q) = %v, want ErrBadRequest", line, err)
			}
			return
		}
		switch req.Op {
		case OpPair, OpPeersList, OpStatus:
		case OpPeersAdd, OpPeersRemove:
			if req.ID == "" {
				t.Fatalf("%s accepted without an id", req.Op)
			}
		default:
			t.Fatalf("op %q accepted", req.Op)
		}
	})
}
