package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

func testAdmission(maxHS, perAddr int) *admission {
	l := config.Default().Limits
	l.MaxHandshakes, l.MaxHandshakesPerAddr = maxHS, perAddr
	l.MaxConnsPerPeer, l.MaxConnsPerAddr, l.MaxPairingConnections = 3, 4, 2
	return newAdmission(l)
}

// TestAdmissionHandshakeSlots: handshakes in flight are capped per address
// and per /24 (or /64); unknown addresses get three quarters of the slots
// (with random early drop past half of that), and an address that
// completed an authorized handshake before still finds room when they are
// full (issue 11, item 3).
func TestAdmissionHandshakeSlots(t *testing.T) {
	now := time.Unix(1000, 0)
	a := testAdmission(100, 3)
	one := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if r, ok := a.startHandshake(one, false); !ok {
			t.Fatalf("handshake %d from one address refused: %s", i, r)
		}
	}
	if r, ok := a.startHandshake(one, false); ok || r != ReasonHandshakeAddrLimit {
		t.Fatalf("4th from one address: %q %v, want %s", r, ok, ReasonHandshakeAddrLimit)
	}
	// The /24 holds 4 x 3 = 12; 3 are taken by .1.
	for i := 2; i < 5; i++ {
		for range 3 {
			if _, ok := a.startHandshake(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), false); !ok {
				t.Fatal("refused within the prefix cap")
			}
		}
	}
	if r, ok := a.startHandshake(netip.MustParseAddr("192.0.2.99"), false); ok || r != ReasonHandshakePrefixLimit {
		t.Fatalf("13th from the /24: %q %v, want %s", r, ok, ReasonHandshakePrefixLimit)
	}
	v6 := netip.MustParseAddr("2001:db8:1:2::1")
	if prefixOf(v6) != netip.MustParsePrefix("2001:db8:1:2::/64") || prefixOf(one) != netip.MustParsePrefix("192.0.2.0/24") {
		t.Fatalf("prefixes %v %v", prefixOf(v6), prefixOf(one))
	}

	// Fill the unknown share (75 of 100) from many prefixes.
	admitted, dropped := 12, 0
	for i := 0; admitted < 75 && i < 10000; i++ {
		r, ok := a.startHandshake(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), false)
		switch {
		case ok:
			admitted++
		case r == ReasonHandshakeEarlyDrop:
			dropped++
		default:
			t.Fatalf("refused for %s before the unknown share filled (%d admitted)", r, admitted)
		}
	}
	if admitted != 75 || dropped == 0 {
		t.Fatalf("admitted %d (want 75), early drops %d (want some)", admitted, dropped)
	}
	if r, ok := a.startHandshake(netip.MustParseAddr("198.51.100.7"), false); ok || r != ReasonHandshakeLimit {
		t.Fatalf("unknown address with the share full: %q %v, want %s", r, ok, ReasonHandshakeLimit)
	}
	// A returning peer: known once it completed an authorized handshake.
	back := netip.MustParseAddr("203.0.113.5")
	a.rememberLocked(back, now)
	if !a.isKnown(back, now) || a.isKnown(back, now.Add(knownTTL)) {
		t.Fatal("known address bookkeeping")
	}
	for i := range 3 {
		if r, ok := a.startHandshake(back, true); !ok {
			t.Fatalf("known address refused (%d): %s", i, r)
		}
	}
	// Slots come back: end one unknown handshake and one known one.
	a.endHandshake(one, false, false, now)
	a.endHandshake(back, true, true, now)
	if a.hs != 76 || a.hsUnknown != 74 || a.hsByAddr[one] != 2 || a.hsByAddr[back] != 2 {
		t.Fatalf("after two ends: hs %d unknown %d one %d back %d", a.hs, a.hsUnknown, a.hsByAddr[one], a.hsByAddr[back])
	}
	if _, ok := a.startHandshake(netip.MustParseAddr("198.51.100.8"), false); ok {
		// 74 < 75 but past the early-drop start: may be dropped, never over the share.
		if a.hsUnknown > a.unknownHS {
			t.Fatal("unknown share exceeded")
		}
	}
}

// TestAdmissionConnectionCaps: established connections are capped per key
// and per address; pairing-only keys have their own cap, and pairing moves
// a slot out of it (issue 11, items 1 and 2).
func TestAdmissionConnectionCaps(t *testing.T) {
	a := testAdmission(100, 3)
	k1, k2, k3 := identity.EndpointID("PP-1"), identity.EndpointID("PP-2"), identity.EndpointID("PP-3")
	x, y := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for range 3 {
		if _, ok := a.startConn(k1, x, false); !ok {
			t.Fatal("within the per-peer cap")
		}
	}
	if r, ok := a.startConn(k1, y, false); ok || r != ReasonPeerConnLimit {
		t.Fatalf("4th of one key: %q, want %s", r, ReasonPeerConnLimit)
	}
	if _, ok := a.startConn(k2, x, false); !ok {
		t.Fatal("4th from one address is within max_conns_per_addr 4")
	}
	if r, ok := a.startConn(k3, x, false); ok || r != ReasonAddrConnLimit {
		t.Fatalf("5th from one address: %q, want %s", r, ReasonAddrConnLimit)
	}
	if _, ok := a.startConn(k2, y, true); !ok {
		t.Fatal("first pairing connection")
	}
	if _, ok := a.startConn(k3, y, true); !ok {
		t.Fatal("second pairing connection")
	}
	if r, ok := a.startConn("PP-4", y, true); ok || r != ReasonPairingConnLimit {
		t.Fatalf("3rd pairing connection: %q, want %s", r, ReasonPairingConnLimit)
	}
	a.paired()
	if _, ok := a.startConn("PP-4", y, true); !ok {
		t.Fatal("a paired connection still held a pairing slot")
	}
	a.endConn(k1, x, false)
	if _, ok := a.startConn(k1, y, false); !ok {
		t.Fatal("slot not given back")
	}
}
