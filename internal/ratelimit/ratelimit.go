// Package ratelimit holds the reflector's token buckets: Bucket, one rate
// in exact integer arithmetic, and Keyed, a bounded table of buckets per
// source address. Time is always passed in (Bucket) or read from a clock
// the caller supplies (Keyed), so tests drive them without sleeping.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// unit is one token in the bucket's internal units (1e-9 token), so that a
// nanosecond at any rate adds a whole number of units.
const unit = int64(time.Second)

// Bucket is a token bucket refilled at a rate of tokens per second up to a
// burst. It starts full. It is safe for concurrent use.
type Bucket struct {
	mu     sync.Mutex
	rate   int64 // tokens per second
	max    int64 // burst, in units
	tokens int64 // in units
	last   time.Time
}

// NewBucket returns a full bucket refilled at rate tokens per second and
// holding at most burst tokens; values below 1 are taken as 1.
func NewBucket(rate, burst int, now time.Time) *Bucket {
	r, b := int64(max(rate, 1)), int64(max(burst, 1))
	return &Bucket{rate: r, max: b * unit, tokens: b * unit, last: now}
}

// Take removes up to n tokens at time now and returns how many it granted.
// A clock that steps back adds nothing.
func (b *Bucket) Take(n int, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	granted := min(int64(max(n, 0)), b.tokens/unit)
	b.tokens -= granted * unit
	return int(granted)
}

// Allow takes one token at time now and reports whether it was there.
func (b *Bucket) Allow(now time.Time) bool { return b.Take(1, now) == 1 }

// full reports whether the bucket has refilled to its burst by now.
func (b *Bucket) full(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.tokens == b.max
}

// refill adds the tokens accrued since last. Callers hold mu.
func (b *Bucket) refill(now time.Time) {
	el := now.Sub(b.last)
	if el <= 0 {
		return
	}
	b.last = now
	room := b.max - b.tokens
	if int64(el) >= room/b.rate+1 { // also keeps el*rate from overflowing
		b.tokens = b.max
		return
	}
	b.tokens += int64(el) * b.rate
}

// Keyed limits events per source address: one Bucket per address, at most
// maxKeys addresses tracked. When the table is full, addresses whose bucket
// has refilled (they hold no state worth keeping) are dropped; if that
// frees nothing, the table starts afresh, which errs on the side of letting
// traffic through rather than growing. It is safe for concurrent use.
type Keyed struct {
	rate, burst, maxKeys int
	now                  func() time.Time

	mu sync.Mutex
	m  map[netip.Addr]*Bucket
}

// NewKeyed returns a limiter of rate events per second with burst per
// address, tracking at most maxKeys addresses; now is the clock (nil means
// time.Now).
func NewKeyed(rate, burst, maxKeys int, now func() time.Time) *Keyed {
	if now == nil {
		now = time.Now
	}
	return &Keyed{rate: rate, burst: burst, maxKeys: max(maxKeys, 1), now: now, m: map[netip.Addr]*Bucket{}}
}

// Allow takes one token of addr's bucket and reports whether it was there.
func (k *Keyed) Allow(addr netip.Addr) bool {
	now := k.now()
	k.mu.Lock()
	b, ok := k.m[addr]
	if !ok {
		if len(k.m) >= k.maxKeys {
			k.pruneLocked(now)
		}
		b = NewBucket(k.rate, k.burst, now)
		k.m[addr] = b
	}
	k.mu.Unlock()
	return b.Allow(now)
}

// Len returns the number of addresses tracked.
func (k *Keyed) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

func (k *Keyed) pruneLocked(now time.Time) {
	for a, b := range k.m {
		if b.full(now) {
			delete(k.m, a)
		}
	}
	if len(k.m) >= k.maxKeys {
		clear(k.m)
	}
}
