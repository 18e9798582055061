// Package admin is the local control channel between `reflector pair`,
// `reflector peers` and `reflector status` and the running server: a Unix
// stream socket (mode 0600) that carries one JSON request line and one JSON
// response line per connection.
//
//	-> {"op":"pair","ttl_sec":600}
//	<- {"ok":true,"result":{"endpoint_id":"PP-...","token":"...","expires_at":"..."}}
//	<- {"ok":false,"error":"..."}
//
// On Linux the server also checks the connecting process's credentials
// (SO_PEERCRED) and answers only root and its own user; elsewhere the
// socket's file mode is the only guard.
package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Operations the server answers.
const (
	// OpPair opens a pairing window of TTLSec seconds; result PairResult.
	OpPair = "pair"
	// OpPeersList lists the allowlist; result a list of peers.Entry.
	OpPeersList = "peers_list"
	// OpPeersAdd adds ID with Note; result PeersAddResult.
	OpPeersAdd = "peers_add"
	// OpPeersRemove removes ID; result PeersRemoveResult.
	OpPeersRemove = "peers_remove"
	// OpStatus describes the running server; result a free-form object.
	OpStatus = "status"
)

const (
	// MaxRequest is the longest request line the server reads, in bytes.
	MaxRequest = 64 << 10
	// MaxResponse is the longest response line the client reads, in bytes.
	MaxResponse = 16 << 20
	// ConnTimeout bounds each connection on the server side, handler
	// included.
	ConnTimeout = 5 * time.Second
	// CallTimeout bounds Call when its context has no deadline.
	CallTimeout = ConnTimeout + 5*time.Second

	socketMode = 0o600
	dirMode    = 0o700
	// maxConns bounds the connections served at once; more wait in the
	// listen backlog.
	maxConns = 16
	// writeGrace bounds writing the response once the request is done.
	writeGrace = time.Second
	// maxSocketPath is the portable limit of a Unix socket path (sun_path
	// is 104 bytes on the BSDs, 108 on Linux, the final NUL included).
	maxSocketPath = 104
	// probeTimeout bounds the check for a live server at the socket path.
	probeTimeout = time.Second
)

var (
	// ErrAlreadyRunning: a server answers on the socket path.
	ErrAlreadyRunning = errors.New("a reflector server is already running")
	// ErrNotRunning: no server answers at the socket path.
	ErrNotRunning = errors.New("reflector server not running")
	// ErrTooLarge: a request or response line is longer than allowed.
	ErrTooLarge = errors.New("admin message too large")
	// ErrPermission: the connecting process is neither root nor the
	// server's user.
	ErrPermission = errors.New("permission denied")
	// ErrBadRequest: the request is not valid JSON or misses a field.
	ErrBadRequest = errors.New("bad admin request")
)

