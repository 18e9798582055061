//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ctrlSpace is the control buffer reserved per received message: one
// SCM_TIMESTAMPNS and one UDP_GRO (offload_linux.go).
var ctrlSpace = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))) + groSpace

// sysState is the kernel-facing scratch space of one direction (read or
// write), allocated once per Conn.
type sysState struct {
	mu    sync.Mutex
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	ctrl  []byte
	cnt   int // messages prepared in hdrs
	off   int // messages done so far
	err   error
	fn    func(fd uintptr) bool // bound once, so RawConn calls do not allocate
}

type sysConn struct {
	rc     syscall.RawConn
	rcErr  error
	v6     bool // the socket is AF_INET6 (possibly dual stack)
	stamps atomic.Bool
	gso    atomic.Bool // UDP_SEGMENT on for writes (offload_linux.go)
	gro    atomic.Bool // UDP_GRO on for reads
	// blocking: the descriptor blocks (Detached.SetBlocking): receives
	// wait in the kernel for the first datagram (MSG_WAITFORONE), sends
	// stay non-blocking (MSG_DONTWAIT). Set before any call.
	blocking bool
	rd, wr   sysState
}

// flags returns the recvmmsg and sendmmsg flags.
func (s *sysConn) flags() (recv, send uintptr) {
	if s.blocking {
		return unix.MSG_WAITFORONE, unix.MSG_DONTWAIT
	}
	return 0, 0
}

func (st *sysState) alloc(batch int, ctrl bool) {
	st.hdrs = make([]unix.Mmsghdr, batch)
	st.iovs = make([]unix.Iovec, batch)
	st.names = make([]unix.RawSockaddrInet6, batch)
	if ctrl {
		st.ctrl = make([]byte, batch*ctrlSpace)
	} else {
		st.ctrl = make([]byte, batch*gsoSpace)
	}
}

func (s *sysConn) init(c *net.UDPConn, batch int) {
	s.rd.alloc(batch, true)
	s.wr.alloc(batch, false)
	s.rd.fn = s.recv
	s.wr.fn = s.send
	s.rc, s.rcErr = c.SyscallConn()
	if s.rcErr != nil {
		return
	}
	domain := -1
	cerr := s.rc.Control(func(fd uintptr) {
		domain, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	})
	switch {
	case cerr == nil && domain == unix.AF_INET6:
		s.v6 = true
	case cerr == nil && domain == unix.AF_INET:
		s.v6 = false
	default:
		la, _ := c.LocalAddr().(*net.UDPAddr)
		s.v6 = la == nil || la.IP.To4() == nil
	}
}

func (s *sysConn) recv(fd uintptr) bool {
	st := &s.rd
	flags, _ := s.flags()
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&st.hdrs[0])), uintptr(st.cnt), flags, 0, 0)
		switch errno {
		case 0:
			st.off, st.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			st.off, st.err = 0, os.NewSyscallError("recvmmsg", errno)
			return true
		}
	}
}

func (s *sysConn) send(fd uintptr) bool {
	st := &s.wr
	_, flags := s.flags()
	for st.off < st.cnt {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&st.hdrs[st.off])), uintptr(st.cnt-st.off), flags, 0, 0)
		switch errno {
		case 0:
			st.off += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			st.err = os.NewSyscallError("sendmmsg", errno)
			return true
		}
	}
	return true
}

func (s *sysConn) readBatch(_ *net.UDPConn, msgs []Message) (int, error) {
	if s.rcErr != nil {
		return 0, fmt.Errorf("recvmmsg: %w", s.rcErr)
	}
	st := &s.rd
	st.mu.Lock()
	defer st.mu.Unlock()
	stamps := s.stamps.Load()
	ctrl := stamps || s.gro.Load()
	for i := range msgs {
		m := &msgs[i]
		iov := &st.iovs[i]
		iov.Base = nil
		if len(m.Buf) > 0 {
			iov.Base = &m.Buf[0]
		}
		iov.SetLen(len(m.Buf))
		h := &st.hdrs[i]
		h.Len = 0
		h.Hdr.Name = (*byte)(unsafe.Pointer(&st.names[i]))
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.Iov = iov
		h.Hdr.SetIovlen(1)
		h.Hdr.Flags = 0
		if ctrl {
			h.Hdr.Control = &st.ctrl[i*ctrlSpace]
			h.Hdr.SetControllen(ctrlSpace)
		} else {
			h.Hdr.Control = nil
			h.Hdr.SetControllen(0)
		}
	}
	st.cnt, st.off, st.err = len(msgs), 0, nil
	if err := s.rc.Read(st.fn); err != nil {
		return 0, err
	}
	if st.err != nil {
		return 0, st.err
	}
	n := st.off
	for i := range n {
		m := &msgs[i]
		h := &st.hdrs[i]
		m.N = min(int(h.Len), len(m.Buf))
		m.Truncated = h.Hdr.Flags&unix.MSG_TRUNC != 0
		m.Addr = decodeAddr(&st.names[i])
		m.RxTime, m.Seg = 0, 0
		if ctrl {
			cb := st.ctrl[i*ctrlSpace : i*ctrlSpace+int(h.Hdr.Controllen)]
			if stamps {
				m.RxTime = parseRxTime(cb)
			}
			m.Seg = parseGRO(cb)
		}
	}
	return n, nil
}

