//go:build !linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
)

// sysConn is the portable fallback: one datagram per system call, no
// offloads (gso and gro stay false).
type sysConn struct{ gso, gro atomic.Bool }

func (s *sysConn) init(*net.UDPConn, int) {}

func (s *sysConn) readBatch(uc *net.UDPConn, msgs []Message) (int, error) {
	m := &msgs[0]
	n, ap, err := uc.ReadFromUDPAddrPort(m.Buf)
	if err != nil {
		return 0, err
	}
	m.N, m.Addr, m.RxTime, m.Truncated, m.Seg = n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), 0, false, 0
	return 1, nil
}

func (s *sysConn) writeBatch(uc *net.UDPConn, msgs []Message) (int, error) {
	for i := range msgs {
		m := &msgs[i]
		if m.N < 0 || m.N > cap(m.Buf) {
			return i, fmt.Errorf("write: %w: length %d, buffer %d", ErrBadLength, m.N, cap(m.Buf))
		}
		if m.Seg > 0 && m.Seg < m.N {
			return i, fmt.Errorf("write: segmented message without GSO: %w", ErrUnsupported)
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
