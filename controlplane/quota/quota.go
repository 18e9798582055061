// Package quota keeps the per-peer test accounting behind the [quotas]
// section: test starts in a rolling hour, the cooldown between a peer's test
// starts, and the bytes a peer moved per UTC day. The accounting is persisted
// atomically (temp file, fsync, rename) so that a restart, even after
// kill -9, does not reset it: at every Begin and End and, while bytes are
// being added, at most every FlushInterval.
//
// Every method takes the current time from its caller, so tests drive the
// clock and a session uses one time source for its decisions.
//
// # Cooldown
//
// The cooldown is measured between a peer's test starts. A test that ran to
// its normal end (iperf3 results exchanged, echo duration elapsed) releases
// the cooldown when it ends: the pause exists to space out aborted and
// retried attempts, and a completed test has already occupied the reflector
// for its whole duration. This is what lets the appliance ask for its
// download test right after its upload test completes, with the default
// cooldown of 5 s, even when the tests are shorter than the cooldown. A test
// that ended any other way (closed early, client never came, peer gone,
// cut off, deadline, error) keeps the cooldown running from its start.
// Tests per rolling hour still bound how many completed tests a peer can
// chain.
package quota

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/internal/atomicfile"
)

// FileVersion is the version field of the quota file this package writes
// and the only one it reads.
const FileVersion = 1

// DefaultFlushInterval is how often AddBytes persists at most while a test
// runs; a kill -9 loses at most this much of the byte accounting.
const DefaultFlushInterval = 2 * time.Second

// window is the span of the per-hour limit.
const window = time.Hour

// dayLayout is the UTC date key of the byte and test counters.
const dayLayout = "2006-01-02"

const fileMode = 0o600

// ErrCorrupt is wrapped by Open when the quota file exists but cannot be
// used. The reflector refuses to start then rather than silently resetting
// every peer's quota; the operator repairs or removes the file.
var ErrCorrupt = errors.New("quota file corrupt")

// Limits are the per-peer limits a Store enforces.
type Limits struct {
	// MaxTestsPerHour is the number of test starts a peer may have in any
	// rolling hour.
	MaxTestsPerHour int
	// Cooldown is the least time between two of a peer's test starts,
	// unless the earlier test completed normally (see the package doc).
	Cooldown time.Duration
	// MaxBytesPerDay is the bytes a peer may move per UTC day.
	MaxBytesPerDay int64
}

// Decision is the outcome of Check.
type Decision struct {
	// OK is true when the peer may start a test now.
	OK bool
	// Reason is DenyRateLimited (hourly limit, cooldown) or
	// DenyQuotaExceeded (daily bytes) when OK is false.
	Reason link.DenyReason
	// Message explains the refusal to a person.
	Message string
	// RetryAfter is how long the peer must wait; whole seconds, at least 1 s,
	// when OK is false.
	RetryAfter time.Duration
}

// RetryAfterSec returns RetryAfter in whole seconds, for session_deny.
func (d Decision) RetryAfterSec() int { return int(d.RetryAfter / time.Second) }

// peerState is one peer's accounting, as persisted.
type peerState struct {
	// Starts are the peer's test starts within the last hour, oldest first.
	Starts []time.Time `json:"starts"`
	// LastStart is the start of the peer's most recent test.
	LastStart time.Time `json:"last_start"`
	// CooldownReleased is set when the most recent test completed normally.
	CooldownReleased bool `json:"cooldown_released"`
	// Day is the UTC date (YYYY-MM-DD) BytesDay and TestsDay belong to.
	Day      string `json:"day"`
	BytesDay int64  `json:"bytes_day"`
	TestsDay int    `json:"tests_day"`
}

// fileData is the quota file.
type fileData struct {
	Version int `json:"version"`
	// Day, TestsToday and BytesToday are the totals over all peers.
	Day        string                `json:"day"`
	TestsToday int                   `json:"tests_today"`
	BytesToday int64                 `json:"bytes_today"`
	Peers      map[string]*peerState `json:"peers"`
}

// Store is the persisted accounting. It is safe for concurrent use. Its
// lock guards the accounting in memory only: a file write (two fsyncs) runs
// outside it, so readers (Usages, Check, Remaining) never wait for a slow
// disk.
type Store struct {
	path   string
	limits Limits
	flush  time.Duration

	// wmu serialises file writes; a write takes its snapshot while holding
	// it, so the last file written is always the newest accounting.
	wmu sync.Mutex

	mu        sync.Mutex
	data      fileData
	dirty     bool
	lastFlush time.Time
	flushErr  error
}

// Option changes a Store's defaults.
type Option func(*Store)

// WithFlushInterval sets how often AddBytes persists at most.
func WithFlushInterval(d time.Duration) Option {
	return func(s *Store) { s.flush = d }
}

