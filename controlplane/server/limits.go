package server

import (
	crand "crypto/rand"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

// maxTrackedAddrs bounds the per-address tables (new-connection limiter,
// known addresses).
const maxTrackedAddrs = 16384

// Fixed bounds of a control connection (documented in the README).
const (
	// clientHelloTimeout is how long a new TCP connection may stay silent
	// before its ClientHello starts; the rest of the handshake gets
	// handshake_timeout_sec.
	clientHelloTimeout = 3 * time.Second
	// frameTimeout is how long a frame may take once its first byte has
	// arrived (the idle timeout only bounds the wait for that byte).
	frameTimeout = 10 * time.Second
	// pairingConnLifetime bounds a connection of a key that is not yet
	// paired; it also ends when the pairing window closes.
	pairingConnLifetime = 2 * time.Minute
	// prefixHandshakeFactor: handshakes in flight per /24 (IPv4) or /64
	// (IPv6) are capped at this many times the per-address cap.
	prefixHandshakeFactor = 4
	// knownShareDiv: a 1/knownShareDiv share of max_handshakes is kept for
	// addresses that completed an authorized handshake before.
	knownShareDiv = 4
	// knownTTL is how long an address stays known after its last
	// authorized handshake.
	knownTTL = 7 * 24 * time.Hour
)

// Reasons a connection is refused by admission, as audited (details.reasons
// of rate_limited summaries, connection_denied) and counted.
const (
	ReasonHandshakeAddrLimit   = "handshake_addr_limit"
	ReasonHandshakePrefixLimit = "handshake_prefix_limit"
	ReasonHandshakeEarlyDrop   = "handshake_early_drop"
	ReasonPeerConnLimit        = "peer_conn_limit"
	ReasonAddrConnLimit        = "addr_conn_limit"
	ReasonPairingConnLimit     = "pairing_conn_limit"
)

// admission decides who gets a handshake slot and, once the peer is known,
// a connection slot. It borrows from OpenSSH's MaxStartups (random early
// drop of unauthenticated connections as their slots fill) and
// PerSourcePenalties (a source is judged by its own behaviour): handshakes
// in flight are capped per address and per prefix, and a quarter of the
// slots is kept for addresses that completed an authorized handshake
// before, so a flood from many addresses still leaves a returning peer
// room. Established connections are capped per peer key and per address;
// connections of keys that are only allowed to pair have their own small
// cap and never count against an authorized peer's. It is safe for
// concurrent use.
type admission struct {
	maxHS, perAddrHS, perPrefixHS, unknownHS int
	perPeer, perAddr, maxPairing             int

	mu         sync.Mutex
	rng        *rand.Rand
	hs         int // handshakes in flight
	hsUnknown  int // of which from addresses not known
	hsByAddr   map[netip.Addr]int
	hsByPrefix map[netip.Prefix]int
	known      map[netip.Addr]time.Time // last authorized handshake
	byPeer     map[identity.EndpointID]int
	byAddr     map[netip.Addr]int
	pairing    int
}

func newAdmission(l config.LimitsConfig) *admission {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return &admission{
		maxHS:       l.MaxHandshakes,
		perAddrHS:   l.MaxHandshakesPerAddr,
		perPrefixHS: prefixHandshakeFactor * l.MaxHandshakesPerAddr,
		unknownHS:   max(1, l.MaxHandshakes-l.MaxHandshakes/knownShareDiv),
		perPeer:     l.MaxConnsPerPeer,
		perAddr:     l.MaxConnsPerAddr,
		maxPairing:  l.MaxPairingConnections,
		rng:         rand.New(rand.NewChaCha8(seed)),
		hsByAddr:    map[netip.Addr]int{},
		hsByPrefix:  map[netip.Prefix]int{},
		known:       map[netip.Addr]time.Time{},
		byPeer:      map[identity.EndpointID]int{},
		byAddr:      map[netip.Addr]int{},
	}
}

// prefixOf is the /24 of an IPv4 address or the /64 of an IPv6 one.
func prefixOf(a netip.Addr) netip.Prefix {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// startHandshake takes a handshake slot for addr, or returns the reason it
// is refused; known is isKnown(addr) (the caller keeps it for
// endHandshake). A taken slot is given back with endHandshake.
func (a *admission) startHandshake(addr netip.Addr, known bool) (reason string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pfx := prefixOf(addr)
	switch {
	case a.hs >= a.maxHS:
		return ReasonHandshakeLimit, false
	case a.hsByAddr[addr] >= a.perAddrHS:
		return ReasonHandshakeAddrLimit, false
	case known:
	case a.hsByPrefix[pfx] >= a.perPrefixHS:
		return ReasonHandshakePrefixLimit, false
	case a.hsUnknown >= a.unknownHS:
		return ReasonHandshakeLimit, false
	case a.earlyDropLocked():
		return ReasonHandshakeEarlyDrop, false
	}
	a.hs++
	a.hsByAddr[addr]++
	a.hsByPrefix[pfx]++
	if !known {
		a.hsUnknown++
	}
	return "", true
}

// earlyDropLocked is MaxStartups' random early drop for unknown addresses:
// beyond half of their share, refuse with a probability rising linearly to
// 1 as the share fills.
func (a *admission) earlyDropLocked() bool {
	start := a.unknownHS / 2
	if a.hsUnknown < start {
		return false
	}
	return a.rng.IntN(a.unknownHS-start) < a.hsUnknown-start
}

// endHandshake gives back the slot of a handshake that ended; authorized
// says the peer completed it and is authorized, which makes addr known.
func (a *admission) endHandshake(addr netip.Addr, wasKnown, authorized bool, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hs--
	if !wasKnown {
		a.hsUnknown--
	}
	decr(a.hsByAddr, addr)
	decr(a.hsByPrefix, prefixOf(addr))
	if authorized {
		a.rememberLocked(addr, now)
	}
}

// isKnown reports whether addr completed an authorized handshake within
// knownTTL.
func (a *admission) isKnown(addr netip.Addr, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.known[addr]
	return ok && now.Sub(t) < knownTTL
}

// rememberLocked marks addr known; a full table drops its oldest entry.
func (a *admission) rememberLocked(addr netip.Addr, now time.Time) {
	if _, ok := a.known[addr]; !ok && len(a.known) >= maxTrackedAddrs {
		var oldest netip.Addr
		var at time.Time
		for k, t := range a.known {
			if at.IsZero() || t.Before(at) {
				oldest, at = k, t
			}
		}
		delete(a.known, oldest)
	}
	a.known[addr] = now
}

// startConn takes a connection slot for an identified peer, or returns the
// reason it is refused. pairing marks a key that may only pair.
func (a *admission) startConn(peer identity.EndpointID, addr netip.Addr, pairing bool) (reason string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case pairing && a.pairing >= a.maxPairing:
		return ReasonPairingConnLimit, false
	case a.byPeer[peer] >= a.perPeer:
		return ReasonPeerConnLimit, false
	case a.byAddr[addr] >= a.perAddr:
		return ReasonAddrConnLimit, false
	}
	a.byPeer[peer]++
	a.byAddr[addr]++
	if pairing {
		a.pairing++
	}
	return "", true
}

// paired moves a pairing connection's slot to the authorized ones.
func (a *admission) paired() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pairing--
}

// endConn gives back a connection slot.
func (a *admission) endConn(peer identity.EndpointID, addr netip.Addr, pairing bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	decr(a.byPeer, peer)
	decr(a.byAddr, addr)
	if pairing {
		a.pairing--
	}
}

// decr decrements m[k], deleting the entry at zero so tables hold only
// live sources.
func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}
