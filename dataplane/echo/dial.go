package echo

import (
	"context"
	"fmt"
	"net"
)

// dialBuffered opens a connected UDP socket to addr with SocketBuffer-sized
// buffers (best effort: the kernel may cap them); DialUDP builds on it.
func dialBuffered(ctx context.Context, addr string) (*net.UDPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo dial %s: %w", addr, err)
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("echo dial %s: not a UDP socket (%T)", addr, c)
	}
	_ = uc.SetReadBuffer(SocketBuffer)
	_ = uc.SetWriteBuffer(SocketBuffer)
	return uc, nil
}
