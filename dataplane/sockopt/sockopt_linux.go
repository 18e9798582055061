package sockopt

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netConner is implemented by wrappers such as *tls.Conn that expose the
// connection underneath; options are applied to that one.
type netConner interface {
	NetConn() net.Conn
}

// rawConn returns the syscall.RawConn under c, unwrapping *tls.Conn and
// similar wrappers (at most a few levels).
func rawConn(c net.Conn) (syscall.RawConn, error) {
	for range 4 {
		if sc, ok := c.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil, fmt.Errorf("raw conn of %T: %w", c, err)
			}
			return rc, nil
		}
		nc, ok := c.(netConner)
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	return nil, fmt.Errorf("%T has no socket: %w", c, ErrNotSupported)
}

// control runs f with the descriptor of c's socket and returns f's error.
func control(c net.Conn, f func(fd int) error) error {
	rc, err := rawConn(c)
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return fmt.Errorf("socket control: %w", err)
	}
	return ferr
}

// TCPInfo reads TCP_INFO from c (a *net.TCPConn, a *tls.Conn over one, or
// anything else with a TCP socket under SyscallConn). Other connections
// return ErrNotSupported.
func TCPInfo(c net.Conn) (Info, error) {
	var ti *unix.TCPInfo
	err := control(c, func(fd int) error {
		var err error
		ti, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("getsockopt TCP_INFO: %w", notSupported(err))
		}
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	us64 := func(v uint64) time.Duration { return time.Duration(min(v, math.MaxInt64/1000)) * time.Microsecond }
	return Info{
		State:         ti.State,
		Retransmits:   uint32(ti.Retransmits),
		TotalRetrans:  ti.Total_retrans,
		Lost:          ti.Lost,
		SndCwnd:       ti.Snd_cwnd,
		SndMSS:        ti.Snd_mss,
		RcvMSS:        ti.Rcv_mss,
		SndSSThr:      ti.Snd_ssthresh,
		SndWnd:        ti.Snd_wnd,
		PMTU:          ti.Pmtu,
		RTT:           us(ti.Rtt),
		RTTVar:        us(ti.Rttvar),
		MinRTT:        us(ti.Min_rtt),
		Reordering:    ti.Reordering,
		BytesAcked:    ti.Bytes_acked,
		BytesReceived: ti.Bytes_received,
		BytesRetrans:  ti.Bytes_retrans,
		PacingRate:    ti.Pacing_rate,
		DeliveryRate:  ti.Delivery_rate,
		BusyTime:      us64(ti.Busy_time),
		RwndLimited:   us64(ti.Rwnd_limited),
		SndbufLimited: us64(ti.Sndbuf_limited),
	}, nil
}

// notSupported marks the errnos a non-TCP socket answers with as
// ErrNotSupported, keeping the errno in the chain.
func notSupported(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}

// SetCongestion selects the TCP congestion control algorithm (TCP_CONGESTION)
// for c. An algorithm the kernel does not have (or does not allow an
// unprivileged process to pick) returns ErrCongestionUnavailable with the
// allowed choices in the message.
func SetCongestion(c net.Conn, name string) error {
	return control(c, func(fd int) error {
		err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EPERM), errors.Is(err, unix.EINVAL):
			return fmt.Errorf("set congestion control %q: %w (allowed: %s): %w",
				name, ErrCongestionUnavailable, allowedCongestion(), err)
		default:
			return fmt.Errorf("set congestion control %q: %w", name, notSupported(err))
		}
	})
}

// allowedCongestion lists the algorithms unprivileged sockets may select.
func allowedCongestion() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// Congestion returns the name of c's TCP congestion control algorithm.
func Congestion(c net.Conn) (string, error) {
	var name string
	err := control(c, func(fd int) error {
		s, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			return fmt.Errorf("get congestion control: %w", notSupported(err))
		}
		name = strings.TrimRight(s, "\x00")
		return nil
	})
	return name, err
}

// SetMSS sets the TCP maximum segment size (TCP_MAXSEG). On a connected
// socket the kernel only lowers it.
func SetMSS(c net.Conn, mss int) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss); err != nil {
			return fmt.Errorf("set TCP_MAXSEG %d: %w", mss, notSupported(err))
		}
		return nil
	})
}

