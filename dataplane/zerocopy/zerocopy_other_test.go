//go:build !linux

package zerocopy

import (
	"testing"
	"time"
)

// cpuTime is not measured on this platform; benchmarks skip the metric.
func cpuTime(testing.TB) time.Duration { return 0 }
