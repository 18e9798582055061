//go:build !linux

package iperfrun

import (
	"errors"
	"fmt"
	"time"
)

// ProcessCPU returns the user plus system CPU time the process has used so
// far. It needs Linux's /proc and is not supported elsewhere.
func ProcessCPU(pid int) (time.Duration, error) {
	return 0, fmt.Errorf("cpu time of process %d: %w", pid, errors.ErrUnsupported)
}