func (s *sysConn) writeBatch(_ *net.UDPConn, msgs []Message) (int, error) {
	if s.rcErr != nil {
		return 0, fmt.Errorf("sendmmsg: %w", s.rcErr)
	}
	st := &s.wr
	st.mu.Lock()
	defer st.mu.Unlock()
	gso := s.gso.Load()
	cnt := 0
	for i := range msgs {
		m := &msgs[i]
		if m.N < 0 || m.N > cap(m.Buf) || (m.Seg > 0 && m.Seg < m.N && !gso) {
			if i > 0 {
				break
			}
			if m.Seg > 0 && m.Seg < m.N && !gso {
				return 0, fmt.Errorf("sendmmsg: segmented message without GSO: %w", ErrUnsupported)
			}
			return 0, fmt.Errorf("sendmmsg: %w: length %d, buffer %d", ErrBadLength, m.N, cap(m.Buf))
		}
		nl, err := encodeAddr(&st.names[i], m.Addr, s.v6)
		if err != nil {
			if i == 0 {
				return 0, fmt.Errorf("sendmmsg to %v: %w", m.Addr, err)
			}
			break
		}
		iov := &st.iovs[i]
		iov.Base = nil
		if m.N > 0 {
			iov.Base = &m.Buf[:m.N][0]
		}
		iov.SetLen(m.N)
		h := &st.hdrs[i]
		h.Len = 0
		h.Hdr.Name = nil
		if nl > 0 {
			h.Hdr.Name = (*byte)(unsafe.Pointer(&st.names[i]))
		}
		h.Hdr.Namelen = nl
		h.Hdr.Iov = iov
		h.Hdr.SetIovlen(1)
		h.Hdr.Control = nil
		h.Hdr.SetControllen(0)
		if m.Seg > 0 && m.Seg < m.N {
			h.Hdr.Control = &st.ctrl[i*gsoSpace]
			h.Hdr.SetControllen(putSegment(st.ctrl[i*gsoSpace:], m.Seg))
		}
		h.Hdr.Flags = 0
		cnt++
	}
	st.cnt, st.off, st.err = cnt, 0, nil
	if err := s.rc.Write(st.fn); err != nil {
		return st.off, err
	}
	return st.off, st.err
}

func (s *sysConn) enableTimestamps(_ *net.UDPConn) error {
	return s.sockopt("enable SO_TIMESTAMPNS", &s.stamps, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
}

func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func setNetPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// decodeAddr turns a kernel socket address into an AddrPort, unmapping
// IPv4-mapped IPv6 addresses. A scope id becomes a numeric zone.
func decodeAddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), netPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, netPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// encodeAddr writes ap into sa in the socket's family and returns the
// address length, or 0 for the zero AddrPort (connected socket).
func encodeAddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, v6 bool) (uint32, error) {
	if !ap.IsValid() {
		return 0, nil
	}
	a := ap.Addr()
	if !v6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0, ErrAddrFamily
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		setNetPort(&sa4.Port, ap.Port())
		return unix.SizeofSockaddrInet4, nil
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
	setNetPort(&sa.Port, ap.Port())
	if z := a.Zone(); z != "" {
		id, err := zoneIndex(z)
		if err != nil {
			return 0, err
		}
		sa.Scope_id = id
	}
	return unix.SizeofSockaddrInet6, nil
}

func zoneIndex(z string) (uint32, error) {
	if id, err := strconv.ParseUint(z, 10, 32); err == nil {
		return uint32(id), nil
	}
	ifi, err := net.InterfaceByName(z)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", z, err)
	}
	return uint32(ifi.Index), nil
}

// parseRxTime returns the SCM_TIMESTAMPNS time in b (a control buffer as
// the kernel filled it), or 0 when there is none.
func parseRxTime(b []byte) int64 {
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS &&
			l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&b[hdrLen]))
			return ts.Nano()
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next >= len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}