// Open loads the accounting from path, or starts empty when the file does
// not exist. A file that exists but does not parse, or has another version,
// is an error wrapping ErrCorrupt.
func Open(path string, limits Limits, opts ...Option) (*Store, error) {
	s := &Store{
		path:   path,
		limits: limits,
		flush:  DefaultFlushInterval,
		data:   fileData{Version: FileVersion, Peers: map[string]*peerState{}},
	}
	for _, o := range opts {
		o(s)
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read quota file %s: %w", path, err)
	}
	var fd fileData
	if err := json.Unmarshal(b, &fd); err != nil {
		return nil, fmt.Errorf("load quota file %s: %w: %v (repair or remove it; removing resets every peer's quota)", path, ErrCorrupt, err)
	}
	if fd.Version != FileVersion {
		return nil, fmt.Errorf("load quota file %s: %w: version %d, this reflector reads version %d", path, ErrCorrupt, fd.Version, FileVersion)
	}
	if fd.Peers == nil {
		fd.Peers = map[string]*peerState{}
	}
	for id, p := range fd.Peers {
		if p == nil || p.BytesDay < 0 || p.TestsDay < 0 {
			return nil, fmt.Errorf("load quota file %s: %w: invalid entry for peer %s", path, ErrCorrupt, id)
		}
	}
	if fd.BytesToday < 0 || fd.TestsToday < 0 {
		return nil, fmt.Errorf("load quota file %s: %w: negative totals", path, ErrCorrupt)
	}
	s.data = fd
	return s, nil
}

// Path returns the file the store persists to.
func (s *Store) Path() string { return s.path }

// dayOf is the UTC date key of t.
func dayOf(t time.Time) string { return t.UTC().Format(dayLayout) }

// peer returns id's state rolled forward to now (old starts dropped, a new
// UTC day's counters zeroed), creating it when create is set.
func (s *Store) peer(id string, now time.Time, create bool) *peerState {
	p := s.data.Peers[id]
	if p == nil {
		if !create {
			return nil
		}
		p = &peerState{}
		s.data.Peers[id] = p
	}
	cut := now.Add(-window)
	i := 0
	for i < len(p.Starts) && !p.Starts[i].After(cut) {
		i++
	}
	if i > 0 {
		p.Starts = slices.Delete(p.Starts, 0, i)
		s.dirty = true
	}
	if day := dayOf(now); p.Day != day {
		p.Day, p.BytesDay, p.TestsDay = day, 0, 0
		s.dirty = true
	}
	return p
}

// rollTotals zeroes the all-peer totals on a new UTC day.
func (s *Store) rollTotals(now time.Time) {
	if day := dayOf(now); s.data.Day != day {
		s.data.Day, s.data.TestsToday, s.data.BytesToday = day, 0, 0
		s.dirty = true
	}
}

// ceilSeconds rounds d up to whole seconds, at least one.
func ceilSeconds(d time.Duration) time.Duration {
	s := time.Duration(math.Ceil(d.Seconds())) * time.Second
	return max(s, time.Second)
}

// nextMidnight is the start of the UTC day after now's.
func nextMidnight(now time.Time) time.Time {
	u := now.UTC()
	return time.Date(u.Year(), u.Month(), u.Day()+1, 0, 0, 0, 0, time.UTC)
}

// Check decides whether peer may start a test at now. The daily byte
// budget is checked first (quota_exceeded, retry after the next UTC
// midnight); then the hourly limit and the cooldown (rate_limited), of which
// the longer wait is reported.
func (s *Store) Check(peer string, now time.Time) Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peer(peer, now, false)
	if p == nil {
		return Decision{OK: true}
	}
	if p.BytesDay >= s.limits.MaxBytesPerDay {
		return Decision{
			Reason:     link.DenyQuotaExceeded,
			Message:    fmt.Sprintf("daily byte quota used: %d of %d bytes today (UTC)", p.BytesDay, s.limits.MaxBytesPerDay),
			RetryAfter: ceilSeconds(nextMidnight(now).Sub(now)),
		}
	}
	var d Decision
	if n := len(p.Starts); n >= s.limits.MaxTestsPerHour {
		// The start that must leave the window for one more to fit.
		free := p.Starts[n-s.limits.MaxTestsPerHour].Add(window)
		d = Decision{
			Reason:     link.DenyRateLimited,
			Message:    fmt.Sprintf("%d tests in the last hour, limit %d", n, s.limits.MaxTestsPerHour),
			RetryAfter: ceilSeconds(free.Sub(now)),
		}
	}
	if !p.CooldownReleased && !p.LastStart.IsZero() {
		if until := p.LastStart.Add(s.limits.Cooldown); now.Before(until) {
			if wait := ceilSeconds(until.Sub(now)); wait > d.RetryAfter {
				d = Decision{
					Reason:     link.DenyRateLimited,
					Message:    fmt.Sprintf("cooldown: %v between test starts (the previous test did not complete normally)", s.limits.Cooldown),
					RetryAfter: wait,
				}
			}
		}
	}
	if d.Reason == "" {
		return Decision{OK: true}
	}
	return d
}

// Begin records that peer started a test at now and persists the
// accounting. An error means the start could not be recorded on disk; the
// in-memory accounting has it regardless.
func (s *Store) Begin(peer string, now time.Time) error {
	s.mu.Lock()
	p := s.peer(peer, now, true)
	s.rollTotals(now)
	p.Starts = append(p.Starts, now)
	p.LastStart = now
	p.CooldownReleased = false
	p.TestsDay++
	s.data.TestsToday++
	s.dirty = true
	s.mu.Unlock()
	return s.persist(now)
}

