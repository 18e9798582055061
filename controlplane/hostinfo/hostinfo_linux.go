//go:build linux

package hostinfo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// procRoot and sysNetRoot are where the kernel's text interfaces live.
const (
	procRoot   = "/proc"
	sysNetRoot = "/sys/class/net"
)

// NewSampler returns a Sampler reading /proc, /sys and adjtimex(2).
func NewSampler() *Sampler {
	return &Sampler{src: sources{
		cpu: func() (cpuTimes, error) {
			b, err := os.ReadFile(filepath.Join(procRoot, "stat"))
			if err != nil {
				return cpuTimes{}, fmt.Errorf("read cpu times: %w", err)
			}
			return parseStat(bytes.NewReader(b))
		},
		mem: func() (memInfo, error) {
			b, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
			if err != nil {
				return memInfo{}, fmt.Errorf("read memory info: %w", err)
			}
			return parseMeminfo(bytes.NewReader(b))
		},
		loadavg: func() ([3]float64, error) {
			b, err := os.ReadFile(filepath.Join(procRoot, "loadavg"))
			if err != nil {
				return [3]float64{}, fmt.Errorf("read load average: %w", err)
			}
			return parseLoadavg(bytes.NewReader(b))
		},
		mtu:    DefaultRouteMTU,
		synced: ClockSynced,
		now:    time.Now,
		sleep:  time.Sleep,
	}}
}

// DefaultRouteMTU returns the MTU of the interface that carries the default
// route: the IPv4 one from /proc/net/route, else the IPv6 one from
// /proc/net/ipv6_route; the MTU itself comes from /sys/class/net/IF/mtu.
// Without any default route it returns ErrNoDefaultRoute.
func DefaultRouteMTU() (int, error) {
	iface, err := defaultRouteIface()
	if err != nil {
		return 0, err
	}
	if !validIfaceName(iface) {
		return 0, fmt.Errorf("default route interface %q: invalid name", iface)
	}
	p := filepath.Join(sysNetRoot, iface, "mtu")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read mtu of %s: %w", iface, err)
	}
	mtu, err := parseMTU(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return mtu, nil
}

// defaultRouteIface finds the default route's interface, IPv4 first.
func defaultRouteIface() (string, error) {
	var v4err error
	if b, err := os.ReadFile(filepath.Join(procRoot, "net", "route")); err == nil {
		iface, err := parseRoute(bytes.NewReader(b))
		if err == nil {
			return iface, nil
		}
		v4err = err
	} else if !errors.Is(err, fs.ErrNotExist) {
		v4err = fmt.Errorf("read ipv4 routes: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(procRoot, "net", "ipv6_route"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if v4err != nil {
				return "", v4err
			}
			return "", ErrNoDefaultRoute
		}
		return "", fmt.Errorf("read ipv6 routes: %w", err)
	}
	iface, err := parseIPv6Route(bytes.NewReader(b))
	if errors.Is(err, ErrNoDefaultRoute) && v4err != nil {
		return "", v4err
	}
	return iface, err
}

// ClockSynced reports whether the kernel considers its clock synchronised
// (adjtimex(2) read-only query, no privileges needed): STA_UNSYNC clear, no
// TIME_ERROR state and a maximum error estimate under 16 s.
func ClockSynced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return clockSynced(state, tx.Status, int64(tx.Maxerror)), nil
}
