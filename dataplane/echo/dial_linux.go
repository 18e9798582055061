//go:build linux

package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
)

// DialUDP opens a connected UDP socket to addr ("host:port") for Probe,
// with SocketBuffer-sized buffers. On Linux the socket is taken out of Go's
// netpoller (udpbatch.Detach): a socket in the runtime's epoll set wakes
// the runtime's poller thread for every datagram sent (write space) and
// received, and on a two-CPU machine those are two thread switches on the
// CPU the prober needs, inside every round trip (traced with `reflector
// test udp-echo`: each sendto and each reply woke the client's poller
// thread before the prober ran again). The socket has no deadlines; Probe
// stops its receiver by other means.
func DialUDP(ctx context.Context, addr string) (net.Conn, error) {
	uc, err := dialBuffered(ctx, addr)
	if err != nil {
		return nil, err
	}
	laddr, raddr := uc.LocalAddr(), uc.RemoteAddr()
	dc, err := udpbatch.Detach(uc, 1)
	if err != nil {
		return nil, fmt.Errorf("echo dial %s: %w", addr, err)
	}
	return &detachedConn{d: dc, laddr: laddr, raddr: raddr}, nil
}

// errNoDeadline is the error of a detached socket's deadline setters.
var errNoDeadline = fmt.Errorf("detached UDP socket: deadlines: %w", errors.ErrUnsupported)

// detachedConn is a connected UDP socket outside the netpoller. Read and
// Write block the calling thread; Close wakes a blocked Read.
type detachedConn struct {
	d            *udpbatch.Detached
	laddr, raddr net.Addr
}

func (c *detachedConn) Read(b []byte) (int, error) {
	m := []udpbatch.Message{{Buf: b}}
	if _, err := c.d.ReadBatch(m); err != nil {
		return 0, err
	}
	return m[0].N, nil
}

func (c *detachedConn) Write(b []byte) (int, error) {
	m := []udpbatch.Message{{Buf: b, N: len(b)}}
	if _, err := c.d.WriteBatch(m); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *detachedConn) Close() error                          { return c.d.Close() }
func (c *detachedConn) LocalAddr() net.Addr                   { return c.laddr }
func (c *detachedConn) RemoteAddr() net.Addr                  { return c.raddr }
func (c *detachedConn) SetDeadline(time.Time) error           { return errNoDeadline }
func (c *detachedConn) SetReadDeadline(time.Time) error       { return errNoDeadline }
func (c *detachedConn) SetWriteDeadline(time.Time) error      { return errNoDeadline }
func (c *detachedConn) SyscallConn() (syscall.RawConn, error) { return c.d.SyscallConn() }