// Withdraw takes back the start Begin recorded for peer at start, for an
// attempt the reflector refused after all (its audit line could not be
// written, its data port could not be opened): it no longer counts in the
// hour or the day, and the cooldown is released. It persists the
// accounting.
func (s *Store) Withdraw(peer string, start, now time.Time) error {
	s.mu.Lock()
	p := s.peer(peer, now, true)
	if i := slices.IndexFunc(p.Starts, start.Equal); i >= 0 {
		p.Starts = slices.Delete(p.Starts, i, i+1)
		if dayOf(start) == p.Day && p.TestsDay > 0 {
			p.TestsDay--
		}
		if dayOf(start) == s.data.Day && s.data.TestsToday > 0 {
			s.data.TestsToday--
		}
	}
	p.CooldownReleased = true
	s.dirty = true
	s.mu.Unlock()
	return s.persist(now)
}

// AddBytes adds n bytes moved by peer at now to the peer's and the day's
// totals. It persists when the last write is at least the flush interval
// old; a write error is returned (and reported by Err) but the bytes stay
// counted in memory.
func (s *Store) AddBytes(peer string, n int64, now time.Time) error {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	p := s.peer(peer, now, true)
	s.rollTotals(now)
	p.BytesDay = satAdd(p.BytesDay, n)
	s.data.BytesToday = satAdd(s.data.BytesToday, n)
	s.dirty = true
	due := now.Sub(s.lastFlush) >= s.flush
	s.mu.Unlock()
	if !due {
		return nil
	}
	return s.persist(now)
}

// satAdd adds non-negative b to a without overflowing.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// End records that peer's test ended at now; completed says whether it ran
// to its normal end, which releases the cooldown. It persists the
// accounting.
func (s *Store) End(peer string, completed bool, now time.Time) error {
	s.mu.Lock()
	p := s.peer(peer, now, true)
	p.CooldownReleased = completed
	s.dirty = true
	s.mu.Unlock()
	return s.persist(now)
}

// Remaining returns the bytes peer may still move today (UTC), zero when
// the budget is used.
func (s *Store) Remaining(peer string, now time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peer(peer, now, false)
	if p == nil {
		return s.limits.MaxBytesPerDay
	}
	return max(s.limits.MaxBytesPerDay-p.BytesDay, 0)
}

// Usage is one peer's accounting at a point in time.
type Usage struct {
	TestsLastHour int
	TestsToday    int
	BytesToday    int64
}

// Peer returns peer's usage at now.
func (s *Store) Peer(peer string, now time.Time) Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peer(peer, now, false)
	if p == nil {
		return Usage{}
	}
	return Usage{TestsLastHour: len(p.Starts), TestsToday: p.TestsDay, BytesToday: p.BytesDay}
}

// Today returns the tests started and bytes moved over all peers on now's
// UTC day.
func (s *Store) Today(now time.Time) (tests int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollTotals(now)
	return s.data.TestsToday, s.data.BytesToday
}

// Flush persists the accounting if it changed since the last write.
func (s *Store) Flush(now time.Time) error {
	return s.persist(now)
}

// Err returns the last persist failure, nil once a later write succeeded.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushErr
}

// persist writes the file when the accounting changed. The snapshot is
// taken under s.mu, the write (temp file, fsync, rename) runs without it.
// Peers with nothing left to count (no starts in the hour, no bytes today,
// cooldown over) are dropped first.
func (s *Store) persist(now time.Time) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.dropIdleLocked(now)
	b, err := json.MarshalIndent(&s.data, "", "  ")
	s.dirty = false
	s.mu.Unlock()
	if err == nil {
		err = atomicfile.WriteFile(s.path, append(b, '\n'), fileMode)
		if err != nil {
			err = fmt.Errorf("persist quota file %s: %w", s.path, err)
		}
	} else {
		err = fmt.Errorf("encode quota file %s: %w", s.path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushErr = err
	if err != nil {
		s.dirty = true // try again at the next change or Flush
		return err
	}
	s.lastFlush = now
	return nil
}

// dropIdleLocked forgets peers with nothing left to count.
func (s *Store) dropIdleLocked(now time.Time) {
	for id := range s.data.Peers {
		p := s.peer(id, now, false)
		idle := len(p.Starts) == 0 && p.BytesDay == 0 && p.TestsDay == 0 &&
			(p.CooldownReleased || !now.Before(p.LastStart.Add(s.limits.Cooldown)))
		if idle {
			delete(s.data.Peers, id)
		}
	}
}

// Usages returns the usage of every peer with accounting at now.
func (s *Store) Usages(now time.Time) map[string]Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Usage, len(s.data.Peers))
	for id := range s.data.Peers {
		p := s.peer(id, now, false)
		out[id] = Usage{TestsLastHour: len(p.Starts), TestsToday: p.TestsDay, BytesToday: p.BytesDay}
	}
	return out
}
