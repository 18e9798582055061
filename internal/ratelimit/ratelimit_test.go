package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(1000, 100, t0)
	steps := []struct {
		at      time.Duration
		n, want int
	}{
		{0, 150, 100},                 // burst
		{0, 10, 0},                    // empty
		{time.Millisecond, 10, 1},     // 1 ms = 1 token
		{10 * time.Millisecond, 5, 5}, // 9 more tokens accrued
		{10 * time.Millisecond, 10, 4},
		{time.Hour, 1000, 100},           // refill caps at burst
		{time.Hour - time.Second, 10, 0}, // a clock stepping back adds nothing
		{time.Hour, -3, 0},
	}
	for i, st := range steps {
		if got := b.Take(st.n, t0.Add(st.at)); got != st.want {
			t.Fatalf("step %d Take(%d at %v) = %d, want %d", i, st.n, st.at, got, st.want)
		}
	}
}

// TestBucketExactAtHighRate: a million tokens a second over one second of
// 1 µs steps grants exactly the burst plus a million, nothing lost to
// rounding.
func TestBucketExactAtHighRate(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := NewBucket(1_000_000, 10, t0)
	total := 0
	for i := 0; i <= 1_000_000; i++ {
		total += b.Take(5, t0.Add(time.Duration(i)*time.Microsecond))
	}
	if total != 1_000_010 {
		t.Fatalf("granted %d, want 1000010", total)
	}
}

func TestBucketMinimums(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := NewBucket(0, 0, t0)
	if !b.Allow(t0) || b.Allow(t0) || !b.Allow(t0.Add(time.Second)) {
		t.Fatal("rate and burst below 1 must behave as 1")
	}
}

func TestKeyed(t *testing.T) {
	now := time.Unix(0, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	k := NewKeyed(1, 2, 3, clock)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if got := []bool{k.Allow(a), k.Allow(a), k.Allow(a)}; !got[0] || !got[1] || got[2] {
		t.Fatalf("burst of 2 per address: %v", got)
	}
	if !k.Allow(b) {
		t.Fatal("addresses are independent")
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if got := []bool{k.Allow(a), k.Allow(a)}; !got[0] || got[1] {
		t.Fatalf("one token a second: %v", got)
	}
	// Fill the table: b has refilled and is dropped to make room.
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	k.Allow(a)
	for i := range 3 {
		k.Allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	if n := k.Len(); n > 3 {
		t.Fatalf("table holds %d addresses, cap 3", n)
	}
}
