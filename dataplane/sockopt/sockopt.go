// Package sockopt reads and sets the socket options the data plane needs
// (TCP_INFO, congestion control, MSS, buffers, pacing, TOS, SO_REUSEPORT)
// on ordinary net.Conn values, through SyscallConn().Control so the
// descriptor is never duplicated.
package sockopt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// ErrNotSupported is returned (wrapped) when the connection has no socket
// to act on (e.g. a net.Pipe) or the platform lacks the option.
var ErrNotSupported = errors.New("socket option not supported")

// ErrCongestionUnavailable is returned (wrapped) by SetCongestion when the
// kernel does not offer the named algorithm, or does not allow this process
// to select it.
var ErrCongestionUnavailable = errors.New("congestion control algorithm unavailable")

// Info is the subset of the kernel's TCP_INFO the reflector reports.
type Info struct {
	// State is the TCP state (1 = ESTABLISHED, see tcp_states.h).
	State uint8
	// Retransmits is the number of consecutive unrecovered RTO timeouts
	// right now (tcpi_retransmits); TotalRetrans is what iperf3 reports
	// as "retransmits".
	Retransmits  uint32
	TotalRetrans uint32
	// Lost is the number of segments currently considered lost.
	Lost uint32
	// SndCwnd is the congestion window in segments; multiply by SndMSS
	// for bytes (iperf3's snd_cwnd).
	SndCwnd  uint32
	SndMSS   uint32
	RcvMSS   uint32
	SndSSThr uint32
	// SndWnd is the peer's advertised receive window in bytes (0 on
	// kernels before 5.19).
	SndWnd uint32
	PMTU   uint32
	// RTT, RTTVar and MinRTT are the smoothed round-trip time, its mean
	// deviation and the minimum seen.
	RTT    time.Duration
	RTTVar time.Duration
	MinRTT time.Duration
	// Reordering is the reordering metric in segments.
	Reordering uint32
	// BytesAcked / BytesReceived / BytesRetrans count the connection's
	// payload bytes.
	BytesAcked    uint64
	BytesReceived uint64
	BytesRetrans  uint64
	// PacingRate and DeliveryRate are in bytes per second.
	PacingRate   uint64
	DeliveryRate uint64
	// BusyTime, RwndLimited and SndbufLimited say how long the sender was
	// sending, held by the receive window, and held by the send buffer.
	BusyTime      time.Duration
	RwndLimited   time.Duration
	SndbufLimited time.Duration
}

// ListenConfig returns a net.ListenConfig whose Control sets SO_REUSEADDR
// and, when reusePort is true, SO_REUSEPORT (where the platform has them).
func ListenConfig(reusePort bool) net.ListenConfig {
	return net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setReuse(int(fd), reusePort) }); err != nil {
			return fmt.Errorf("socket control: %w", err)
		}
		return serr
	}}
}

// ListenUDPReusePort opens a UDP socket on addr ("host:port") with
// SO_REUSEADDR and SO_REUSEPORT, so several sockets can share the port.
func ListenUDPReusePort(ctx context.Context, addr string) (*net.UDPConn, error) {
	lc := ListenConfig(true)
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s with SO_REUSEPORT: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}
