package echo

import (
	"sync"
	"time"
)

// bucket is a token bucket of whole datagrams, kept in units of 1e-9
// datagram so integer arithmetic loses nothing at any rate.
type bucket struct {
	mu     sync.Mutex
	rate   int64 // datagrams per second
	max    int64 // burst, in units
	tokens int64 // in units
	last   time.Time
}

const unit = int64(time.Second)

// newBucket returns a full bucket refilled at rate per second holding at
// most burst datagrams.
func newBucket(rate, burst int, now time.Time) *bucket {
	return &bucket{rate: int64(rate), max: int64(burst) * unit, tokens: int64(burst) * unit, last: now}
}

// take removes up to n datagrams' worth of tokens at time now and returns
// how many it granted.
func (b *bucket) take(n int, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last); el > 0 {
		b.last = now
		room := b.max - b.tokens
		if int64(el) >= room/b.rate+1 {
			b.tokens = b.max
		} else {
			b.tokens += int64(el) * b.rate
		}
	}
	granted := min(int64(n), b.tokens/unit)
	b.tokens -= granted * unit
	return int(granted)
}
