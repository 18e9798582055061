package zerocopy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// PipeSize is the capacity Discard asks for its splice pipe (F_SETPIPE_SZ);
// the kernel may grant less (fs.pipe-max-size, per-user pipe limits).
const PipeSize = 1 << 20

// Discard reads conn until EOF or error and throws the bytes away, calling
// onBytes (when not nil) with each chunk's size, and returns the total. EOF
// is not an error.
//
// On a stream socket it splices socket -> pipe -> /dev/null, so the data
// never reaches user space; the pipe comes from a pool. Connections without
// a socket (TLS, net.Pipe), UDP sockets and sockets splice refuses use a
// read loop over a pooled CopyBufferSize buffer. Deadlines and Close on conn
// apply either way: errors are *net.OpError values as conn.Read returns.
func Discard(conn net.Conn, onBytes func(n int)) (int64, error) {
	if onBytes == nil {
		onBytes = noBytes
	}
	rc := spliceable(conn)
	if rc == nil {
		return discardCopy(conn, onBytes)
	}
	null, err := devNull()
	if err != nil {
		return discardCopy(conn, onBytes)
	}
	pp, err := getPipe()
	if err != nil {
		return discardCopy(conn, onBytes)
	}
	total, dirty, unsupported, err := spliceDiscard(rc, pp, null, onBytes)
	if dirty {
		pp.close()
	} else {
		pipes.Put(pp)
	}
	if unsupported {
		return discardCopy(conn, onBytes)
	}
	if err != nil {
		return total, opError("read", conn, err)
	}
	return total, nil
}

// spliceable returns the raw socket of conn when splice may be tried on it.
func spliceable(conn net.Conn) syscall.RawConn {
	switch conn.(type) {
	case *net.UDPConn, *net.IPConn:
		return nil
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// spliceDiscard runs the splice loop under the runtime poller: on EAGAIN
// the callback returns false and the goroutine parks until the socket is
// readable or its deadline passes. dirty means the pipe may hold data and
// must not be reused; unsupported means splice refused the socket before
// any byte moved.
func spliceDiscard(rc syscall.RawConn, pp *pipe, null int, onBytes func(int)) (total int64, dirty, unsupported bool, err error) {
	var serr error
	eof := false
	rerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Splice(int(fd), nil, pp.w, nil, pp.size, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			case (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)) && total == 0:
				unsupported = true
				return true
			case err != nil:
				serr = os.NewSyscallError("splice", err)
				return true
			case n == 0:
				eof = true
				return true
			}
			for left := int64(n); left > 0; {
				m, err := unix.Splice(pp.r, nil, null, nil, int(left), unix.SPLICE_F_MOVE)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil || m <= 0 {
					dirty = true
					serr = fmt.Errorf("splice to /dev/null: %w", errors.Join(err, errShortSplice))
					return true
				}
				left -= int64(m)
			}
			total += int64(n)
			onBytes(int(n))
		}
	})
	switch {
	case unsupported, eof:
		return total, dirty, unsupported, nil
	case serr != nil:
		return total, dirty, false, serr
	default:
		return total, dirty, false, rerr
	}
}

// errShortSplice marks a splice into /dev/null that moved nothing.
var errShortSplice = errors.New("short splice")

// opError wraps err the way conn.Read/Write would, keeping net.ErrClosed
// and os.ErrDeadlineExceeded reachable with errors.Is.
func opError(op string, conn net.Conn, err error) error {
	return &net.OpError{Op: op, Net: conn.LocalAddr().Network(), Source: conn.LocalAddr(), Addr: conn.RemoteAddr(), Err: err}
}

var (
	nullOnce sync.Once
	nullFD   int
	nullErr  error
)

// devNull returns a process-wide write descriptor for /dev/null.
func devNull() (int, error) {
	nullOnce.Do(func() {
		nullFD, nullErr = unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if nullErr != nil {
			nullErr = fmt.Errorf("open /dev/null: %w", nullErr)
		}
	})
	return nullFD, nullErr
}

// pipe is a pooled, empty splice pipe. A cleanup closes its descriptors if
// the pool drops it.
type pipe struct {
	r, w    int
	size    int
	cleanup runtime.Cleanup
}

