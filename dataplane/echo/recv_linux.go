//go:build linux

package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// threadLoop sends and receives a run's probes on one locked thread that
// sleeps in ppoll(2) until the next probe is due or a reply arrives.
//
// One thread is what keeps the round trip short. With the sender and the
// receiver on separate threads (goroutines through the netpoller, or even
// two blocking threads) the reply has to wake a thread that has been
// asleep since the previous reply, usually on another, idle CPU; on a
// virtual machine that wake-up costs tens of microseconds, several times
// the loopback round trip. A single thread that sends and then waits for
// the reply is woken by the server's send on the CPU it just left, the
// pattern of sockperf's ping-pong client. The schedule stays open-loop: a
// late reply never delays the next probe.
type threadLoop struct {
	rc  syscall.RawConn
	efd int
}

// newThreadLoop returns a loop for conn, or nil when conn has no raw
// descriptor (Probe then sends and receives through conn).
func newThreadLoop(conn net.Conn) *threadLoop {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil
	}
	return &threadLoop{rc: rc, efd: efd}
}

// run sends the run's probes and reads replies into p.handle. When the
// sending ends (schedule done, ctx done, or a send error) it reports the
// send error (nil for a normal end) on sent, then keeps receiving until
// wake is called with p.stopping set. It returns the receive error.
func (l *threadLoop) run(ctx context.Context, p *prober, sent chan<- error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil {
		// 1 ns timer slack: the default 50 µs would be pacing jitter.
		if unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
			defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
		}
	}
	stopWake := context.AfterFunc(ctx, l.wake)
	defer stopWake()

	out := make([]byte, p.cfg.Size)
	in := make([]byte, p.cfg.Size+1) // one extra byte exposes oversized replies
	sending := true
	endSend := func(err error) {
		if sending {
			sending = false
			sent <- err
		}
	}
	var rerr error
	err := l.rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(l.efd), Events: unix.POLLIN}}
		var seq uint64
		failures := 0
		for !p.stopping.Load() {
			var timeout *unix.Timespec
			if sending {
				due := p.due(seq)
				switch {
				case ctx.Err() != nil, p.cfg.Count > 0 && seq >= uint64(p.cfg.Count),
					p.cfg.Duration > 0 && due >= p.cfg.Duration:
					endSend(nil)
					continue
				}
				if wait := due - p.since(); wait > 0 {
					ts := unix.NsecToTimespec(int64(wait))
					timeout = &ts
				} else {
					if err := l.sendProbe(fd, p, out, seq); err != nil {
						endSend(err)
					}
					seq++
					continue
				}
			}
			n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&in[0])), uintptr(len(in)), unix.MSG_DONTWAIT, 0, 0)
			switch errno {
			case 0:
				failures = 0
				p.handle(in[:n], p.since())
				continue
			case unix.EAGAIN, unix.EINTR:
			default:
				// Typically ECONNREFUSED while the server is down: every
				// probe shows as lost until too many reads in a row fail.
				if failures++; failures > maxRecvErrors {
					rerr = fmt.Errorf("probe: receive: %w", os.NewSyscallError("recvfrom", errno))
					endSend(nil)
					return true
				}
				continue
			}
			if _, err := unix.Ppoll(fds, timeout, nil); err != nil && !errors.Is(err, unix.EINTR) {
				rerr = fmt.Errorf("probe: receive: %w", os.NewSyscallError("ppoll", err))
				endSend(nil)
				return true
			}
			if fds[1].Revents&unix.POLLIN != 0 {
				var b [8]byte
				_, _ = unix.Read(l.efd, b[:])
			}
		}
		return true
	})
	endSend(nil)
	if err != nil && rerr == nil {
		rerr = fmt.Errorf("probe: receive: %w", err)
	}
	return rerr
}

// sendProbe builds probe seq in out and sends it. A full send buffer is
// waited out; ECONNREFUSED (an earlier probe's ICMP error) is ignored.
func (l *threadLoop) sendProbe(fd uintptr, p *prober, out []byte, seq uint64) error {
	h := Header{Seq: seq, ClientSend: int64(p.since())}
	if err := h.Encode(out); err != nil {
		return err
	}
	fillPadding(out[HeaderLen:], seq, h.ClientSend)
	p.sent.Store(seq + 1)
	for {
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&out[0])), uintptr(len(out)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0, unix.ECONNREFUSED:
			return nil
		case unix.EINTR:
		case unix.EAGAIN:
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(fds, int(time.Second/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("probe: send %d: %w", seq, os.NewSyscallError("poll", err))
			}
		default:
			return fmt.Errorf("probe: send %d: %w", seq, os.NewSyscallError("sendto", errno))
		}
	}
}

// wake interrupts the loop's ppoll so it looks at ctx and p.stopping.
func (l *threadLoop) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(l.efd, one[:])
}

// close releases the eventfd; call it after run returned.
func (l *threadLoop) close() { unix.Close(l.efd) }
