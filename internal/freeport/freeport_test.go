package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestRangeFreeAndBelowEphemeral checks that every port of a returned range
// can be bound for TCP and UDP, that the range ends below the kernel's
// ephemeral range and that it leaves out the port to avoid.
func TestRangeFreeAndBelowEphemeral(t *testing.T) {
	const n = 10
	lo := ephemeralStart()
	for range 20 {
		base, err := Range(n, floor+n)
		if err != nil {
			t.Fatal(err)
		}
		if base < floor || base+n > lo {
			t.Fatalf("range %d-%d outside %d-%d", base, base+n-1, floor, lo-1)
		}
		if base <= floor+n && floor+n < base+n {
			t.Fatalf("range %d-%d contains the avoided port %d", base, base+n-1, floor+n)
		}
		if !free(base, n) {
			t.Fatalf("range %d-%d is not free", base, base+n-1)
		}
	}
}

// TestFreeSeesABoundPort checks the check itself: a port held for TCP or
// for UDP makes a range containing it not free.
func TestFreeSeesABoundPort(t *testing.T) {
	base, err := Range(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(base+1))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if free(base, 3) {
		t.Error("range with a TCP listener reported free")
	}
	_ = ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if free(base, 3) {
		t.Error("range with a bound UDP socket reported free")
	}
}

// TestPortTCPAndUDP checks that a port for both protocols can be bound for
// both.
func TestPortTCPAndUDP(t *testing.T) {
	port, err := Port(true)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP on port %d: %v", port, err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP on port %d: %v", port, err)
	}
	_ = pc.Close()
}
