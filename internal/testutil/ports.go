package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// portFloor is the lowest port PortRange hands out: above the well-known
// services a developer machine may run.
const portFloor = 20000

// PortRange returns the first of n consecutive loopback ports that are free
// for both TCP and UDP when it is called, for a data_port_range. The range
// lies below the kernel's ephemeral range (ip_local_port_range), so client
// sockets of tests running beside it do not take its ports meanwhile.
func PortRange(t testing.TB, n int) int {
	t.Helper()
	hi := ephemeralStart()
	if hi-portFloor < 2*n {
		t.Fatalf("no room for %d ports between %d and the ephemeral range at %d", n, portFloor, hi)
	}
	for range 50 {
		base := portFloor + rand.IntN(hi-portFloor-n+1)
		if portsFree(base, n) {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports in %d-%d after 50 tries", n, portFloor, hi-1)
	return 0
}

// ephemeralStart is the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) where it cannot be read.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// portsFree reports whether every port of base..base+n-1 can be bound on
// 127.0.0.1 for TCP and for UDP.
func portsFree(base, n int) bool {
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
