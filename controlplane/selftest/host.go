package selftest

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// ErrNotSupported is returned by the host probes on platforms without
// the Linux sources (/sys, /proc, getrlimit).
var ErrNotSupported = errors.New("selftest: not supported on this platform")

// nic is one network interface that is up.
type nic struct {
	Name string
	Mbps int // 0 when the driver reports no speed (virtual NICs)
}

// readNICs lists the interfaces in fsys (laid out like /sys/class/net)
// that are up, except loopback, with their link speed.
func readNICs(fsys fs.FS) ([]nic, error) {
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []nic
	for _, e := range ents {
		name := e.Name()
		if name == "lo" || strings.HasPrefix(name, ".") {
			continue
		}
		state, err := fs.ReadFile(fsys, name+"/operstate")
		if err != nil || strings.TrimSpace(string(state)) != "up" {
			continue
		}
		n := nic{Name: name}
		// Reading speed fails with EINVAL on interfaces without one.
		if b, err := fs.ReadFile(fsys, name+"/speed"); err == nil {
			if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
				n.Mbps = v
			}
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b nic) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// parseSysctlInt reads a /proc/sys value holding one non-negative integer.
func parseSysctlInt(b []byte) (int64, error) {
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("sysctl value %q is not a non-negative integer", s)
	}
	return v, nil
}
