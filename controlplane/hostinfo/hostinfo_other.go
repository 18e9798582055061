//go:build !linux

package hostinfo

import "time"

// NewSampler returns a Sampler whose Snapshot reports ErrNotSupported.
func NewSampler() *Sampler {
	return &Sampler{src: sources{
		cpu:     func() (cpuTimes, error) { return cpuTimes{}, ErrNotSupported },
		mem:     func() (memInfo, error) { return memInfo{}, ErrNotSupported },
		loadavg: func() ([3]float64, error) { return [3]float64{}, ErrNotSupported },
		mtu:     DefaultRouteMTU,
		synced:  ClockSynced,
		now:     time.Now,
		sleep:   time.Sleep,
	}}
}

// DefaultRouteMTU returns ErrNotSupported outside Linux.
func DefaultRouteMTU() (int, error) { return 0, ErrNotSupported }

// ClockSynced returns ErrNotSupported outside Linux.
func ClockSynced() (bool, error) { return false, ErrNotSupported }
