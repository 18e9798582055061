//go:build !linux

package echo

import (
	"errors"
	"syscall"
)

// reusePortControl reports that SO_REUSEPORT sharing is not supported here.
func reusePortControl(_, _ string, _ syscall.RawConn) error {
	return errors.ErrUnsupported
}
