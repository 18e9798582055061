//go:build !linux

package udpaccept

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Acceptor accepts iperf3 UDP streams; this platform has none.
type Acceptor struct{}

// Dropped returns 0: nothing is received on this platform.
func (a *Acceptor) Dropped() uint64 { return 0 }

// Addr returns nil: nothing listens on this platform.
func (a *Acceptor) Addr() net.Addr { return nil }

// NewAcceptor would listen on addr; this platform is not supported.
func NewAcceptor(ctx context.Context, addr string, allow func(netip.AddrPort) bool) (*Acceptor, error) {
	return nil, fmt.Errorf("udp acceptor on %s: %w", addr, ErrNotSupported)
}

// AcceptUDP is not supported on this platform.
func (a *Acceptor) AcceptUDP(ctx context.Context) (net.Conn, []byte, error) {
	return nil, nil, ErrNotSupported
}

// Close does nothing on this platform.
func (a *Acceptor) Close() error { return nil }
