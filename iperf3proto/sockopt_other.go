//go:build !linux

package iperf3proto

import (
	"fmt"
	"net"
	"syscall"
)

// setCongestion is not supported on this system.
func setCongestion(_ net.Conn, name string) error {
	return fmt.Errorf("set congestion %q: %w", name, errNotSupported)
}

// congestion is not supported on this system.
func congestion(_ net.Conn) (string, error) {
	return "", fmt.Errorf("get congestion: %w", errNotSupported)
}

// setMSS is not supported on this system.
func setMSS(_ net.Conn, n int) error {
	return fmt.Errorf("set MSS %d: %w", n, errNotSupported)
}

// setPacingRate is not supported on this system.
func setPacingRate(_ net.Conn, bytesPerSec uint64) error {
	return fmt.Errorf("set pacing rate %d: %w", bytesPerSec, errNotSupported)
}

// tcpRetransmits is not supported on this system.
func tcpRetransmits(_ net.Conn) (int64, error) {
	return 0, fmt.Errorf("TCP retransmits: %w", errNotSupported)
}

// hasTCPRetransmits reports whether tcpRetransmits works on this system.
const hasTCPRetransmits = false

// reusePortControl is not supported on this system.
func reusePortControl(_, _ string, _ syscall.RawConn) error {
	return fmt.Errorf("SO_REUSEPORT: %w", errNotSupported)
}