var pipes sync.Pool

// getPipe takes an empty pipe from the pool or makes one sized to PipeSize
// (or whatever the kernel grants).
func getPipe() (*pipe, error) {
	if pp, ok := pipes.Get().(*pipe); ok {
		return pp, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	pp := &pipe{r: fds[0], w: fds[1], size: 64 << 10}
	if got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, PipeSize); err == nil {
		pp.size = got
	} else if got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_GETPIPE_SZ, 0); err == nil {
		pp.size = got
	}
	pp.cleanup = runtime.AddCleanup(pp, closeFDs, fds)
	return pp, nil
}

// close closes the pipe now instead of returning it to the pool.
func (pp *pipe) close() {
	pp.cleanup.Stop()
	closeFDs([2]int{pp.r, pp.w})
}

func closeFDs(fds [2]int) {
	_ = unix.Close(fds[0])
	_ = unix.Close(fds[1])
}

// NewPayload returns size bytes of test data: crypto-random, or the
// repeating "0123456789" pattern when repeating is true. The data is also
// written once into a sealed memfd for Send's sendfile path; when memfd is
// unavailable Send writes from memory instead.
func NewPayload(size int, repeating bool) (*Payload, error) {
	b, err := fillPayload(size, repeating)
	if err != nil {
		return nil, err
	}
	p := &Payload{data: b, fd: -1}
	fd, err := memfdWith(b)
	if err == nil {
		p.fd = fd
	}
	return p, nil
}

// memfdWith returns a sealed memfd holding b.
func memfdWith(b []byte) (int, error) {
	fd, err := unix.MemfdCreate("reflector-payload", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("fill memfd: %w", errors.Join(err, errShortSplice))
		}
		off += n
	}
	seals := unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("seal memfd: %w", err)
	}
	return fd, nil
}

// Send writes the first n bytes (n <= Len) of the payload to conn and
// returns how many were sent. On a stream socket it uses sendfile(2) from
// the memfd, parking in the runtime poller while the socket buffer is full
// and continuing after partial sends until n bytes are out or an error
// stops it; a deadline set on conn applies, and errors are *net.OpError
// values as conn.Write returns. Other connections (TLS, UDP, no socket)
// get Write. Measured on loopback, Write beats sendfile (see Write); Send
// is for links where the sender's copy is the bottleneck.
func (p *Payload) Send(conn net.Conn, n int) (int, error) {
	if err := p.checkSend(n); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	p.mu.RLock()
	haveFD := p.fd >= 0
	p.mu.RUnlock()
	rc := spliceable(conn)
	if rc == nil || !haveFD {
		return p.Write(conn, n)
	}
	sent, unsupported, err := p.sendfile(rc, n)
	if unsupported {
		return p.Write(conn, n)
	}
	if err != nil {
		return sent, opError("write", conn, err)
	}
	return sent, nil
}

// sendfile runs the sendfile loop under the runtime poller. unsupported
// means sendfile refused the socket before any byte moved.
func (p *Payload) sendfile(rc syscall.RawConn, n int) (sent int, unsupported bool, err error) {
	var off int64
	var serr error
	werr := rc.Write(func(fd uintptr) bool {
		for sent < n {
			p.mu.RLock()
			if p.closed {
				p.mu.RUnlock()
				serr = ErrPayloadClosed
				return true
			}
			m, err := unix.Sendfile(int(fd), p.fd, &off, n-sent)
			p.mu.RUnlock()
			if m > 0 {
				sent += m
			}
			switch {
			case errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				return false
			case (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)) && sent == 0:
				unsupported = true
				return true
			case err != nil:
				serr = os.NewSyscallError("sendfile", err)
				return true
			case m == 0:
				serr = errShortSplice
				return true
			}
		}
		return true
	})
	if serr != nil {
		return sent, false, serr
	}
	if unsupported {
		return 0, true, nil
	}
	return sent, false, werr
}

// Close releases the memfd; later Sends fail with ErrPayloadClosed. Bytes
// stays readable.
func (p *Payload) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if err != nil {
		return fmt.Errorf("close payload memfd: %w", err)
	}
	return nil
}
