package pairing

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(t *testing.T) (*Manager, *fakeClock) {
	t.Helper()
	c := &fakeClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	return NewManager(c.now), c
}

func open(t *testing.T, m *Manager, ttl time.Duration) string {
	t.Helper()
	tok, _, err := m.Open(ttl)
	if err != nil {
		t.Fatalf("Open(%v): %v", ttl, err)
	}
	return tok
}

var tokenRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$`)

func TestTokenFormat(t *testing.T) {
	m, c := newTest(t)
	seen := map[string]bool{}
	for range 100 {
		tok, exp, err := m.Open(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !tokenRE.MatchString(tok) {
			t.Fatalf("token %q is not four groups of four Crockford symbols", tok)
		}
		if !exp.Equal(c.now().Add(time.Minute)) {
			t.Fatalf("expires %v, want now+1m", exp)
		}
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
	}
}

func TestTTLBounds(t *testing.T) {
	tests := []struct {
		ttl time.Duration
		ok  bool
	}{
		{0, false},
		{-time.Minute, false},
		{999 * time.Millisecond, false},
		{time.Second, true},
		{10 * time.Minute, true},
		{24 * time.Hour, true},
		{24*time.Hour + time.Nanosecond, false},
	}
	for _, tc := range tests {
		m, _ := newTest(t)
		_, _, err := m.Open(tc.ttl)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrTTL)) {
			t.Errorf("Open(%v) = %v, want ok=%v", tc.ttl, err, tc.ok)
		}
		if open, _ := m.Active(); open != tc.ok {
			t.Errorf("Open(%v): Active = %v", tc.ttl, open)
		}
	}
}

func TestRedeemOnce(t *testing.T) {
	m, _ := newTest(t)
	if err := m.Redeem("ABCD-EFGH-JKMN-PQRS", src0); !errors.Is(err, ErrNoWindow) {
		t.Fatalf("Redeem without a window = %v, want ErrNoWindow", err)
	}
	tok := open(t, m, time.Minute)
	if err := m.Redeem(tok, src0); err != nil {
		t.Fatalf("Redeem(%q) = %v", tok, err)
	}
	if err := m.Redeem(tok, src0); !errors.Is(err, ErrNoWindow) {
		t.Fatalf("reused token = %v, want ErrNoWindow", err)
	}
	if open, _ := m.Active(); open {
		t.Fatal("window still open after a successful Redeem")
	}
}

func TestRedeemNormalises(t *testing.T) {
	typed := []func(string) string{
		strings.ToLower,
		func(s string) string { return strings.ReplaceAll(s, "-", "") },
		func(s string) string { return " " + strings.ReplaceAll(s, "-", " ") + " " },
		func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "0", "o"), "1", "L") },
		func(s string) string { return strings.ReplaceAll(s, "1", "i") },
	}
	for i, f := range typed {
		m, _ := newTest(t)
		tok := open(t, m, time.Minute)
		if err := m.Redeem(f(tok), src0); err != nil {
			t.Errorf("variant %d: Redeem(%q) for token %q = %v", i, f(tok), tok, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"abcd-efgh", "ABCDEFGH", true},
		{"o0 iIlL\t1", "0011111", true},
		{"", "", true},
		{"ABCU", "", false}, // U is not in the alphabet
		{"AB!C", "", false},
		{"é", "", false},
		{strings.Repeat("A", maxTokenInput+1), "", false},
	}
	for _, tc := range tests {
		got, ok := normalize(tc.in)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("normalize(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestExpiry(t *testing.T) {
	m, c := newTest(t)
	tok := open(t, m, 10*time.Second)
	c.advance(10*time.Second - time.Nanosecond)
	if open, exp := m.Active(); !open || !exp.Equal(c.now().Add(time.Nanosecond)) {
		t.Fatalf("Active just before expiry = %v, %v", open, exp)
	}
	c.advance(time.Nanosecond)
	if open, _ := m.Active(); open {
		t.Fatal("window open at its expiry time")
	}
	if err := m.Redeem(tok, src0); !errors.Is(err, ErrExpired) {
		t.Fatalf("Redeem after expiry = %v, want ErrExpired", err)
	}
	// A new window works again.
	tok = open(t, m, 10*time.Second)
	if err := m.Redeem(tok, src0); err != nil {
		t.Fatalf("Redeem in a new window = %v", err)
	}
}

func TestWrongTokensCloseWindow(t *testing.T) {
	m, _ := newTest(t)
	tok := open(t, m, time.Minute)
	wrong := []string{"0000-0000-0000-0000", "not a token!", "", strings.Repeat("Z", 200)}
	for i := range MaxFailures - 1 {
		if err := m.Redeem(wrong[i%len(wrong)], srcN(i)); !errors.Is(err, ErrBadToken) {
			t.Fatalf("wrong token %d = %v, want ErrBadToken", i, err)
		}
	}
	if open, _ := m.Active(); !open {
		t.Fatal("window closed before MaxFailures")
	}
	if err := m.Redeem("0000-0000-0000-0000", srcN(MaxFailures)); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("failure %d = %v, want ErrTooManyFailures", MaxFailures, err)
	}
	if err := m.Redeem(tok, src0); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("right token after lockout = %v, want ErrTooManyFailures", err)
	}
	if open, _ := m.Active(); open {
		t.Fatal("window open after lockout")
	}
	// A new window starts with a clean count.
	tok = open(t, m, time.Minute)
	for i := range MaxFailures - 1 {
		_ = m.Redeem("0000", srcN(i))
	}
	if err := m.Redeem(tok, src0); err != nil {
		t.Fatalf("right token after %d failures = %v", MaxFailures-1, err)
	}
}

func TestOpenReplacesAndClose(t *testing.T) {
	m, _ := newTest(t)
	old := open(t, m, time.Minute)
	tok := open(t, m, time.Minute)
	if err := m.Redeem(old, src0); !errors.Is(err, ErrBadToken) {
		t.Fatalf("replaced token = %v, want ErrBadToken", err)
	}
	m.Close()
	if err := m.Redeem(tok, src0); !errors.Is(err, ErrNoWindow) {
		t.Fatalf("Redeem after Close = %v, want ErrNoWindow", err)
	}
}

func TestRedeemWithCommit(t *testing.T) {
	m, _ := newTest(t)
	tok := open(t, m, time.Minute)
	calls := 0
	boom := errors.New("disk full")
	if err := m.RedeemWith("0000-0000-0000-0000", src0, func() error { calls++; return nil }); !errors.Is(err, ErrBadToken) || calls != 0 {
		t.Fatalf("wrong token: err %v, commit ran %d times", err, calls)
	}
	if err := m.RedeemWith(tok, src0, func() error { calls++; return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing commit = %v, want it wrapped", err)
	}
	if open, _ := m.Active(); !open {
		t.Fatal("failed commit closed the window")
	}
	if err := m.RedeemWith(tok, src0, func() error { calls++; return nil }); err != nil || calls != 2 {
		t.Fatalf("RedeemWith = %v after %d commits", err, calls)
	}
	if err := m.Redeem(tok, src0); !errors.Is(err, ErrNoWindow) {
		t.Fatalf("token after commit = %v, want ErrNoWindow", err)
	}
}

func TestConcurrentRedeem(t *testing.T) {
	m, _ := newTest(t)
	tok := open(t, m, time.Minute)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- m.Redeem(tok, src0)
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrNoWindow):
			t.Errorf("loser got %v, want ErrNoWindow", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d successful redeems of one token, want 1", ok)
	}
}

func FuzzRedeem(f *testing.F) {
	for _, s := range []string{"", "ABCD-EFGH-JKMN-PQRS", "abcd efgh jkmn pqrs", "OIL-", "\x00\xff", strings.Repeat("-", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		norm, ok := normalize(s)
		if ok {
			for _, c := range norm {
				if !strings.ContainsRune(alphabet, rune(c)) {
					t.Fatalf("normalize(%q) produced %q", s, c)
				}
			}
		}
		m := NewManager(nil)
		tok, _, err := m.Open(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		err = m.Redeem(s, src0)
		if err == nil {
			if string(norm) != strings.ReplaceAll(tok, "-", "") {
				t.Fatalf("Redeem(%q) accepted for token %q", s, tok)
			}
		} else if !errors.Is(err, ErrBadToken) {
			t.Fatalf("Redeem(%q) = %v", s, err)
		}
	})
}

var src0 = Source{Addr: netip.MustParseAddr("192.0.2.1"), Key: "PP-KEY-0"}

// srcN is the n-th of many distinct sources (address and key).
func srcN(n int) Source {
	return Source{Addr: netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), Key: fmt.Sprint("PP-KEY-", n)}
}

// TestWrongTokensLimitedPerSource: a few wrong tokens lock out their
// source address or key for the rest of the window, and the window stays
// open for everyone else: five wrong tokens no longer close it (issue 11,
// item 8).
func TestWrongTokensLimitedPerSource(t *testing.T) {
	m, _ := newTest(t)
	tok := open(t, m, time.Minute)
	for i := range MaxFailuresPerAddr {
		src := Source{Addr: src0.Addr, Key: fmt.Sprint("rotating-", i)}
		if err := m.Redeem("0000-0000-0000-0000", src); !errors.Is(err, ErrBadToken) {
			t.Fatalf("wrong token %d from one address = %v, want ErrBadToken", i, err)
		}
	}
	if err := m.Redeem(tok, Source{Addr: src0.Addr, Key: "fresh"}); !errors.Is(err, ErrSourceLimited) {
		t.Fatalf("address over its limit = %v, want ErrSourceLimited", err)
	}
	key := "PP-ROAMING"
	for i := range MaxFailuresPerKey {
		src := Source{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Key: key}
		if err := m.Redeem("1111", src); !errors.Is(err, ErrBadToken) {
			t.Fatalf("wrong token %d from one key = %v, want ErrBadToken", i, err)
		}
	}
	if err := m.Redeem(tok, Source{Addr: netip.MustParseAddr("203.0.113.9"), Key: key}); !errors.Is(err, ErrSourceLimited) {
		t.Fatalf("key over its limit = %v, want ErrSourceLimited", err)
	}
	if open, _ := m.Active(); !open {
		t.Fatal("wrong tokens from two sources closed the window")
	}
	if err := m.Redeem(tok, srcN(7)); err != nil {
		t.Fatalf("another source with the right token = %v", err)
	}
}

// TestOnClose: every way a window closes is reported once with its reason;
// a window replaced by a new one is not.
func TestOnClose(t *testing.T) {
	m, clock := newTest(t)
	var mu sync.Mutex
	var got []error
	m.OnClose(func(r error) { mu.Lock(); got = append(got, r); mu.Unlock() })
	tok := open(t, m, time.Minute)
	open(t, m, time.Minute) // replaces tok's window: no close
	_ = tok
	m.Close()
	tok = open(t, m, time.Minute)
	if err := m.Redeem(tok, src0); err != nil {
		t.Fatal(err)
	}
	open(t, m, time.Minute)
	clock.advance(2 * time.Minute)
	m.Active()
	m.Active()
	open(t, m, time.Minute)
	for i := range MaxFailures {
		_ = m.Redeem("0000", srcN(i))
	}
	mu.Lock()
	defer mu.Unlock()
	want := []error{ErrNoWindow, ErrConsumed, ErrExpired, ErrTooManyFailures}
	if len(got) != len(want) {
		t.Fatalf("OnClose reasons %v, want %v", got, want)
	}
	for i := range want {
		if !errors.Is(got[i], want[i]) {
			t.Fatalf("OnClose reasons %v, want %v", got, want)
		}
	}
}

// TestExpiryTimerCloses: an expired window is closed (and reported) by its
// timer, without anyone asking.
func TestExpiryTimerCloses(t *testing.T) {
	m := NewManager(nil)
	closed := make(chan error, 1)
	m.OnClose(func(r error) { closed <- r })
	if _, _, err := m.Open(MinTTL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-closed:
		if !errors.Is(r, ErrExpired) {
			t.Fatalf("reason %v, want ErrExpired", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the expiry timer never closed the window")
	}
}
