package link

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRequestIDMismatch reports a reply whose request_id is not the one the
// call sent.
var ErrRequestIDMismatch = errors.New("pp-link reply has a different request_id")

// ErrBadTimeout reports a non-positive timeout: every Conn operation is
// bounded by a deadline.
var ErrBadTimeout = errors.New("pp-link timeout must be positive")

// Conn carries pp-link/1 messages over a net.Conn (normally a *tls.Conn).
// Writes are serialised by a mutex, so several goroutines may send on one
// Conn; reads are serialised too. Conn never reads past the frame it
// returns, so after a successful tunnel attach NetConn can be used as a raw
// stream. Every operation sets a deadline and clears it when done.
type Conn struct {
	nc  net.Conn
	rmu sync.Mutex
	wmu sync.Mutex
	cmu sync.Mutex
}

// NewConn wraps nc.
func NewConn(nc net.Conn) *Conn {
	return &Conn{nc: nc}
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.nc.Close() }

// ReadMessage reads and decodes one message within timeout. It returns the
// request_id whenever it was decoded, also alongside a *UnknownTypeError or
// an ErrMalformed error. A clean close by the peer between frames gives
// io.EOF; see ReadFrame for the other framing errors. After a
// *UnknownTypeError the stream is still in step (the frame was consumed
// whole); after any other error close the connection.
func (c *Conn) ReadMessage(timeout time.Duration) (string, Message, error) {
	if timeout <= 0 {
		return "", nil, ErrBadTimeout
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.nc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", nil, fmt.Errorf("set pp-link read deadline: %w", err)
	}
	frame, err := ReadFrame(c.nc)
	if derr := c.nc.SetReadDeadline(time.Time{}); err == nil && derr != nil {
		return "", nil, fmt.Errorf("clear pp-link read deadline: %w", derr)
	}
	if err != nil {
		return "", nil, err
	}
	return Decode(frame)
}

// WriteMessage encodes m with reqID and writes it as one frame within
// timeout.
func (c *Conn) WriteMessage(reqID string, m Message, timeout time.Duration) error {
	if timeout <= 0 {
		return ErrBadTimeout
	}
	payload, err := Encode(reqID, m)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("set pp-link write deadline: %w", err)
	}
	werr := WriteFrame(c.nc, payload)
	if derr := c.nc.SetWriteDeadline(time.Time{}); werr == nil && derr != nil {
		return fmt.Errorf("clear pp-link write deadline: %w", derr)
	}
	return werr
}

// Call sends m with reqID and waits for the reply, all within timeout (for
// the client side; calls on one Conn are serialised). A reply with another
// request_id is an error wrapping ErrRequestIDMismatch. A reply of type
// error, whatever its request_id, is returned as a *Error error with a nil
// Message, so callers can use errors.As and show the server's reason; any
// other reply is returned as decoded (a pointer type).
func (c *Conn) Call(reqID string, m Message, timeout time.Duration) (Message, error) {
	if timeout <= 0 {
		return nil, ErrBadTimeout
	}
	c.cmu.Lock()
	defer c.cmu.Unlock()
	deadline := time.Now().Add(timeout)
	if err := c.WriteMessage(reqID, m, timeout); err != nil {
		return nil, err
	}
	left := time.Until(deadline)
	if left <= 0 {
		return nil, fmt.Errorf("pp-link call %s: no time left for the reply: %w", m.MessageType(), os.ErrDeadlineExceeded)
	}
	gotID, reply, err := c.ReadMessage(left)
	if err != nil {
		return nil, fmt.Errorf("pp-link call %s: %w", m.MessageType(), err)
	}
	// An error frame ends the call whatever its request_id: a server that
	// refuses a peer says why before it closes, possibly before it has
	// read the request.
	if e, ok := reply.(*Error); ok {
		return nil, e
	}
	if gotID != reqID {
		return nil, fmt.Errorf("pp-link call %s: sent %q, got %q: %w", m.MessageType(), reqID, gotID, ErrRequestIDMismatch)
	}
	return reply, nil
}

// RequestIDs produces the request_id sequence the appliance uses: "init-0"
// for the first message (hello), then "req-1", "req-2", ... The zero value
// is ready to use and safe for concurrent use.
type RequestIDs struct {
	n atomic.Uint64
}

// Next returns the next request_id.
func (g *RequestIDs) Next() string {
	n := g.n.Add(1) - 1
	if n == 0 {
		return "init-0"
	}
	return "req-" + strconv.FormatUint(n, 10)
}
