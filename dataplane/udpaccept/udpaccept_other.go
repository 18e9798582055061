//go:build !linux

package udpaccept

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

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
