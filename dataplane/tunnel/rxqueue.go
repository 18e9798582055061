package tunnel

import (
	"sync"
	"sync/atomic"
)

// RecvQueueLen bounds a session's own queue of received fragments (each
// at most one QUIC datagram, about 1.4 KB, so about 5.6 MiB at most):
// about 45 ms of a 1 Gbit/s test sent in fragments, far more than the
// 128 frames (about 1.4 ms) quic-go v0.65.0 holds before it discards.
const RecvQueueLen = 4096

// rxQueue is a session's queue of parsed fragments between its reader,
// which empties quic-go's fixed queue, and its demultiplexer, which takes
// everything queued at once and reassembles. A datagram arriving at a full
// queue is dropped and counted. Its methods are safe for concurrent use.
type rxQueue struct {
	mu    sync.Mutex
	items []fragment
	spare []fragment
	// ready holds a token while items is not empty.
	ready   chan struct{}
	dropped atomic.Uint64
}

func newRxQueue() *rxQueue { return &rxQueue{ready: make(chan struct{}, 1)} }

// push queues f, or counts it dropped when the queue is full.
func (q *rxQueue) push(f fragment) {
	q.mu.Lock()
	if len(q.items) >= RecvQueueLen {
		q.mu.Unlock()
		q.dropped.Add(1)
		return
	}
	q.items = append(q.items, f)
	first := len(q.items) == 1
	q.mu.Unlock()
	if first {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
}

// take returns everything queued, oldest first (nil when empty). The
// slice is the caller's until its next take.
func (q *rxQueue) take() []fragment {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	clear(q.spare)
	q.items, q.spare = q.spare[:0], out
	return out
}
