package admin

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// checkPeer allows root and the server's own user, by the credentials the
// kernel recorded when the client connected (SO_PEERCRED).
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if !uidAllowed(cred.Uid, uint32(os.Getuid())) {
		return fmt.Errorf("%w: uid %d is neither root nor the server's uid %d", ErrPermission, cred.Uid, os.Getuid())
	}
	return nil
}

// uidAllowed reports whether a client with uid peer may talk to a server
// running as uid self.
func uidAllowed(peer, self uint32) bool {
	return peer == 0 || peer == self
}
