package iperf3proto

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestByteBudget: concurrent takers never get more than the budget in
// total, the last grants shrink so the whole budget can be used, returned
// bytes can be taken again, spend refuses what is not left, and Exhausted
// closes once a taker found it spent. A nil budget is unlimited.
func TestByteBudget(t *testing.T) {
	const total = 300_000_000
	b := NewByteBudget(total)
	var moved atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				g := b.take(16 << 20)
				if g == 0 {
					return
				}
				used := g - g/4 // a short read: a quarter goes back
				b.give(g - used)
				moved.Add(int64(used))
			}
		})
	}
	wg.Wait()
	if got := moved.Load(); got != total {
		t.Fatalf("moved %d of a %d byte budget", got, total)
	}
	select {
	case <-b.Exhausted():
	default:
		t.Fatal("Exhausted not closed")
	}
	if b.Left() != 0 || b.spend(1) {
		t.Fatalf("left %d after spending it all", b.Left())
	}
	b.give(100)
	if !b.spend(100) || b.spend(1) {
		t.Fatal("spend of given-back bytes")
	}
	var unlimited *ByteBudget
	if unlimited.take(1<<30) != 1<<30 || !unlimited.spend(1<<30) || unlimited.Exhausted() != nil {
		t.Fatal("a nil budget is not unlimited")
	}
}

// TestByteBudgetLastByte: spending the last byte closes Exhausted at once
// (a receiver counts what it already read).
func TestByteBudgetLastByte(t *testing.T) {
	b := NewByteBudget(1000)
	b.spend(1000)
	select {
	case <-b.Exhausted():
	default:
		t.Error("spending the last byte left Exhausted open")
	}
}
