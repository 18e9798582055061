// Package freeport finds ports of 127.0.0.1 that are free when it is asked,
// for the tests and the benchmark tools: one port chosen by the kernel, or a
// range of consecutive ports below the kernel's ephemeral range (for a
// data_port_range), checked by binding them.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// floor is the lowest port Range hands out: above the well-known services a
// developer machine may run.
const floor = 20000

// Port returns a port of 127.0.0.1 that is free for UDP, and for TCP too
// when tcp is set (iperf3 and our control port use one number for both).
func Port(tcp bool) (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		if !tcp {
			_ = pc.Close()
			return port, nil
		}
		ln, terr := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = pc.Close()
		if terr == nil {
			_ = ln.Close()
			return port, nil
		}
	}
	return 0, errors.New("find a free port: no port free for both TCP and UDP")
}

// Range returns the first of n consecutive ports of 127.0.0.1 that are free
// for TCP and UDP, between 20000 and the start of the kernel's ephemeral
// range (so that client sockets do not take them meanwhile), and not
// containing avoid (0 avoids nothing).
func Range(n, avoid int) (int, error) {
	hi := ephemeralStart()
	if hi-floor < 2*n {
		return 0, fmt.Errorf("find %d free ports: the ephemeral range starts at %d, too close to %d", n, hi, floor)
	}
	for range 50 {
		base := floor + rand.IntN(hi-floor-n+1)
		if avoid >= base && avoid < base+n {
			continue
		}
		if free(base, n) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("find %d free consecutive ports in %d-%d: none after 50 tries", n, floor, hi-1)
}

// ephemeralStart is the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) where it cannot be read.
func ephemeralStart() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fallback
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return fallback
	}
	return lo
}

// free reports whether every port of base..base+n-1 can be bound on
// 127.0.0.1 for TCP and for UDP.
func free(base, n int) bool {
	for port := base; port < base+n; port++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		pc, err := net.ListenPacket("udp", addr)
		_ = ln.Close()
		if err != nil {
			return false
		}
		_ = pc.Close()
	}
	return true
}
