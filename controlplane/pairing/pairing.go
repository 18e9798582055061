// Package pairing manages the time-limited pairing window: the operator
// opens it with `reflector pair`, which shows a one-time token; an
// appliance that presents the token in a pair_request before the window
// expires is added to the allowlist. One token pairs one peer.
package pairing

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

const (
	// MinTTL and MaxTTL bound how long a window may stay open.
	MinTTL = time.Second
	MaxTTL = 24 * time.Hour
	// MaxFailures wrong tokens, from all sources together, close the
	// window: a high ceiling, since the token space (80 bits) makes
	// guessing hopeless and a low one would let anyone close it.
	MaxFailures = 1000
	// MaxFailuresPerAddr and MaxFailuresPerKey wrong tokens refuse any
	// further attempt of that source address or peer key for the rest of
	// the window (ErrSourceLimited); the window stays open for others.
	MaxFailuresPerAddr = 5
	MaxFailuresPerKey  = 3
	// TokenSymbols is the number of Crockford base32 symbols in a token
	// (80 bits), shown in groups of four.
	TokenSymbols = 16

	groupSize = 4
	// maxTokenInput bounds the input Redeem looks at.
	maxTokenInput = 64
	alphabet      = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

var (
	// ErrConsumed is the OnClose reason of a window whose token paired a
	// peer; Redeem then reports ErrNoWindow.
	ErrConsumed = errors.New("pairing token used")
	// ErrNoWindow: no pairing window is open (never opened, closed, or
	// its token was already used).
	ErrNoWindow = errors.New("no pairing window is open")
	// ErrExpired: the window's time ran out.
	ErrExpired = errors.New("pairing window expired")
	// ErrBadToken: the token does not match the window's.
	ErrBadToken = errors.New("wrong pairing token")
	// ErrTooManyFailures: the window was closed after MaxFailures wrong
	// tokens.
	ErrTooManyFailures = errors.New("pairing window closed after too many wrong tokens")
	// ErrSourceLimited: this source address or key sent too many wrong
	// tokens; its attempts are refused until the next window.
	ErrSourceLimited = errors.New("too many wrong pairing tokens from this source")
	// ErrTTL: Open was given a duration outside MinTTL..MaxTTL.
	ErrTTL = errors.New("pairing window duration out of range")
)

// Source identifies who presents a token: the connection's address and
// the peer's key (its Endpoint ID).
type Source struct {
	Addr netip.Addr
	Key  string
}

// Manager holds at most one pairing window. It is safe for concurrent use.
type Manager struct {
	now func() time.Time

	mu       sync.Mutex
	token    []byte    // normalised symbols; nil when no window is open
	expires  time.Time // when token stops being valid
	failures int
	byAddr   map[netip.Addr]int // wrong tokens per source in this window
	byKey    map[string]int
	closed   error // what Redeem reports while no window is open
	timer    *time.Timer
	onClose  func(reason error)
}

// OnClose registers f, called once each time an open window closes, with
// the reason: ErrExpired, ErrTooManyFailures, ErrConsumed (a peer paired)
// or ErrNoWindow (Close). It runs outside the Manager's lock and must be
// safe for concurrent use.
func (m *Manager) OnClose(f func(reason error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onClose = f
}

// NewManager returns a Manager with no open window. now is the clock; nil
// means time.Now.
func NewManager(now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{now: now, closed: ErrNoWindow, byAddr: map[netip.Addr]int{}, byKey: map[string]int{}}
}

// Open starts a new window lasting ttl, replacing any open one, and returns
// its token formatted for people ("XXXX-XXXX-XXXX-XXXX") and its expiry.
func (m *Manager) Open(ttl time.Duration) (token string, expires time.Time, err error) {
	if ttl < MinTTL || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("%w: %v, expected %v to %v", ErrTTL, ttl, MinTTL, MaxTTL)
	}
	raw := make([]byte, TokenSymbols*5/8)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, fmt.Errorf("generate pairing token: %w", err)
	}
	sym := encode(raw)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeLocked(ErrNoWindow) // a replaced window closes silently: a new one opens at once
	m.token = sym
	m.expires = m.now().Add(ttl)
	m.timer = time.AfterFunc(ttl, m.checkExpiry)
	return format(sym), m.expires, nil
}

// checkExpiry closes the window when its time ran out (the timer armed by
// Open; Active and Redeem also check).
func (m *Manager) checkExpiry() {
	m.mu.Lock()
	closed := m.expireLocked()
	m.mu.Unlock()
	m.notify(closed)
}

// notify calls the OnClose function for a window that closed (reason not
// nil).
func (m *Manager) notify(reason error) {
	if reason == nil {
		return
	}
	m.mu.Lock()
	f := m.onClose
	m.mu.Unlock()
	if f != nil {
		f(reason)
	}
}

