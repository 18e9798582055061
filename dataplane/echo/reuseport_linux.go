//go:build linux

package echo

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortControl is a net.ListenConfig.Control that sets SO_REUSEPORT.
func reusePortControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
