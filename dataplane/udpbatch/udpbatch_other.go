//go:build !linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
)

// sysConn is the portable fallback: one datagram per system call.
type sysConn struct{}

func (s *sysConn) init(*net.UDPConn, int) {}

func (s *sysConn) readBatch(uc *net.UDPConn, msgs []Message) (int, error) {
	m := &msgs[0]
	n, ap, err := uc.ReadFromUDPAddrPort(m.Buf)
	if err != nil {
		return 0, err
	}
	m.N, m.Addr, m.RxTime, m.Truncated = n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), 0, false
	return 1, nil
}

func (s *sysConn) writeBatch(uc *net.UDPConn, msgs []Message) (int, error) {
	for i := range msgs {
		m := &msgs[i]
		if m.N < 0 || m.N > cap(m.Buf) {
			return i, fmt.Errorf("write: %w: length %d, buffer %d", ErrBadLength, m.N, cap(m.Buf))
		}
		var err error
		if m.Addr.IsValid() {
			_, err = uc.WriteToUDPAddrPort(m.Buf[:m.N], m.Addr)
		} else {
			_, err = uc.Write(m.Buf[:m.N])
		}
		if err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (s *sysConn) enableTimestamps(*net.UDPConn) error {
	return fmt.Errorf("enable receive timestamps: %w", ErrUnsupported)
}
