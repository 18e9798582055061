//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
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
	return s.sockopt("probe UDP_SEGMENT", &s.gso, func(fd int) error {
		_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
		return err
	})
}

func (s *sysConn) enableGRO() error {
	return s.sockopt("enable UDP_GRO", &s.gro, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1)
	})
}

// sockopt runs opt on the socket and sets flag when it succeeds; what
// names the step in errors. A refusal by the kernel wraps ErrUnsupported.
func (s *sysConn) sockopt(what string, flag *atomic.Bool, opt func(fd int) error) error {
	if s.rcErr != nil {
		return fmt.Errorf("%s: %w", what, s.rcErr)
	}
	var serr error
	if err := s.rc.Control(func(fd uintptr) { serr = opt(int(fd)) }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if serr != nil {
		return fmt.Errorf("%s: %w", what, errors.Join(ErrUnsupported, serr))
	}
	flag.Store(true)
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
