package iperf3proto

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrBudgetSpent is why a stream stopped at its ByteBudget.
var ErrBudgetSpent = errors.New("iperf3: byte budget spent")

// minTake is the least a take grants while the budget lasts: small enough
// that what concurrent streams hold near the end stays a tiny share of any
// practical budget, large enough for a whole datagram.
const minTake = 64 << 10

// ByteBudget is a byte allowance the server's streams draw from (set it in
// ServerConfig.Budget; one budget may serve several servers): senders take
// before they write and receivers before they read, so the bytes a test
// counts never exceed it, whatever the rate. A stream that finds it spent
// stops (a receiver closes its connection, which resets the client's
// stream) and Exhausted is closed, so the owner can end the test. A nil
// *ByteBudget is unlimited.
type ByteBudget struct {
	left  atomic.Int64
	once  sync.Once
	spent chan struct{}
}

// NewByteBudget returns a budget of n bytes (n <= 0: spent from the start).
func NewByteBudget(n int64) *ByteBudget {
	b := &ByteBudget{spent: make(chan struct{})}
	b.left.Store(n)
	return b
}

// Left returns the bytes not yet taken.
func (b *ByteBudget) Left() int64 { return max(b.left.Load(), 0) }

// Exhausted is closed once a stream has found the budget spent; nil (never
// ready) for a nil budget.
func (b *ByteBudget) Exhausted() <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.spent
}

// take reserves up to n bytes and returns how many may be moved: n while
// plenty is left, then at most an eighth of what is left (at least
// minTake), so concurrent streams share the end; 0 when spent.
func (b *ByteBudget) take(n int) int {
	if b == nil {
		return n
	}
	for {
		left := b.left.Load()
		if left <= 0 {
			b.markSpent()
			return 0
		}
		g := min(int64(n), max(left/8, min(left, minTake)))
		if b.left.CompareAndSwap(left, left-g) {
			return int(g)
		}
	}
}

// takeDatagrams reserves up to k whole datagrams of blk bytes and returns
// how many may be sent (0 when not even one is left).
func (b *ByteBudget) takeDatagrams(k, blk int) int {
	g := b.take(k * blk)
	n := g / blk
	b.give(g - n*blk)
	return n
}

// markSpent closes Exhausted (once).
func (b *ByteBudget) markSpent() { b.once.Do(func() { close(b.spent) }) }

// give returns n reserved bytes that were not moved.
func (b *ByteBudget) give(n int) {
	if b != nil && n > 0 {
		b.left.Add(int64(n))
	}
}

// spend counts n bytes already moved: false, and the budget marked spent,
// when fewer than n were left (the bytes are then not taken).
func (b *ByteBudget) spend(n int) bool {
	if b == nil {
		return true
	}
	for {
		left := b.left.Load()
		if left < int64(n) {
			b.markSpent()
			return false
		}
		if b.left.CompareAndSwap(left, left-int64(n)) {
			if left == int64(n) {
				b.markSpent()
			}
			return true
		}
	}
}