// SetBuffers sets SO_SNDBUF and SO_RCVBUF; 0 leaves that buffer alone.
// The kernel doubles the value and caps it at net.core.{w,r}mem_max.
func SetBuffers(c net.Conn, snd, rcv int) error {
	return control(c, func(fd int) error {
		if snd > 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, snd); err != nil {
				return fmt.Errorf("set SO_SNDBUF %d: %w", snd, err)
			}
		}
		if rcv > 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcv); err != nil {
				return fmt.Errorf("set SO_RCVBUF %d: %w", rcv, err)
			}
		}
		return nil
	})
}

// Buffers returns the effective SO_SNDBUF and SO_RCVBUF sizes.
func Buffers(c net.Conn) (snd, rcv int, err error) {
	err = control(c, func(fd int) error {
		var err error
		if snd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
			return fmt.Errorf("get SO_SNDBUF: %w", err)
		}
		if rcv, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err != nil {
			return fmt.Errorf("get SO_RCVBUF: %w", err)
		}
		return nil
	})
	return snd, rcv, err
}

// SetMaxPacingRate caps the socket's sending rate (SO_MAX_PACING_RATE, in
// bytes per second; the fq qdisc or TCP's internal pacing enforces it).
// Rates at or above 2^64-1 mean unlimited.
func SetMaxPacingRate(c net.Conn, bytesPerSec uint64) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, bytesPerSec); err != nil {
			return fmt.Errorf("set SO_MAX_PACING_RATE %d: %w", bytesPerSec, err)
		}
		return nil
	})
}

// SetTOS sets the IPv4 TOS byte (IP_TOS) or, on an IPv6 socket, the traffic
// class (IPV6_TCLASS), as iperf3's -S does.
func SetTOS(c net.Conn, tos int) error {
	return control(c, func(fd int) error {
		level, opt := unix.IPPROTO_IP, unix.IP_TOS
		if isIPv6(fd) {
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
		}
		if err := unix.SetsockoptInt(fd, level, opt, tos); err != nil {
			return fmt.Errorf("set TOS %#x: %w", tos, err)
		}
		return nil
	})
}

// SetDontFragment sets the DF bit on everything c sends and turns off
// local fragmentation (IP_MTU_DISCOVER / IPV6_MTU_DISCOVER = PMTUDISC_DO),
// as iperf3's --dont-fragment does for UDP.
func SetDontFragment(c net.Conn) error {
	return control(c, func(fd int) error {
		var err error
		if isIPv6(fd) {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
			if err == nil {
				// A dual-stack socket may carry IPv4 too; ignore failure on
				// v6-only sockets.
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			}
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}
		if err != nil {
			return fmt.Errorf("set don't fragment: %w", err)
		}
		return nil
	})
}

// isIPv6 reports whether fd is an AF_INET6 socket.
func isIPv6(fd int) bool {
	d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && d == unix.AF_INET6
}

// setReuse sets SO_REUSEADDR and, when port is true, SO_REUSEPORT on fd.
func setReuse(fd int, port bool) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	if port {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("set SO_REUSEPORT: %w", err)
		}
	}
	return nil
}

// Drops returns how many packets the kernel has dropped on c's socket so
// far (sk_drops from SO_MEMINFO): for UDP, datagrams that found the
// receive buffer full.
func Drops(c net.Conn) (uint64, error) {
	var drops uint64
	err := control(c, func(fd int) error {
		var mi [unix.SK_MEMINFO_VARS]uint32
		l := uint32(unsafe.Sizeof(mi))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
		if errno != 0 {
			return fmt.Errorf("get SO_MEMINFO: %w", notSupported(errno))
		}
		if l <= unix.SK_MEMINFO_DROPS*4 {
			return fmt.Errorf("get SO_MEMINFO: %d bytes: %w", l, ErrNotSupported)
		}
		drops = uint64(mi[unix.SK_MEMINFO_DROPS])
		return nil
	})
	return drops, err
}
