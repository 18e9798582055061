//go:build !linux

package sockopt

import (
	"fmt"
	"net"
)

// TCPInfo reads TCP_INFO; only Linux is supported.
func TCPInfo(c net.Conn) (Info, error) {
	return Info{}, fmt.Errorf("TCP_INFO: %w", ErrNotSupported)
}

// SetCongestion selects the TCP congestion control algorithm; only Linux
// is supported.
func SetCongestion(c net.Conn, name string) error {
	return fmt.Errorf("set congestion control %q: %w", name, ErrNotSupported)
}

// Congestion returns the TCP congestion control algorithm; only Linux is
// supported.
func Congestion(c net.Conn) (string, error) {
	return "", fmt.Errorf("get congestion control: %w", ErrNotSupported)
}

// SetMSS sets TCP_MAXSEG; only Linux is supported.
func SetMSS(c net.Conn, mss int) error {
	return fmt.Errorf("set TCP_MAXSEG %d: %w", mss, ErrNotSupported)
}

// SetBuffers sets SO_SNDBUF and SO_RCVBUF (0 leaves one alone) with the
// portable net API when c is a TCP or UDP connection.
func SetBuffers(c net.Conn, snd, rcv int) error {
	type buffered interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	b, ok := c.(buffered)
	if !ok {
		return fmt.Errorf("set buffers on %T: %w", c, ErrNotSupported)
	}
	if snd > 0 {
		if err := b.SetWriteBuffer(snd); err != nil {
			return fmt.Errorf("set SO_SNDBUF %d: %w", snd, err)
		}
	}
	if rcv > 0 {
		if err := b.SetReadBuffer(rcv); err != nil {
			return fmt.Errorf("set SO_RCVBUF %d: %w", rcv, err)
		}
	}
	return nil
}

// Buffers returns the effective buffer sizes; only Linux is supported.
func Buffers(c net.Conn) (snd, rcv int, err error) {
	return 0, 0, fmt.Errorf("get buffers: %w", ErrNotSupported)
}

// SetMaxPacingRate sets SO_MAX_PACING_RATE; only Linux is supported.
func SetMaxPacingRate(c net.Conn, bytesPerSec uint64) error {
	return fmt.Errorf("set SO_MAX_PACING_RATE: %w", ErrNotSupported)
}

// SetTOS sets IP_TOS / IPV6_TCLASS; only Linux is supported.
func SetTOS(c net.Conn, tos int) error {
	return fmt.Errorf("set TOS: %w", ErrNotSupported)
}

// SetDontFragment sets the DF bit; only Linux is supported.
func SetDontFragment(c net.Conn) error {
	return fmt.Errorf("set don't fragment: %w", ErrNotSupported)
}

// setReuse leaves SO_REUSEADDR to the Go runtime (which sets it on
// listeners) and reports SO_REUSEPORT as not supported.
func setReuse(_ int, port bool) error {
	if port {
		return fmt.Errorf("SO_REUSEPORT: %w", ErrNotSupported)
	}
	return nil
}

// Drops returns the packets the kernel dropped on c's socket; only Linux
// is supported.
func Drops(c net.Conn) (uint64, error) {
	return 0, fmt.Errorf("socket drops: %w", ErrNotSupported)
}
