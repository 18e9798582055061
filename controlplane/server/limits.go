package server

import (
	"net/netip"
	"sync"
	"time"
)

// tokenBucket allows rate events per second with a burst of rate. It is
// used by one goroutine at a time.
type tokenBucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int) tokenBucket {
	if rate <= 0 {
		rate = 1
	}
	return tokenBucket{rate: float64(rate), tokens: float64(rate)}
}

// take consumes one token if available.
func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// maxTrackedAddrs bounds the per-address limiter's table; beyond it, idle
// entries are dropped.
const maxTrackedAddrs = 16384

// addrLimiter limits new connections per source address.
type addrLimiter struct {
	rate, burst float64

	mu sync.Mutex
	m  map[netip.Addr]*addrBucket
}

type addrBucket struct {
	tokens float64
	last   time.Time
}

func newAddrLimiter(perSec, burst int) *addrLimiter {
	if perSec <= 0 {
		perSec = 1
	}
	if burst < 1 {
		burst = 1
	}
	return &addrLimiter{rate: float64(perSec), burst: float64(burst), m: map[netip.Addr]*addrBucket{}}
}

// allow consumes a token for addr.
func (l *addrLimiter) allow(addr netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[addr]
	if !ok {
		if len(l.m) >= maxTrackedAddrs {
			l.prune(now)
		}
		b = &addrBucket{tokens: l.burst, last: now}
		l.m[addr] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune drops entries that have refilled completely (they hold no state
// worth keeping); if that frees nothing, it drops everything.
func (l *addrLimiter) prune(now time.Time) {
	for a, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, a)
		}
	}
	if len(l.m) >= maxTrackedAddrs {
		clear(l.m)
	}
}
