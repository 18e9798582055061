package udpbatch

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// DetachedConn is a connected UDP socket taken out of Go's netpoller
// (Detach) seen as a net.Conn: Read and Write move one datagram each and
// block the calling thread, Close wakes a blocked Read (which returns
// net.ErrClosed), and deadlines are not supported. Batched I/O goes
// through Detached.
type DetachedConn struct {
	d            *Detached
	laddr, raddr net.Addr
}

// DetachConn detaches the connected socket c (Detach with batch) and
// returns it as a net.Conn; c is closed.
func DetachConn(c *net.UDPConn, batch int) (*DetachedConn, error) {
	laddr, raddr := c.LocalAddr(), c.RemoteAddr()
	d, err := Detach(c, batch)
	if err != nil {
		return nil, err
	}
	return &DetachedConn{d: d, laddr: laddr, raddr: raddr}, nil
}

// errNoDeadline is the error of a DetachedConn's deadline setters.
var errNoDeadline = fmt.Errorf("detached UDP socket: deadlines: %w", errors.ErrUnsupported)

// Detached returns the socket for batched I/O.
func (c *DetachedConn) Detached() *Detached { return c.d }

// Read reads one datagram into b.
func (c *DetachedConn) Read(b []byte) (int, error) {
	m := []Message{{Buf: b}}
	if _, err := c.d.ReadBatch(m); err != nil {
		return 0, err
	}
	return m[0].N, nil
}

// Write sends b as one datagram.
func (c *DetachedConn) Write(b []byte) (int, error) {
	m := []Message{{Buf: b, N: len(b)}}
	if _, err := c.d.WriteBatch(m); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close closes the socket, waking a blocked Read.
func (c *DetachedConn) Close() error { return c.d.Close() }

// LocalAddr returns the socket's local address.
func (c *DetachedConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the address the socket is connected to.
func (c *DetachedConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline is not supported.
func (c *DetachedConn) SetDeadline(time.Time) error { return errNoDeadline }

// SetReadDeadline is not supported.
func (c *DetachedConn) SetReadDeadline(time.Time) error { return errNoDeadline }

// SetWriteDeadline is not supported.
func (c *DetachedConn) SetWriteDeadline(time.Time) error { return errNoDeadline }
