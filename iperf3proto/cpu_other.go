//go:build !unix

package iperf3proto

import "time"

// processCPU is not available on this system; it reports zero.
func processCPU() (user, sys time.Duration) { return 0, 0 }
