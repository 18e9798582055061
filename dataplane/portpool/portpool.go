// Package portpool lends ports from the direct_ephemeral data-port range:
// each test session borrows one port, binds its listeners on it and gives
// it back when the session ends.
package portpool

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrExhausted is returned by Acquire when no port in the range could be
// acquired: every port is lent out or its try function failed.
var ErrExhausted = errors.New("portpool: no free port")

// Pool is a range of ports lent out one at a time. It is safe for
// concurrent use.
type Pool struct {
	start, end int

	mu   sync.Mutex
	used map[int]bool // lent out, or reserved while its try runs
	next int          // where the next Acquire starts looking
}

// New returns a pool of the ports start..end, both included
// (1 <= start <= end <= 65535).
func New(start, end int) (*Pool, error) {
	if start < 1 || end > 65535 || start > end {
		return nil, fmt.Errorf("portpool: invalid range %d-%d", start, end)
	}
	return &Pool{start: start, end: end, used: make(map[int]bool), next: start}, nil
}

// Acquire walks the free ports round robin, starting after the port the
// previous Acquire handed out, and calls try with each until one returns
// nil (try normally binds the listeners, so a port another program holds
// fails and is skipped). That port is lent out until Release. When no port
// works, Acquire returns ErrExhausted, wrapping the last try error if there
// was one.
//
// try runs without the pool's lock held, so concurrent Acquire calls bind
// in parallel; a port is reserved while its try runs and never given to
// two callers.
func (p *Pool) Acquire(try func(port int) error) (int, error) {
	size := p.end - p.start + 1
	var lastErr error
	p.mu.Lock()
	cursor := p.next
	p.mu.Unlock()
	for range size {
		port := cursor
		cursor++
		if cursor > p.end {
			cursor = p.start
		}
		p.mu.Lock()
		if p.used[port] {
			p.mu.Unlock()
			continue
		}
		p.used[port] = true
		p.mu.Unlock()

		err := try(port)
		p.mu.Lock()
		if err == nil {
			p.next = cursor
			p.mu.Unlock()
			return port, nil
		}
		delete(p.used, port)
		p.mu.Unlock()
		lastErr = err
	}
	if lastErr != nil {
		return 0, fmt.Errorf("%w in %d-%d (last: %w)", ErrExhausted, p.start, p.end, lastErr)
	}
	return 0, fmt.Errorf("%w in %d-%d", ErrExhausted, p.start, p.end)
}

// Release gives port back to the pool. Releasing a port that is not lent
// out does nothing.
func (p *Pool) Release(port int) {
	p.mu.Lock()
	delete(p.used, port)
	p.mu.Unlock()
}

// InUse returns the ports lent out (and those whose try is running), in
// ascending order.
func (p *Pool) InUse() []int {
	p.mu.Lock()
	out := make([]int, 0, len(p.used))
	for port := range p.used {
		out = append(out, port)
	}
	p.mu.Unlock()
	slices.Sort(out)
	return out
}
