package iperf3proto

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// truncLen is how many bytes one recv(MSG_TRUNC) may discard.
const truncLen = 16 << 20

// truncDiscard throws away everything a TCP socket receives with
// recv(MSG_TRUNC): the kernel frees the queued data without copying it to
// user space, in one system call per wakeup (splice needed two and a pipe).
// It waits in the runtime poller, so deadlines and Close apply as to Read.
// A maxLowat above 1 turns on the adaptive receive low-watermark (see
// lowat). ok is false when conn is not a TCP socket or the kernel refuses
// MSG_TRUNC, in which case nothing was read.
func truncDiscard(conn net.Conn, maxLowat int, b *ByteBudget, onBytes func(int)) (total int64, ok bool, err error) {
	tc, isTCP := conn.(*net.TCPConn)
	if !isTCP {
		return 0, false, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	lw := lowat{max: maxLowat, last: time.Now()}
	var rerr error
	eof, unsupported := false, false
	err = rc.Read(func(fd uintptr) bool {
		for {
			want := b.take(truncLen)
			if want == 0 {
				rerr = ErrBudgetSpent
				return true
			}
			r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, 0, uintptr(want), unix.MSG_TRUNC, 0, 0)
			n := int64(r)
			if errno != 0 {
				n = 0
			}
			b.give(want - int(n))
			switch {
			case errno == unix.EINTR:
				continue
			case errno == unix.EAGAIN:
				return false
			case (errno == unix.EINVAL || errno == unix.EOPNOTSUPP || errno == unix.EFAULT) && total == 0:
				unsupported = true
				return true
			case errno != 0:
				rerr = fmt.Errorf("recv from socket: %w", errno)
				return true
			case n == 0:
				eof = true
				return true
			}
			total += n
			onBytes(int(n))
			lw.adjust(int(fd), n)
		}
	})
	switch {
	case unsupported:
		return 0, false, nil
	case rerr != nil:
		return total, true, rerr
	case err != nil && !eof:
		return total, true, err
	}
	return total, true, nil
}

// lowatWindow is how much arrival time one wakeup of an adaptive receiver
// should cover: the SO_RCVLOWAT it sets is the recent rate times this,
// capped at max. Fast streams thus wake once per max bytes, while slow
// (paced) ones still report within about this long.
const lowatWindow = 20 * time.Millisecond

// lowat adapts a socket's SO_RCVLOWAT to the rate data arrives at.
type lowat struct {
	max  int       // largest low-watermark; <= 1 disables adapting
	cur  int       // low-watermark set now (0: the kernel's default of 1)
	got  int64     // bytes since last
	last time.Time // when the rate was last measured
}

// adjust accounts n received bytes and, at most once per lowatWindow/4, sets SO_RCVLOWAT to the arrival rate times
// lowatWindow when that differs from the current value by 2x or more.
func (l *lowat) adjust(fd int, n int64) {
	if l.max <= 1 {
		return
	}
	l.got += n
	now := time.Now()
	dt := now.Sub(l.last)
	if dt < lowatWindow/4 && l.cur != 0 {
		return
	}
	want := int64(l.max)
	if dt > 0 {
		want = min(want, l.got*int64(lowatWindow)/int64(dt))
	}
	l.got, l.last = 0, now
	w := int(max(want, 1))
	if w >= 2*l.cur || 2*w <= l.cur {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, w) == nil {
			l.cur = w
		}
	}
}

// maxFinalDrain bounds drainQueued so a peer that keeps sending cannot hold
// the caller.
const maxFinalDrain = 16 << 20

// drainQueued discards, without waiting, what is already queued on conn
// (the tail a receive low-watermark left unread) and returns the count.
func drainQueued(conn net.Conn, b *ByteBudget) int64 {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var total int64
	_ = rc.Control(func(fd uintptr) {
		for total < maxFinalDrain {
			want := b.take(int(maxFinalDrain - total))
			if want == 0 {
				return
			}
			r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, 0, uintptr(want), unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
			if errno != 0 {
				r = 0
			}
			b.give(want - int(r))
			if errno == unix.EINTR {
				continue
			}
			if errno != 0 || r == 0 {
				return
			}
			total += int64(r)
		}
	})
	return total
}
