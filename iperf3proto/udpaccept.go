package iperf3proto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// UDPAcceptor hands the server one UDP stream at a time, the way iperf3's
// server "accepts" UDP: it takes the first datagram arriving on the test
// port and gives back a socket connected to that datagram's sender.
//
// AcceptUDP returns a connection connected to one client stream and the
// datagram received (normally the 4-byte connect message); it must return
// net.ErrClosed after Close, and must return when ctx is done.
type UDPAcceptor interface {
	AcceptUDP(ctx context.Context) (conn net.Conn, first []byte, err error)
}

// reusePortAcceptor listens on one UDP address with SO_REUSEPORT and, for
// each datagram, binds a new socket to the same address connected to the
// sender; the kernel then steers that sender's packets to the connected
// socket.
type reusePortAcceptor struct {
	ln    *net.UDPConn
	local *net.UDPAddr

	mu     sync.Mutex
	closed bool
}

var _ UDPAcceptor = (*reusePortAcceptor)(nil)

// listenUDPAcceptor opens the listening socket on addr.
func listenUDPAcceptor(ctx context.Context, addr string) (*reusePortAcceptor, error) {
	lc := net.ListenConfig{Control: reusePortControl}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	ln := pc.(*net.UDPConn)
	return &reusePortAcceptor{ln: ln, local: ln.LocalAddr().(*net.UDPAddr)}, nil
}

// AcceptUDP implements UDPAcceptor.
func (a *reusePortAcceptor) AcceptUDP(ctx context.Context) (net.Conn, []byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = a.ln.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 2048)
	for {
		n, peer, err := a.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if a.isClosed() {
				return nil, nil, net.ErrClosed
			}
			if ctx.Err() != nil {
				_ = a.ln.SetReadDeadline(time.Time{})
				return nil, nil, ctx.Err()
			}
			return nil, nil, fmt.Errorf("udp accept read: %w", err)
		}
		d := net.Dialer{LocalAddr: a.local, Control: reusePortControl}
		c, err := d.DialContext(ctx, "udp", peer.String())
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return nil, nil, err
			}
			continue
		}
		return c, buf[:n], nil
	}
}

func (a *reusePortAcceptor) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// Close stops the acceptor; pending and later AcceptUDP calls return
// net.ErrClosed.
func (a *reusePortAcceptor) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	return a.ln.Close()
}
