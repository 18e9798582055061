package iperf3proto

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// splicePipeSize is the pipe capacity asked for (the kernel may grant less).
const splicePipeSize = 1 << 20

// spliceDiscard moves everything conn receives into /dev/null with
// splice(2) (socket -> pipe -> /dev/null, no copy to user space), calling
// onBytes per chunk. A lowat above 1 sets SO_RCVLOWAT so that each wakeup
// moves a large chunk; the tail below it then waits for drainQueued. ok is
// false when conn is not a socket splice can read, in which case nothing
// was read.
func spliceDiscard(conn net.Conn, lowat int, onBytes func(int)) (total int64, ok bool, err error) {
	sc, isSC := conn.(syscall.Conn)
	if !isSC {
		return 0, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return 0, false, nil
	}
	defer func() { _ = unix.Close(p[0]); _ = unix.Close(p[1]) }()
	size := splicePipeSize
	if got, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, splicePipeSize); err != nil {
		size = 64 << 10
	} else {
		size = got
	}
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false, nil
	}
	defer func() { _ = unix.Close(null) }()
	if lowat > 1 {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, lowat)
		})
	}
	var rerr error
	eof := false
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Splice(int(fd), nil, p[1], nil, size, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			case err != nil:
				rerr = fmt.Errorf("splice from socket: %w", err)
				return true
			case n == 0:
				eof = true
				return true
			}
			for left := n; left > 0; {
				m, err := unix.Splice(p[0], nil, null, nil, int(left), unix.SPLICE_F_MOVE)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil {
					rerr = fmt.Errorf("splice to /dev/null: %w", err)
					return true
				}
				left -= m
			}
			total += n
			onBytes(int(n))
		}
	})
	if rerr != nil {
		return total, true, rerr
	}
	if err != nil && !eof {
		return total, true, err
	}
	return total, true, nil
}

// maxFinalDrain bounds drainQueued so a peer that keeps sending cannot hold
// the caller.
const maxFinalDrain = 16 << 20

// drainQueued discards, without waiting, what is already queued on conn
// (the tail a receive-low-watermark left unread) and returns the count.
func drainQueued(conn net.Conn) int64 {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var total int64
	buf := make([]byte, 64<<10)
	_ = rc.Control(func(fd uintptr) {
		for total < maxFinalDrain {
			n, err := unix.Read(int(fd), buf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
			total += int64(n)
		}
	})
	return total
}
