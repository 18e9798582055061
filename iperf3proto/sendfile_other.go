//go:build !linux

package iperf3proto

import (
	"fmt"
	"net"
)

// sendfileSource is not available on this system.
type sendfileSource struct{}

// newSendfileSource reports that sendfile is not supported here.
func newSendfileSource(_ []byte) (*sendfileSource, error) {
	return nil, fmt.Errorf("sendfile payload: %w", errNotSupported)
}

// send never sends; ok is false.
func (s *sendfileSource) send(_ net.Conn, _ int) (int, bool, error) { return 0, false, nil }

// close does nothing.
func (s *sendfileSource) close() {}
