package testutil

import (
	"net"
	"strconv"
	"testing"
)

// TestPortRangeFreeAndBelowEphemeral checks that every port of a returned
// range can be bound for TCP and UDP and that the range ends below the
// kernel's ephemeral range.
func TestPortRangeFreeAndBelowEphemeral(t *testing.T) {
	const n = 10
	lo := ephemeralStart()
	for range 20 {
		base := PortRange(t, n)
		if base < portFloor || base+n > lo {
			t.Fatalf("range %d-%d outside %d-%d", base, base+n-1, portFloor, lo-1)
		}
		if !portsFree(base, n) {
			t.Fatalf("range %d-%d is not free", base, base+n-1)
		}
	}
}

// TestPortsFreeSeesABoundPort checks the check itself: a port held for TCP
// or for UDP makes a range containing it not free.
func TestPortsFreeSeesABoundPort(t *testing.T) {
	base := PortRange(t, 3)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(base+1))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if portsFree(base, 3) {
		t.Error("range with a TCP listener reported free")
	}
	_ = ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if portsFree(base, 3) {
		t.Error("range with a bound UDP socket reported free")
	}
}
