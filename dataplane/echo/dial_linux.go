//go:build linux

package echo

import (
	"context"
	"fmt"
	"net"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
)

// DialUDP opens a connected UDP socket to addr ("host:port") for Probe,
// with SocketBuffer-sized buffers. On Linux the socket is taken out of Go's
// netpoller (udpbatch.Detach): a socket in the runtime's epoll set wakes
// the runtime's poller thread for every datagram sent (write space) and
// received, and on a two-CPU machine those are two thread switches on the
// CPU the prober needs, inside every round trip (traced with `reflector
// test udp-echo`: each sendto and each reply woke the client's poller
// thread before the prober ran again). The socket has no deadlines; Probe
// stops its receiver by other means.
func DialUDP(ctx context.Context, addr string) (net.Conn, error) {
	uc, err := dialBuffered(ctx, addr)
	if err != nil {
		return nil, err
	}
	dc, err := udpbatch.DetachConn(uc, 1)
	if err != nil {
		return nil, fmt.Errorf("echo dial %s: %w", addr, err)
	}
	return dc, nil
}
