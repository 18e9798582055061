package tunnel

import (
	"sync"
	"testing"
)

// TestRxQueueBoundAndOrder: a full queue counts what it refuses, take
// returns everything queued in order, and a batch being handled is not
// touched by pushes into the next.
func TestRxQueueBoundAndOrder(t *testing.T) {
	q := newRxQueue()
	if b := q.take(); len(b) != 0 {
		t.Fatalf("empty queue gave %d", len(b))
	}
	for i := range RecvQueueLen + 10 {
		q.push(fragment{data: []byte{byte(i >> 8), byte(i)}})
	}
	if got := q.dropped.Load(); got != 10 {
		t.Fatalf("dropped %d, want 10", got)
	}
	batch := q.take()
	if len(batch) != RecvQueueLen {
		t.Fatalf("took %d, want %d", len(batch), RecvQueueLen)
	}
	q.push(fragment{data: []byte{0xff, 0xff}})
	for i, f := range batch {
		b := f.data
		if int(b[0])<<8|int(b[1]) != i {
			t.Fatalf("item %d is %v", i, b)
		}
	}
	if next := q.take(); len(next) != 1 || next[0].data[0] != 0xff {
		t.Fatalf("next batch %v", next)
	}
}

// TestRxQueueConcurrent: one pusher and one taker; every item pushed is
// taken or counted dropped, in order, and ready always announces a
// non-empty queue.
func TestRxQueueConcurrent(t *testing.T) {
	q := newRxQueue()
	const n = 50000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			q.push(fragment{data: []byte{byte(i >> 16), byte(i >> 8), byte(i)}})
		}
	})
	taken, prev := 0, -1
	for uint64(taken)+q.dropped.Load() < n {
		<-q.ready
		for _, f := range q.take() {
			b := f.data
			v := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
			if v <= prev {
				t.Fatalf("%d after %d", v, prev)
			}
			prev = v
			taken++
		}
	}
	wg.Wait()
	if uint64(taken)+q.dropped.Load() != n {
		t.Fatalf("taken %d + dropped %d != %d", taken, q.dropped.Load(), n)
	}
}