// Request is one admin request. Fields an operation does not use are left
// empty.
type Request struct {
	Op     string `json:"op"`
	TTLSec int    `json:"ttl_sec,omitempty"`
	ID     string `json:"id,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Response answers one Request.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// PairResult is the result of OpPair.
type PairResult struct {
	EndpointID string    `json:"endpoint_id"`
	Token      string    `json:"token"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// PeersAddResult is the result of OpPeersAdd. Added is false when the peer
// was already allowed.
type PeersAddResult struct {
	Added bool `json:"added"`
}

// PeersRemoveResult is the result of OpPeersRemove. Removed is false when
// the peer was not in the allowlist.
type PeersRemoveResult struct {
	Removed bool `json:"removed"`
}

// Handler carries out admin requests in the server. Its result is encoded
// as JSON into Response.Result; an error becomes Response.Error, so it
// should read well to an operator. ctx ends at the connection's deadline or
// when the Server closes.
type Handler interface {
	HandleAdmin(ctx context.Context, req Request) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request) (any, error)

// HandleAdmin calls f.
func (f HandlerFunc) HandleAdmin(ctx context.Context, req Request) (any, error) { return f(ctx, req) }

// RemoteError is an error the server reported for a request.
type RemoteError struct {
	Op      string
	Message string
}

// Error names the operation and quotes the server's message.
func (e *RemoteError) Error() string { return fmt.Sprintf("reflector server: %s: %s", e.Op, e.Message) }

// Server serves admin requests on a Unix socket.
type Server struct {
	path    string
	h       Handler
	ln      *net.UnixListener
	file    os.FileInfo // the socket file we created, to remove only ours
	timeout time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

// Listen serves h on a Unix socket at path. It creates the parent directory
// (mode 0700) if missing, removes a stale socket that nobody answers on,
// refuses with ErrAlreadyRunning when a server answers there, and refuses
// to replace anything that is not a socket. The socket is bound in a
// private 0700 directory, set to mode 0600 and only then linked at path, so
// it is never reachable with looser permissions whatever the umask.
func Listen(path string, h Handler) (*Server, error) {
	return listen(path, h, ConnTimeout)
}

func listen(path string, h Handler, timeout time.Duration) (*Server, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("admin socket %s: create directory: %w", path, err)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	private, err := os.MkdirTemp(dir, ".admin-")
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		if len(tmp) >= maxSocketPath {
			return nil, fmt.Errorf("admin socket %s: path too long (the socket is bound first at %s, %d bytes; the system allows about %d): %w",
				path, tmp, len(tmp), maxSocketPath, err)
		}
		return nil, fmt.Errorf("admin socket %s: listen: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		_ = ln.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, socketMode); err != nil {
		return fail(fmt.Errorf("admin socket %s: %w", path, err))
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("admin socket %s appeared while starting: %w", path, ErrAlreadyRunning))
		}
		// Some file systems refuse hard links; a rename is atomic too.
		if err := os.Rename(tmp, path); err != nil {
			return fail(fmt.Errorf("admin socket %s: %w", path, err))
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("admin socket %s: %w", path, err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{path: path, h: h, ln: ln, file: fi, timeout: timeout, ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// clearStale makes path free: nothing there, or a socket nobody answers on,
// which it removes.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin socket %s: exists and is not a socket (%v); not replacing it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("admin socket %s: %w", path, ErrAlreadyRunning)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket %s: cannot tell whether a server runs there: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

func (s *Server) serve() {
	defer s.wg.Done()
	sem := make(chan struct{}, maxConns)
	backoff := time.Duration(0)
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-sem }()
			s.handle(c)
		}()
	}
}

// handle answers one connection.
func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	deadline := time.Now().Add(s.timeout)
	_ = c.SetDeadline(deadline)
	resp := s.respond(c, deadline)
	// The request may have used up the deadline (an idle client): allow
	// the answer a short grace of its own.
	_ = c.SetWriteDeadline(time.Now().Add(writeGrace))
	line, err := json.Marshal(resp)
	if err != nil {
		line, _ = json.Marshal(Response{Error: "encode response: " + err.Error()})
	}
	_, _ = c.Write(append(line, '\n'))
}

func (s *Server) respond(c *net.UnixConn, deadline time.Time) Response {
	if err := checkPeer(c); err != nil {
		return Response{Error: err.Error()}
	}
	line, err := readLine(c, MaxRequest)
	if err != nil {
		return Response{Error: "read request: " + err.Error()}
	}
	req, err := parseRequest(line)
	if err != nil {
		return Response{Error: err.Error()}
	}
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	result, err := s.h.HandleAdmin(ctx, req)
	if err != nil {
		return Response{Error: err.Error()}
	}
	if result == nil {
		return Response{OK: true}
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return Response{Error: fmt.Sprintf("encode %s result: %v", req.Op, err)}
	}
	return Response{OK: true, Result: raw}
}

// readLine reads one newline-terminated line of at most max bytes (the
// newline not counted). A final line without newline is accepted at EOF.
func readLine(r io.Reader, max int) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, int64(max)+1))
	line, err := br.ReadBytes('\n')
	switch {
	case err == nil:
		return line[:len(line)-1], nil
	case errors.Is(err, io.EOF) && len(line) > max:
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return line, nil
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("connection closed before a line arrived: %w", io.ErrUnexpectedEOF)
	default:
		return nil, err
	}
}

// parseRequest decodes and checks a request line.
func parseRequest(line []byte) (Request, error) {
	var req Request
	if err := json.Unmarshal(bytes.TrimSpace(line), &req); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	switch req.Op {
	case OpPair, OpPeersList, OpStatus:
	case OpPeersAdd, OpPeersRemove:
		if req.ID == "" {
			return Request{}, fmt.Errorf("%w: %s needs an id", ErrBadRequest, req.Op)
		}
	case "":
		return Request{}, fmt.Errorf("%w: no op", ErrBadRequest)
	default:
		return Request{}, fmt.Errorf("%w: unknown op %q", ErrBadRequest, req.Op)
	}
	return req, nil
}

// Close stops accepting, cancels running handlers' contexts, waits for
// them and removes the socket file (unless another server has replaced
// it since).
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		err := s.ln.Close()
		s.wg.Wait()
		if fi, serr := os.Lstat(s.path); serr == nil && os.SameFile(fi, s.file) {
			if rerr := os.Remove(s.path); rerr != nil && err == nil {
				err = rerr
			}
		}
		if err != nil {
			s.err = fmt.Errorf("close admin socket %s: %w", s.path, err)
		}
	})
	return s.err
}

// Call sends req to the server at path and decodes the result into result
// (when result is non-nil and the server sent one). When nothing listens
// at path the error wraps ErrNotRunning; an error the server reports is a
// *RemoteError. Without a deadline on ctx, Call gives up after CallTimeout.
func Call(ctx context.Context, path string, req Request, result any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CallTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: no server answers at %s: %w", ErrNotRunning, path, err)
		}
		return fmt.Errorf("connect to admin socket %s: %w", path, err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", req.Op, err)
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("send %s request to %s: %w", req.Op, path, err)
	}
	line, err = readLine(c, MaxResponse)
	if err != nil {
		return fmt.Errorf("read %s response from %s: %w", req.Op, path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("decode %s response from %s: %w", req.Op, path, err)
	}
	if !resp.OK {
		return &RemoteError{Op: req.Op, Message: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("decode %s result: %w", req.Op, err)
		}
	}
	return nil
}
