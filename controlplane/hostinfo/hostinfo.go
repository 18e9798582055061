// Package hostinfo measures the host values a path_meta answer reports:
// CPU load, memory, load averages, the MTU of the default route's interface
// and whether the kernel clock is NTP-synchronised.
//
// On Linux everything comes from /proc, /sys and adjtimex(2); elsewhere the
// functions return ErrNotSupported. The /proc parsers take an io.Reader so
// they are tested with canned input on every platform.
package hostinfo

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

var (
	// ErrNotSupported is returned on platforms without the Linux sources.
	ErrNotSupported = errors.New("hostinfo: not supported on this platform")
	// ErrNoDefaultRoute reports a routing table without a usable default
	// route, so the MTU is unknown.
	ErrNoDefaultRoute = errors.New("hostinfo: no default route")
)

// Snapshot is one reading of the host.
type Snapshot struct {
	// CPULoad is the busy share of all CPUs over the last sampling window,
	// as a fraction from 0.0 to 1.0 (the Rust path_meta field documents a
	// fraction, "0.0 - 1.0+").
	CPULoad float64
	// MemoryUsedMB is MemTotal - MemAvailable, in MiB.
	MemoryUsedMB uint64
	// MemoryTotalMB is MemTotal in MiB.
	MemoryTotalMB uint64
	// LoadAvg holds the 1, 5 and 15 minute load averages.
	LoadAvg [3]float64
	// MTU of the default route's interface; 0 when unknown.
	MTU int
	// TimeSynced is true when the kernel clock is synchronised.
	TimeSynced bool
}

// FirstSampleWindow is how long the first Snapshot of a Sampler measures
// CPU time, since it has no earlier sample to compare with. Later calls
// measure since the previous sample; calls closer together than this reuse
// the last value.
const FirstSampleWindow = 100 * time.Millisecond

// cpuTimes is the aggregate CPU time from /proc/stat, in clock ticks.
type cpuTimes struct {
	busy, total uint64
}

// memInfo is the part of /proc/meminfo we use, in KiB.
type memInfo struct {
	totalKB, availableKB uint64
}

// sources are the readers behind a Sampler; tests replace them.
type sources struct {
	cpu     func() (cpuTimes, error)
	mem     func() (memInfo, error)
	loadavg func() ([3]float64, error)
	mtu     func() (int, error)
	synced  func() (bool, error)
	now     func() time.Time
	sleep   func(time.Duration)
}

// Sampler takes Snapshots. It keeps the previous CPU sample so the load is
// the delta between calls. It is safe for concurrent use.
type Sampler struct {
	src sources

	mu       sync.Mutex
	prev     cpuTimes
	prevAt   time.Time
	havePrev bool
	load     float64
}

// Snapshot reads the host. It always returns the values it could read; the
// error joins the failures of the other sources (a missing default route is
// not an error: MTU is then 0). On unsupported platforms the error wraps
// ErrNotSupported.
func (s *Sampler) Snapshot() (Snapshot, error) {
	var snap Snapshot
	var errs []error
	load, err := s.cpuLoad()
	if err != nil {
		errs = append(errs, fmt.Errorf("cpu load: %w", err))
	}
	snap.CPULoad = load
	if mi, err := s.src.mem(); err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	} else {
		snap.MemoryTotalMB = mi.totalKB / 1024
		snap.MemoryUsedMB = (mi.totalKB - min(mi.availableKB, mi.totalKB)) / 1024
	}
	if la, err := s.src.loadavg(); err != nil {
		errs = append(errs, fmt.Errorf("load average: %w", err))
	} else {
		snap.LoadAvg = la
	}
	if mtu, err := s.src.mtu(); err != nil {
		if !errors.Is(err, ErrNoDefaultRoute) {
			errs = append(errs, fmt.Errorf("mtu: %w", err))
		}
	} else {
		snap.MTU = mtu
	}
	if synced, err := s.src.synced(); err != nil {
		errs = append(errs, fmt.Errorf("clock sync: %w", err))
	} else {
		snap.TimeSynced = synced
	}
	return snap, errors.Join(errs...)
}

// cpuLoad returns the busy fraction since the previous sample, taking a
// FirstSampleWindow sample on the first call.
func (s *Sampler) cpuLoad() (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.havePrev {
		first, err := s.src.cpu()
		if err != nil {
			return 0, err
		}
		s.prev, s.prevAt, s.havePrev = first, s.src.now(), true
		s.src.sleep(FirstSampleWindow)
	} else if s.src.now().Sub(s.prevAt) < FirstSampleWindow {
		return s.load, nil
	}
	cur, err := s.src.cpu()
	if err != nil {
		return s.load, err
	}
	if cur.total > s.prev.total && cur.busy >= s.prev.busy {
		busy := float64(cur.busy - s.prev.busy)
		s.load = min(busy/float64(cur.total-s.prev.total), 1)
		s.prev, s.prevAt = cur, s.src.now()
	}
	return s.load, nil
}
