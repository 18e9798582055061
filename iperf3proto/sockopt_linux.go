package iperf3proto

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// control runs f on the raw socket of c.
func control(c net.Conn, f func(fd int) error) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("socket option on %T: %w", c, errNotSupported)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return fmt.Errorf("raw conn control: %w", err)
	}
	return ferr
}

// setCongestion selects the TCP congestion control algorithm.
func setCongestion(c net.Conn, name string) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name); err != nil {
			return fmt.Errorf("set TCP_CONGESTION %q: %w", name, err)
		}
		return nil
	})
}

// congestion returns the TCP congestion control algorithm in use.
func congestion(c net.Conn) (string, error) {
	var name string
	err := control(c, func(fd int) error {
		s, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			return fmt.Errorf("get TCP_CONGESTION: %w", err)
		}
		name = s
		return nil
	})
	return name, err
}

// setMSS sets TCP_MAXSEG.
func setMSS(c net.Conn, n int) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, n); err != nil {
			return fmt.Errorf("set TCP_MAXSEG %d: %w", n, err)
		}
		return nil
	})
}

// setPacingRate sets SO_MAX_PACING_RATE in bytes per second.
func setPacingRate(c net.Conn, bytesPerSec uint64) error {
	return control(c, func(fd int) error {
		v := int(min(bytesPerSec, 1<<31-1))
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, v); err != nil {
			return fmt.Errorf("set SO_MAX_PACING_RATE %d: %w", v, err)
		}
		return nil
	})
}

// tcpRetransmits returns the connection's total retransmitted segments.
func tcpRetransmits(c net.Conn) (int64, error) {
	var n int64
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("get TCP_INFO: %w", err)
		}
		n = int64(ti.Total_retrans)
		return nil
	})
	return n, err
}

// hasTCPRetransmits reports whether tcpRetransmits works on this system.
const hasTCPRetransmits = true

// reusePortControl sets SO_REUSEADDR and SO_REUSEPORT before bind.
func reusePortControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			serr = fmt.Errorf("set SO_REUSEADDR: %w", err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			serr = fmt.Errorf("set SO_REUSEPORT: %w", err)
		}
	}); err != nil {
		return fmt.Errorf("raw conn control: %w", err)
	}
	return serr
}
