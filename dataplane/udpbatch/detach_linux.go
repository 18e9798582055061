//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Detach takes c's socket out of Go's netpoller: c is closed (which
// removes it from the runtime's epoll set) and the returned Conn owns a
// duplicate of its descriptor. Its ReadBatch and WriteBatch try the batch
// call first and, when the socket has nothing (or no room), sleep in the
// kernel in ppoll on the calling goroutine's thread: an arriving datagram
// wakes that thread directly, with no netpoller wake-up on the way. Meant
// for a reader that keeps its thread (runtime.LockOSThread); every
// blocked call holds a thread. Close shuts the socket down, which wakes
// blocked calls; they return net.ErrClosed.
func Detach(c *net.UDPConn, batch int) (*Detached, error) {
	bc := New(c, batch)
	if bc.sys.rcErr != nil {
		return nil, fmt.Errorf("detach %v: %w", c.LocalAddr(), bc.sys.rcErr)
	}
	fd := -1
	var derr error
	if err := bc.sys.rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		derr = err
	}
	if derr != nil {
		return nil, fmt.Errorf("detach %v: dup: %w", c.LocalAddr(), derr)
	}
	if err := c.Close(); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("detach %v: %w", c.LocalAddr(), err)
	}
	r := &pollFD{fd: fd}
	bc.sys.rc = r
	return &Detached{Conn: bc, fd: r}, nil
}

// Detached is a Conn whose socket is outside Go's netpoller (Detach).
// Its UDPConn is closed and serves only for LocalAddr.
type Detached struct {
	*Conn
	fd *pollFD
}

// Close shuts the socket down, waits for blocked calls to return and
// closes it. It is idempotent.
func (d *Detached) Close() error { return d.fd.close() }

// pollFD is a syscall.RawConn over a non-blocking descriptor that waits
// in ppoll instead of the netpoller.
type pollFD struct {
	fd     int
	closed atomic.Bool
	inUse  sync.RWMutex // read-held by calls, held by close
	once   sync.Once
	err    error
}

func (p *pollFD) Control(f func(fd uintptr)) error {
	p.inUse.RLock()
	defer p.inUse.RUnlock()
	if p.closed.Load() {
		return net.ErrClosed
	}
	f(uintptr(p.fd))
	return nil
}

func (p *pollFD) Read(f func(fd uintptr) bool) error  { return p.wait(f, unix.POLLIN) }
func (p *pollFD) Write(f func(fd uintptr) bool) error { return p.wait(f, unix.POLLOUT) }

// wait calls f until it reports done, sleeping in ppoll for events while
// it reports EAGAIN (false).
func (p *pollFD) wait(f func(fd uintptr) bool, events int16) error {
	p.inUse.RLock()
	defer p.inUse.RUnlock()
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: events}}
	for {
		if p.closed.Load() {
			return net.ErrClosed
		}
		if f(uintptr(p.fd)) {
			return nil
		}
		if _, err := unix.Ppoll(fds, nil, nil); err != nil && err != unix.EINTR {
			return os.NewSyscallError("ppoll", err)
		}
	}
}

func (p *pollFD) close() error {
	p.once.Do(func() {
		p.closed.Store(true)
		// Wakes a call sleeping in ppoll (an unconnected UDP socket
		// answers ENOTCONN but is shut down and woken all the same).
		_ = unix.Shutdown(p.fd, unix.SHUT_RDWR)
		p.inUse.Lock()
		p.err = unix.Close(p.fd)
		p.inUse.Unlock()
		if p.err != nil {
			p.err = os.NewSyscallError("close", p.err)
		}
	})
	return p.err
}

// SyscallConn returns the raw socket, whose Read and Write wait in ppoll
// on the calling thread.
func (d *Detached) SyscallConn() (syscall.RawConn, error) { return d.fd, nil }
