package hostinfo

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Route flags from linux/route.h and linux/ipv6_route.h.
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200
)

// parseStat reads the aggregate "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal (guest time is already part of user). Busy
// time is everything but idle and iowait.
func parseStat(r io.Reader) (cpuTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuTimes{}, fmt.Errorf("/proc/stat cpu line has %d fields", len(f))
		}
		var v [8]uint64
		for i := 1; i < len(f) && i <= len(v); i++ {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat cpu field %d: %w", i, err)
			}
			v[i-1] = n
		}
		var t cpuTimes
		for _, n := range v {
			t.total += n
		}
		idle := v[3] + v[4]
		if idle > t.total {
			return cpuTimes{}, fmt.Errorf("/proc/stat cpu idle %d exceeds total %d", idle, t.total)
		}
		t.busy = t.total - idle
		return t, nil
	}
	if err := sc.Err(); err != nil {
		return cpuTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return cpuTimes{}, fmt.Errorf("/proc/stat has no cpu line")
}

// parseMeminfo reads MemTotal and MemAvailable (kB) from /proc/meminfo.
// Kernels before 3.14 lack MemAvailable; then MemFree + Buffers + Cached
// stands in.
func parseMeminfo(r io.Reader) (memInfo, error) {
	vals := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached":
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return memInfo{}, fmt.Errorf("/proc/meminfo %s has no value", key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return memInfo{}, fmt.Errorf("/proc/meminfo %s: %w", key, err)
		}
		vals[key] = n
	}
	if err := sc.Err(); err != nil {
		return memInfo{}, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return memInfo{}, fmt.Errorf("/proc/meminfo has no MemTotal")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return memInfo{totalKB: total, availableKB: min(avail, total)}, nil
}

// parseLoadavg reads the three load averages from /proc/loadavg.
func parseLoadavg(r io.Reader) ([3]float64, error) {
	var la [3]float64
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return la, fmt.Errorf("read /proc/loadavg: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return la, fmt.Errorf("/proc/loadavg has %d fields", len(f))
	}
	for i := range la {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || !(v >= 0) || math.IsInf(v, 0) {
			return la, fmt.Errorf("/proc/loadavg field %d %q: invalid", i, f[i])
		}
		la[i] = v
	}
	return la, nil
}

// parseRoute returns the interface of the IPv4 default route (destination
// and mask 0, up) with the lowest metric in /proc/net/route, or
// ErrNoDefaultRoute.
func parseRoute(r io.Reader) (string, error) {
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] == "Iface" {
			continue
		}
		dest, err1 := strconv.ParseUint(f[1], 16, 32)
		flags, err2 := strconv.ParseUint(f[3], 16, 32)
		m, err3 := strconv.ParseInt(f[6], 10, 64)
		mask, err4 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return "", fmt.Errorf("/proc/net/route: bad line %q", sc.Text())
		}
		// The kernel prints the u32 metric with %d.
		metric := uint64(uint32(m))
		if dest != 0 || mask != 0 || flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read /proc/net/route: %w", err)
	}
	if best == "" {
		return "", ErrNoDefaultRoute
	}
	return best, nil
}

// parseIPv6Route returns the interface of the IPv6 default route (::/0, up,
// not a reject route, not on lo) with the lowest metric in
// /proc/net/ipv6_route, or ErrNoDefaultRoute. Columns: destination,
// prefix length, source, source prefix length, next hop, metric, refcount,
// use, flags, interface.
func parseIPv6Route(r io.Reader) (string, error) {
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		metric, err1 := strconv.ParseUint(f[5], 16, 32)
		flags, err2 := strconv.ParseUint(f[8], 16, 32)
		if err1 != nil || err2 != nil {
			return "", fmt.Errorf("/proc/net/ipv6_route: bad line %q", sc.Text())
		}
		if strings.Trim(f[0], "0") != "" || f[1] != "00" || f[9] == "lo" ||
			flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[9], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read /proc/net/ipv6_route: %w", err)
	}
	if best == "" {
		return "", ErrNoDefaultRoute
	}
	return best, nil
}

// parseMTU reads /sys/class/net/IF/mtu.
func parseMTU(b []byte) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid mtu %q", strings.TrimSpace(string(b)))
	}
	return n, nil
}

// validIfaceName reports whether name can be used as a path element under
// /sys/class/net.
func validIfaceName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) < 64 && !strings.ContainsAny(name, "/\x00")
}

// Adjtimex status and state values (linux/timex.h).
const (
	staUnsync = 0x0040
	timeError = 5
	// maxClockErrorUS is the kernel's NTP_PHASE_LIMIT (16 s): a maximum error
	// estimate beyond it means the clock is no longer disciplined.
	maxClockErrorUS = 16_000_000
)

// clockSynced interprets adjtimex(2) results: synchronised when the call
// did not return TIME_ERROR, STA_UNSYNC is clear and the kernel's maximum
// error estimate is within the NTP phase limit.
func clockSynced(state int, status int32, maxErrorUS int64) bool {
	return state != timeError && status&staUnsync == 0 && maxErrorUS >= 0 && maxErrorUS < maxClockErrorUS
}
