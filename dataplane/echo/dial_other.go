//go:build !linux

package echo

import (
	"context"
	"fmt"
	"net"
)

// DialUDP opens a connected UDP socket to addr ("host:port") for Probe,
// with SocketBuffer-sized buffers (outside Linux, a plain *net.UDPConn).
func DialUDP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo dial %s: %w", addr, err)
	}
	uc := c.(*net.UDPConn)
	_ = uc.SetReadBuffer(SocketBuffer) // best effort: the kernel may cap it
	_ = uc.SetWriteBuffer(SocketBuffer)
	return uc, nil
}
