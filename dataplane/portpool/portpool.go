// Package portpool lends ports from the direct_ephemeral data-port range:
// each test session borrows one port, binds its listeners on it and gives
// it back when the session ends. Ports are handed out in a random order,
// so another client at the grant holder's address cannot predict the next
// grant's port from the last one.
package portpool

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
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
	rng  *rand.Rand   // the order Acquire tries ports in (mu)
}

// New returns a pool of the ports start..end, both included
// (1 <= start <= end <= 65535).
func New(start, end int) (*Pool, error) {
	if start < 1 || end > 65535 || start > end {
		return nil, fmt.Errorf("portpool: invalid range %d-%d", start, end)
	}
	// ChaCha8 seeded from crypto/rand: unpredictable to peers, without a
	// system call per grant. The choice is not a secret (the grant names
	// the port), only not guessable in advance.
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (Go 1.24+: it crashes instead)
	return &Pool{start: start, end: end, used: make(map[int]bool), rng: rand.New(rand.NewChaCha8(seed))}, nil
}

// Acquire tries the free ports in a random order and calls try with each
// until one returns nil (try normally binds the listeners, so a port
// another program holds fails and is skipped). That port is lent out until
// Release. When no port works, Acquire returns ErrExhausted, wrapping the
// last try error if there was one.
//
// try runs without the pool's lock held, so concurrent Acquire calls bind
// in parallel; a port is reserved while its try runs and never given to
// two callers.
func (p *Pool) Acquire(try func(port int) error) (int, error) {
	p.mu.Lock()
	order := p.rng.Perm(p.end - p.start + 1)
	p.mu.Unlock()
	var lastErr error
	for _, i := range order {
		port := p.start + i
		p.mu.Lock()
		if p.used[port] {
			p.mu.Unlock()
			continue
		}
		p.used[port] = true
		p.mu.Unlock()

		err := try(port)
		if err == nil {
			return port, nil
		}
		p.mu.Lock()
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
