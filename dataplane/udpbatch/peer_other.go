//go:build !linux

package udpbatch

import (
	"fmt"
	"net/netip"
)

type peerSys struct{}

func (peerSys) open(_, _ netip.AddrPort) error {
	return fmt.Errorf("watch a local peer's receive queue: %w", ErrUnsupported)
}

func (peerSys) read() (PeerMem, error) {
	return PeerMem{}, fmt.Errorf("read a local peer's receive queue: %w", ErrUnsupported)
}

func (peerSys) close() error { return nil }
