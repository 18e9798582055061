package selftest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// nicSpeeds reads /sys/class/net.
func nicSpeeds() ([]nic, error) { return readNICs(os.DirFS("/sys/class/net")) }

// fdLimit returns RLIMIT_NOFILE of this process (Go raises the soft limit
// to the hard one at start, so soft is what the server will have too).
func fdLimit() (soft, hard uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	return rl.Cur, rl.Max, nil
}

// udpBufferMax reads net.core.rmem_max and wmem_max.
func udpBufferMax() (rmem, wmem int64, err error) {
	read := func(p string) (int64, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", p, err)
		}
		return parseSysctlInt(b)
	}
	if rmem, err = read("/proc/sys/net/core/rmem_max"); err != nil {
		return 0, 0, err
	}
	if wmem, err = read("/proc/sys/net/core/wmem_max"); err != nil {
		return 0, 0, err
	}
	return rmem, wmem, nil
}
