//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groSpace and gsoSpace are the control room of one UDP_GRO (an int) and
// one UDP_SEGMENT (a uint16) message.
var (
	groSpace = unix.CmsgSpace(4)
	gsoSpace = unix.CmsgSpace(2)
)

func (s *sysConn) enableGSO() error {
	if s.rcErr != nil {
		return fmt.Errorf("enable UDP_SEGMENT: %w", s.rcErr)
	}
	var serr error
	if err := s.rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return fmt.Errorf("probe UDP_SEGMENT: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("probe UDP_SEGMENT: %w", errors.Join(ErrUnsupported, serr))
	}
	s.gso.Store(true)
	return nil
}

func (s *sysConn) enableGRO() error {
	if s.rcErr != nil {
		return fmt.Errorf("enable UDP_GRO: %w", s.rcErr)
	}
	var serr error
	if err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return fmt.Errorf("enable UDP_GRO: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("enable UDP_GRO: %w", errors.Join(ErrUnsupported, serr))
	}
	s.gro.Store(true)
	return nil
}

// putSegment writes a UDP_SEGMENT control message for seg into b and
// returns its length.
func putSegment(b []byte, seg int) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
	return gsoSpace
}

// parseGRO returns the UDP_GRO segment size in b (a control buffer as the
// kernel filled it), or 0 when there is none.
func parseGRO(b []byte) int {
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(b[hdrLen:]))
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next >= len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}
