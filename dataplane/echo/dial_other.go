//go:build !linux

package echo

import (
	"context"
	"net"
)

// DialUDP opens a connected UDP socket to addr ("host:port") for Probe,
// with SocketBuffer-sized buffers (outside Linux, a plain *net.UDPConn).
func DialUDP(ctx context.Context, addr string) (net.Conn, error) {
	return dialBuffered(ctx, addr)
}
