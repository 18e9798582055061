package iperf3proto

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// sendfileSource holds a payload in a memfd so that senders can transmit it
// with sendfile(2), the kernel copying straight from the page cache.
type sendfileSource struct {
	fd   int
	size int
}

// newSendfileSource copies b into a new memfd.
func newSendfileSource(b []byte) (*sendfileSource, error) {
	fd, err := unix.MemfdCreate("iperf3-payload", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("fill memfd: %w", err)
		}
		off += n
	}
	return &sendfileSource{fd: fd, size: len(b)}, nil
}

// send transmits the first n bytes of the payload on conn. ok is false when
// conn cannot take sendfile (nothing was sent; the caller writes instead).
func (s *sendfileSource) send(conn net.Conn, n int) (sent int, ok bool, err error) {
	sc, isSC := conn.(syscall.Conn)
	if !isSC {
		return 0, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	n = min(n, s.size)
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		for sent < n {
			off := int64(sent)
			m, err := unix.Sendfile(int(fd), s.fd, &off, n-sent)
			if m > 0 {
				sent += m
			}
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			case err != nil:
				serr = fmt.Errorf("sendfile: %w", err)
				return true
			case m == 0:
				serr = fmt.Errorf("sendfile: no progress: %w", unix.EPIPE)
				return true
			}
		}
		return true
	})
	if errors.Is(serr, unix.EINVAL) && sent == 0 {
		return 0, false, nil
	}
	if serr != nil {
		return sent, true, serr
	}
	return sent, true, err
}

// close releases the memfd.
func (s *sendfileSource) close() {
	_ = unix.Close(s.fd)
}