// encode renders bytes as Crockford base32 symbols, 5 bits at a time, most
// significant first. len(b)*8 is a multiple of 5 here.
func encode(b []byte) []byte {
	out := make([]byte, 0, TokenSymbols)
	var acc uint32
	bits := 0
	for _, x := range b {
		acc = acc<<8 | uint32(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, alphabet[acc>>bits&31])
		}
	}
	return out
}

// format groups symbols by four with dashes.
func format(sym []byte) string {
	var sb strings.Builder
	for i, c := range sym {
		if i > 0 && i%groupSize == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// normalize reads a token as people type it: case-insensitive, dashes and
// spaces ignored, O read as 0 and I, L as 1. ok is false for any other
// character or an overlong input.
func normalize(s string) (out []byte, ok bool) {
	if len(s) > maxTokenInput {
		return nil, false
	}
	out = make([]byte, 0, TokenSymbols)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-' || c == ' ' || c == '\t':
			continue
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		}
		switch c {
		case 'O':
			c = '0'
		case 'I', 'L':
			c = '1'
		}
		if strings.IndexByte(alphabet, c) < 0 {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// expireLocked closes the window if its time ran out and returns
// ErrExpired when it did. Callers hold mu.
func (m *Manager) expireLocked() error {
	if m.token != nil && !m.now().Before(m.expires) {
		m.closeLocked(ErrExpired)
		return ErrExpired
	}
	return nil
}

// closeLocked ends the window (if any) and forgets its counters; Redeem
// reports reason from now on (ErrNoWindow for a consumed token).
func (m *Manager) closeLocked(reason error) {
	if errors.Is(reason, ErrConsumed) {
		reason = ErrNoWindow
	}
	m.token = nil
	m.failures = 0
	m.byAddr, m.byKey = map[netip.Addr]int{}, map[string]int{}
	m.closed = reason
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}

// Active reports whether a window is open and when it expires.
func (m *Manager) Active() (open bool, expires time.Time) {
	m.mu.Lock()
	closed := m.expireLocked()
	open, expires = m.token != nil, m.expires
	m.mu.Unlock()
	m.notify(closed)
	if !open {
		return false, time.Time{}
	}
	return true, expires
}

// Redeem checks token against the open window and, when it matches, closes
// the window: a token pairs one peer. It returns ErrNoWindow, ErrExpired or
// ErrTooManyFailures when no window is open, ErrSourceLimited for a source
// that already sent too many wrong tokens, and ErrBadToken for a wrong
// token; the MaxFailures-th wrong token overall closes the window and
// returns ErrTooManyFailures.
func (m *Manager) Redeem(token string, src Source) error {
	return m.RedeemWith(token, src, nil)
}

// RedeemWith is Redeem that also runs commit (e.g. adding the peer to the
// allowlist) while holding the window, so that the token is consumed only
// when commit succeeds. When commit fails, its error is returned wrapped
// and the window stays open with its token. A nil commit always succeeds.
func (m *Manager) RedeemWith(token string, src Source, commit func() error) error {
	m.mu.Lock()
	err, closed := m.redeemLocked(token, src, commit)
	m.mu.Unlock()
	m.notify(closed)
	return err
}

// redeemLocked is RedeemWith under mu; closed is the reason the window
// closed, if it did.
func (m *Manager) redeemLocked(token string, src Source, commit func() error) (err, closed error) {
	if closed := m.expireLocked(); closed != nil {
		return closed, closed
	}
	if m.token == nil {
		return m.closed, nil
	}
	if m.byAddr[src.Addr] >= MaxFailuresPerAddr || m.byKey[src.Key] >= MaxFailuresPerKey {
		return ErrSourceLimited, nil
	}
	got, ok := normalize(token)
	if !ok || subtle.ConstantTimeCompare(got, m.token) != 1 {
		m.failures++
		m.byAddr[src.Addr]++
		m.byKey[src.Key]++
		if m.failures >= MaxFailures {
			m.closeLocked(ErrTooManyFailures)
			return ErrTooManyFailures, ErrTooManyFailures
		}
		return ErrBadToken, nil
	}
	if commit != nil {
		if err := commit(); err != nil {
			return fmt.Errorf("pairing: %w", err), nil
		}
	}
	m.closeLocked(ErrConsumed)
	return nil, ErrConsumed
}

// Close ends the open window, if any.
func (m *Manager) Close() {
	m.mu.Lock()
	wasOpen := m.token != nil
	m.closeLocked(ErrNoWindow)
	m.mu.Unlock()
	if wasOpen {
		m.notify(ErrNoWindow)
	}
}
