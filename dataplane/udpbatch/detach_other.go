//go:build !linux

package udpbatch

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Detach returns a Conn over c: outside Linux the socket stays with Go's
// netpoller (see the Linux version).
func Detach(c *net.UDPConn, batch int) (*Detached, error) {
	return &Detached{Conn: New(c, batch)}, nil
}

// Detached is a Conn whose socket is outside Go's netpoller on Linux.
type Detached struct {
	*Conn
}

// SetBlocking does nothing outside Linux (see the Linux version).
func (d *Detached) SetBlocking() error { return nil }

// Close closes the socket. It is idempotent.
func (d *Detached) Close() error {
	if err := d.Conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Coalesce is not available outside Linux: reads go through the netpoller
// and the error matches ErrUnsupported.
func (d *Detached) Coalesce(time.Duration) error {
	return fmt.Errorf("coalesce: %w", ErrUnsupported)
}
