package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// ConnListener is a net.Listener whose connections are pushed in from
// outside (Push, Handoff) instead of being accepted from a socket. Each
// connection keeps its own RemoteAddr, so a consumer that checks the peer's
// address (iperf3's AllowedSource) works unchanged. It also implements
// SetDeadline, which lets a consumer bound Accept the way it does on a
// *net.TCPListener. Its methods are safe for concurrent use.
type ConnListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	// dlChanged is closed and replaced whenever the deadline changes, so a
	// blocked Accept picks up the new one.
	dlChanged chan struct{}
}

var _ net.Listener = (*ConnListener)(nil)

// ErrAcceptTimeout is returned by Accept when the deadline set by
// SetDeadline passes; it satisfies net.Error with Timeout() true and
// errors.Is(err, os.ErrDeadlineExceeded).
var ErrAcceptTimeout error = acceptTimeoutError{}

type acceptTimeoutError struct{}

func (acceptTimeoutError) Error() string   { return "tunnel listener: accept deadline exceeded" }
func (acceptTimeoutError) Timeout() bool   { return true }
func (acceptTimeoutError) Temporary() bool { return true }
func (acceptTimeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// NewConnListener returns an open listener reporting addr as its address.
func NewConnListener(addr net.Addr) *ConnListener {
	return &ConnListener{
		addr:      addr,
		conns:     make(chan net.Conn),
		closed:    make(chan struct{}),
		dlChanged: make(chan struct{}),
	}
}

// Push hands c to the next Accept and with it the ownership of c. It blocks
// until c is accepted, the listener closes (net.ErrClosed) or ctx is done
// (ctx's error); on error Push closes c.
func (l *ConnListener) Push(ctx context.Context, c net.Conn) error {
	err := l.push(ctx, c)
	if err != nil {
		_ = c.Close()
	}
	return err
}

func (l *ConnListener) push(ctx context.Context, c net.Conn) error {
	select {
	case <-l.closed:
		return fmt.Errorf("tunnel listener push: %w", net.ErrClosed)
	default:
	}
	select {
	case l.conns <- c:
		return nil
	case <-l.closed:
		return fmt.Errorf("tunnel listener push: %w", net.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("tunnel listener push: %w", ctx.Err())
	}
}

// Handoff pushes c and then waits until the consumer closes it, so the
// caller can hold on to resources tied to c's lifetime (a pp-link server
// closes the connection when its attach handler returns). When ctx ends
// first, or the push fails, c is closed. It returns nil after the consumer
// closed c.
func (l *ConnListener) Handoff(ctx context.Context, c net.Conn) error {
	hc := &handedConn{Conn: c, done: make(chan struct{})}
	if err := l.Push(ctx, hc); err != nil {
		return err
	}
	select {
	case <-hc.done:
		return nil
	case <-ctx.Done():
		_ = hc.Close()
		return fmt.Errorf("tunnel listener handoff: %w", ctx.Err())
	}
}

// handedConn reports its Close to Handoff.
type handedConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *handedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// CloseWrite half-closes the underlying connection when it supports it.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("tunnel: %T has no CloseWrite: %w", c.Conn, errors.ErrUnsupported)
}

// NetConn returns the wrapped connection (as tls.Conn.NetConn does).
func (c *handedConn) NetConn() net.Conn { return c.Conn }

// Accept waits for a pushed connection. It returns net.ErrClosed after
// Close and ErrAcceptTimeout when the deadline passes.
func (l *ConnListener) Accept() (net.Conn, error) {
	for {
		c, again, err := l.acceptOnce()
		if !again {
			return c, err
		}
	}
}

// acceptOnce waits for a connection under the current deadline; again is
// true when the deadline changed meanwhile.
func (l *ConnListener) acceptOnce() (c net.Conn, again bool, err error) {
	l.mu.Lock()
	dl, changed := l.deadline, l.dlChanged
	l.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return nil, false, ErrAcceptTimeout
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-l.closed:
		return nil, false, fmt.Errorf("tunnel listener accept: %w", net.ErrClosed)
	default:
	}
	select {
	case c := <-l.conns:
		return c, false, nil
	case <-l.closed:
		return nil, false, fmt.Errorf("tunnel listener accept: %w", net.ErrClosed)
	case <-timeout:
		return nil, false, ErrAcceptTimeout
	case <-changed:
		return nil, true, nil
	}
}

// SetDeadline sets the time after which a blocked or later Accept returns
// ErrAcceptTimeout; the zero time removes the deadline.
func (l *ConnListener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = t
	close(l.dlChanged)
	l.dlChanged = make(chan struct{})
	return nil
}

// Close stops the listener: blocked and later Accept and Push calls return
// net.ErrClosed, and a connection whose Push is blocked is closed (its
// Push still returns net.ErrClosed). It is idempotent.
func (l *ConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the address given to NewConnListener.
func (l *ConnListener) Addr() net.Addr { return l.addr }
