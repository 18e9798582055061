package iperf3proto

import "time"

// cpuMeter measures process CPU utilisation over a wall-clock span, the
// way iperf3 reports cpu_util_total/user/system (percent of one CPU).
type cpuMeter struct {
	wall      time.Time
	user, sys time.Duration
}

func startCPU() cpuMeter {
	u, s := processCPU()
	return cpuMeter{wall: time.Now(), user: u, sys: s}
}

// percent returns total, user and system CPU percent since start.
func (m cpuMeter) percent() (total, user, sys float64) {
	u, s := processCPU()
	wall := time.Since(m.wall).Seconds()
	if wall <= 0 {
		return 0, 0, 0
	}
	du, ds := (u - m.user).Seconds(), (s - m.sys).Seconds()
	return 100 * (du + ds) / wall, 100 * du / wall, 100 * ds / wall
}
