//go:build !linux

package udpbatch

import "net"

// Detach returns a Conn over c: outside Linux the socket stays with Go's
// netpoller (see the Linux version).
func Detach(c *net.UDPConn, batch int) (*Detached, error) {
	return &Detached{Conn: New(c, batch)}, nil
}

// Detached is a Conn whose socket is outside Go's netpoller on Linux.
type Detached struct {
	*Conn
}
