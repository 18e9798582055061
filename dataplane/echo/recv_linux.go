//go:build linux

package echo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// threadLoop sends and receives a run's probes on one locked thread that
// sleeps in ppoll(2) until a reply arrives or a timerfd says the next
// probe is due.
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
//
// The send time is a timerfd in the poll set, armed for the next probe
// just before each send, and ppoll itself has no timeout. Arming or
// cancelling an hrtimer that is the CPU's next event reprograms the clock
// event device, which costs tens of microseconds on this kind of virtual
// machine (timerfd_settime: 12 µs median, 50 µs p90 under perf trace).
// A ppoll timeout put that cost inside every round trip twice, armed
// after the send and cancelled by the reply (traced: 50-60 µs from the
// reply's wake-up to the end of ppoll, against 2 µs for a wake-up by the
// timer); armed before the send it only delays the send.
type threadLoop struct {
	rc  syscall.RawConn
	efd int // eventfd: wake
	tfd int // timerfd: the next probe's send time
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
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		unix.Close(efd)
		return nil
	}
	return &threadLoop{rc: rc, efd: efd, tfd: tfd}
}

// run sends the run's probes and reads replies into p.handle. When the
// sending ends (schedule done, ctx done, or a send error) it reports the
// send error (nil for a normal end) on sent, then keeps receiving until
// wake is called with p.stopping set. It returns the receive error.
func (l *threadLoop) run(ctx context.Context, p *prober, sent chan<- error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	stopWake := context.AfterFunc(ctx, l.wake)
	defer stopWake()

	sending := true
	endSend := func(err error) {
		if sending {
			sending = false
			sent <- err
		}
	}
	var rerr error
	err := l.rc.Read(func(fd uintptr) bool {
		rerr = l.loop(ctx, p, fd, &sending, endSend)
		return true
	})
	endSend(nil)
	if err != nil && rerr == nil {
		rerr = fmt.Errorf("probe: receive: %w", err)
	}
	return rerr
}

// loop is run's work on the socket fd; *sending turns false through
// endSend.
func (l *threadLoop) loop(ctx context.Context, p *prober, fd uintptr, sending *bool, endSend func(error)) error {
	fds := []unix.PollFd{
		{Fd: int32(fd), Events: unix.POLLIN},
		{Fd: int32(l.efd), Events: unix.POLLIN},
		{Fd: int32(l.tfd), Events: unix.POLLIN},
	}
	out := make([]byte, p.cfg.Size)
	in := make([]byte, p.cfg.Size+1) // one extra byte exposes oversized replies
	var seq uint64
	timerFor := uint64(math.MaxUint64) // the probe the timerfd runs for
	failures := 0
	var spinUntil time.Duration // busy-poll for a reply until then (ProbeConfig.Spin)
	for !p.stopping.Load() {
		// Take every reply already in, also between the sends of a
		// late schedule catching up, so none waits behind them.
		if err := readReplies(fd, p, in, &failures); err != nil {
			endSend(nil)
			return err
		}
		if *sending {
			if ctx.Err() != nil || p.scheduleEnds(seq) {
				endSend(nil)
				continue
			}
			due, now := p.due(seq), p.since()
			if due <= now {
				// Arm the next probe's timer before this send:
				// arming costs tens of microseconds here, and after
				// the send it would sit inside the round trip.
				if next := seq + 1; !p.scheduleEnds(next) && p.due(next) > now {
					if err := l.arm(p.due(next) - now); err != nil {
						endSend(nil)
						return err
					}
					timerFor = next
				}
				if err := l.sendProbe(fd, p, out, seq); err != nil {
					endSend(err)
				}
				seq++
				spinUntil = p.spinWindow(seq)
				continue
			}
			if timerFor != seq {
				if err := l.arm(due - now); err != nil {
					endSend(nil)
					return err
				}
				timerFor = seq
			}
		}
		if spinUntil > 0 {
			got, err := spinReply(fd, p, in, &failures, spinUntil)
			if err != nil {
				endSend(nil)
				return err
			}
			spinUntil = 0
			if got {
				continue
			}
		}
		if _, err := unix.Ppoll(fds, nil, nil); err != nil && !errors.Is(err, unix.EINTR) {
			endSend(nil)
			return fmt.Errorf("probe: receive: %w", os.NewSyscallError("ppoll", err))
		}
		if fds[1].Revents&unix.POLLIN != 0 {
			drain(l.efd)
		}
		if fds[2].Revents&unix.POLLIN != 0 {
			drain(l.tfd)
			timerFor = math.MaxUint64
		}
	}
	return nil
}

// readReplies hands every reply waiting on fd to p.handle. It counts
// failed reads in *failures (reset by a good one) and fails when there are
// more than maxRecvErrors in a row: typically ECONNREFUSED while the
// server is down, when every probe shows as lost.
func readReplies(fd uintptr, p *prober, in []byte, failures *int) error {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&in[0])), uintptr(len(in)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			*failures = 0
			p.handle(in[:n], p.since())
		case unix.EAGAIN, unix.EINTR:
			return nil
		default:
			if *failures++; *failures > maxRecvErrors {
				return fmt.Errorf("probe: receive: %w", os.NewSyscallError("recvfrom", errno))
			}
		}
	}
}

// spinWindow is when the busy poll after the send of probe next-1 ends:
// Spin after now, but not past probe next's send time.
func (p *prober) spinWindow(next uint64) time.Duration {
	if p.cfg.Spin <= 0 {
		return 0
	}
	until := p.since() + min(p.cfg.Spin, MaxProbeSpin)
	if !p.scheduleEnds(next) {
		until = min(until, p.due(next))
	}
	return until
}

// spinReply polls fd without sleeping until a reply arrives (handed to
// p.handle; got reports it) or the run's clock reaches until.
func spinReply(fd uintptr, p *prober, in []byte, failures *int, until time.Duration) (got bool, err error) {
	for p.since() < until {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&in[0])), uintptr(len(in)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			*failures = 0
			p.handle(in[:n], p.since())
			return true, nil
		case unix.EAGAIN, unix.EINTR:
		default:
			if *failures++; *failures > maxRecvErrors {
				return false, fmt.Errorf("probe: receive: %w", os.NewSyscallError("recvfrom", errno))
			}
		}
	}
	return false, nil
}

// arm sets the timerfd to run out in d (> 0).
func (l *threadLoop) arm(d time.Duration) error {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(l.tfd, 0, &its, nil); err != nil {
		return fmt.Errorf("probe: %w", os.NewSyscallError("timerfd_settime", err))
	}
	return nil
}

// drain reads an eventfd's or timerfd's counter, which clears it.
func drain(fd int) {
	var b [8]byte
	_, _ = unix.Read(fd, b[:])
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

// close releases the eventfd and the timerfd; call it after run returned.
func (l *threadLoop) close() {
	unix.Close(l.efd)
	unix.Close(l.tfd)
}
