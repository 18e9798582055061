//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	co coalescer
}

// truesizeExtra is about what the kernel charges a received datagram's
// buffer beyond its payload (socket buffer bookkeeping, the skb truesize).
const truesizeExtra = 1 << 10

// minPause is the shortest pause worth a sleep and a wake-up.
const minPause = 10 * time.Microsecond

// coalescer holds the state of Detached.Coalesce.
type coalescer struct {
	mu    sync.Mutex    // serializes ReadBatch while coalescing
	pause time.Duration // the longest pause; 0: off
	limit int           // receive buffer bytes one pause may let in: a sixteenth
	nap   time.Duration // the pause before the next read (0: none)
	taken int           // buffer bytes read since start (payload plus truesizeExtra)
	start time.Time     // when the reads since the last decision began
	now   func() time.Time
}

// Coalesce turns on software interrupt coalescing for ReadBatch: after a
// read that did not fill the batch, the next ReadBatch first sleeps in the
// kernel (nanosleep(2) on the calling thread) and then reads. A sender of
// small datagrams then finds the reader neither waiting in poll nor
// needing a wake-up per datagram (on loopback the sending CPU pays for
// waking the reader), and the reader takes what arrived meanwhile in one
// call. The kernel's receive timestamps (EnableRxTimestamps) keep arrival
// times exact. The pause lasts at most pause, and at the rate data came in
// since the previous decision it lets in at most a sixteenth of the
// socket's receive buffer, so it does not overflow it; where that is
// shorter than minPause there is none. Call Coalesce before reading; a
// pause of 0 turns coalescing off.
func (d *Detached) Coalesce(pause time.Duration) error {
	rcvbuf := 0
	var serr error
	if err := d.fd.Control(func(fd uintptr) { rcvbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil {
		serr = err
	}
	if serr != nil {
		return fmt.Errorf("coalesce: read SO_RCVBUF: %w", serr)
	}
	c := &d.co
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pause, c.limit, c.nap, c.taken, c.now = max(pause, 0), rcvbuf/16, 0, 0, time.Now
	c.start = c.now()
	return nil
}

// ReadBatch is Conn.ReadBatch, after the pause Coalesce decided on.
func (d *Detached) ReadBatch(msgs []Message) (int, error) {
	c := &d.co
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pause == 0 {
		return d.Conn.ReadBatch(msgs)
	}
	if c.nap > 0 {
		ts := unix.NsecToTimespec(int64(c.nap))
		c.nap = 0
		_ = unix.Nanosleep(&ts, nil) // EINTR: a shorter pause
	}
	n, err := d.Conn.ReadBatch(msgs)
	if err == nil {
		c.decide(msgs[:n], n == min(len(msgs), d.batch))
	}
	return n, err
}

// decide accounts a read of msgs and, unless it filled the batch (full),
// decides how long the next read pauses first.
func (c *coalescer) decide(msgs []Message, full bool) {
	for i := range msgs {
		c.taken += msgs[i].N + truesizeExtra
	}
	if full {
		return
	}
	now := c.now()
	since := min(now.Sub(c.start), time.Second)
	nap := c.pause
	if c.taken > 0 {
		// The limit at the recent rate; a pause overrun several times
		// (timer slack, a busy CPU) still fits the buffer.
		nap = min(nap, time.Duration(int64(c.limit)*int64(since)/int64(c.taken)))
	}
	c.nap = 0
	if nap >= minPause {
		c.nap = nap
	}
	c.taken, c.start = 0, now
}

// Close shuts the socket down, waits for blocked calls to return and
// closes it. It is idempotent.
func (d *Detached) Close() error { return d.fd.close() }

// SetBlocking makes ReadBatch wait in recvmmsg itself (MSG_WAITFORONE on a
// blocking descriptor) instead of trying, sleeping in ppoll and trying
// again: one system call per wake-up instead of three, the pattern of a
// plain blocking echo loop. WriteBatch stays non-blocking. Close still
// wakes a blocked ReadBatch (the shutdown wakes the receive), which then
// returns net.ErrClosed. Call it before any read or write.
func (d *Detached) SetBlocking() error {
	var ferr error
	err := d.fd.Control(func(fd uintptr) {
		var fl int
		if fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0); ferr == nil {
			_, ferr = unix.FcntlInt(fd, unix.F_SETFL, fl&^unix.O_NONBLOCK)
		}
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("detached socket: set blocking: %w", err)
	}
	d.Conn.sys.blocking = true
	return nil
}

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
			if p.closed.Load() {
				// Woken by close (a blocking receive returns an
				// empty datagram after the shutdown).
				return net.ErrClosed
			}
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

// SyscallConn returns the raw socket (see Detached.SyscallConn).
func (c *DetachedConn) SyscallConn() (syscall.RawConn, error) { return c.d.SyscallConn() }
