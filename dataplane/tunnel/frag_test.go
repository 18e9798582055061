package tunnel

import (
	"bytes"
	"testing"
	"time"
)

// fakeClock is a settable clock for the reassembler.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// split frames p as its sender would, in QUIC datagrams of maxDatagram.
func split(t testing.TB, flow uint8, msg uint16, p []byte, maxDatagram int) [][]byte {
	t.Helper()
	size, count, ok := splitSizes(len(p), maxDatagram)
	if !ok {
		t.Fatalf("splitSizes(%d, %d) refused", len(p), maxDatagram)
	}
	var out [][]byte
	for i := range count {
		out = append(out, appendFragment(nil, flow, msg, i, count, p[i*size:min((i+1)*size, len(p))]))
	}
	return out
}

func feed(t testing.TB, r *reassembler, framed []byte) []byte {
	t.Helper()
	f, err := parseFragment(framed)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return r.add(f)
}

func TestFragmentRoundTrip(t *testing.T) {
	clk := &fakeClock{t: time.Unix(100, 0)}
	r := &reassembler{now: clk.now}
	p := make([]byte, 32<<10)
	for i := range p {
		p[i] = byte(i * 31)
	}
	pieces := split(t, 7, 65535, p, 1200)
	// Out of order: last piece first, interleaved with another flow's
	// datagram of the same number.
	other := split(t, 8, 65535, p[:3000], 1200)
	var got, gotOther []byte
	for i := len(pieces) - 1; i >= 0; i-- {
		if w := feed(t, r, pieces[i]); w != nil {
			got = w
		}
		if i < len(other) {
			if w := feed(t, r, other[i]); w != nil {
				gotOther = w
			}
		}
	}
	if !bytes.Equal(got, p) || !bytes.Equal(gotOther, p[:3000]) {
		t.Fatalf("reassembled %d and %d bytes, want %d and 3000 identical", len(got), len(gotOther), len(p))
	}
	if len(r.partials) != 0 || r.incomplete.Load() != 0 || r.malformed.Load() != 0 {
		t.Fatalf("left %d partials, incomplete %d, malformed %d", len(r.partials), r.incomplete.Load(), r.malformed.Load())
	}
	w, err := parseFragment(appendWhole(nil, 3, []byte("abc")))
	if err != nil || !w.whole || w.flow != 3 || string(w.data) != "abc" {
		t.Fatalf("whole datagram parsed as %+v, %v", w, err)
	}
}

// TestFragmentLostPiece: a datagram with a piece missing is never
// delivered and is counted incomplete after the timeout or when newer
// datagrams push it out; memory stays bounded.
func TestFragmentLostPiece(t *testing.T) {
	clk := &fakeClock{t: time.Unix(100, 0)}
	r := &reassembler{now: clk.now}
	p := make([]byte, 5000)
	for msg := range uint16(maxPartials + 5) {
		pieces := split(t, 1, msg, p, 1200)
		for _, fr := range pieces[1:] { // the first piece is lost
			if w := feed(t, r, fr); w != nil {
				t.Fatalf("datagram %d delivered without its first piece", msg)
			}
		}
		if len(r.partials) > maxPartials {
			t.Fatalf("%d partials held, bound %d", len(r.partials), maxPartials)
		}
	}
	if got := r.incomplete.Load(); got != 5 {
		t.Fatalf("incomplete %d after %d datagrams, want 5 pushed out", got, maxPartials+5)
	}
	clk.t = clk.t.Add(reassemblyTimeout + time.Millisecond)
	if w := feed(t, r, split(t, 2, 0, p, 1200)[0]); w != nil {
		t.Fatal("one piece delivered a datagram")
	}
	if got := r.incomplete.Load(); got != maxPartials+5 || len(r.partials) != 1 {
		t.Fatalf("after the timeout: incomplete %d, %d partials; want %d, 1", got, len(r.partials), maxPartials+5)
	}
}

// TestFragmentHostile: pieces that contradict the framing are refused or
// counted, never delivered, never panic.
func TestFragmentHostile(t *testing.T) {
	bad := [][]byte{
		nil, {1}, {1, 2, 0}, // short, unknown kind
		{1, kindFragment, 0, 0, 0, 2},          // no piece
		{1, kindFragment, 0, 0, 2, 2, 'x'},     // index >= count
		{1, kindFragment, 0, 0, 0, 1, 'x'},     // count 1
		{1, kindFragment, 0, 0, 0, 0, 'x'},     // count 0
		{1, kindFragment, 0, 0, 0, 65, 'x'},    // count over MaxFragments
		{1, kindFragment, 0, 0, 255, 255, 'x'}, // both over
	}
	for _, b := range bad {
		if f, err := parseFragment(b); err == nil {
			t.Errorf("parseFragment(%v) = %+v, want an error", b, f)
		}
	}
	r := &reassembler{now: time.Now}
	big := make([]byte, 60000)
	feed(t, r, appendFragment(nil, 1, 9, 0, 3, []byte("a")))
	for _, b := range [][]byte{
		appendFragment(nil, 1, 9, 0, 3, []byte("a")), // duplicate index
		appendFragment(nil, 1, 9, 1, 4, []byte("b")), // other count
		appendFragment(nil, 1, 9, 1, 3, big),         // fits
		appendFragment(nil, 1, 9, 2, 3, big),         // too large in total
	} {
		if w := feed(t, r, b); w != nil {
			t.Fatalf("hostile piece delivered %d bytes", len(w))
		}
	}
	if got := r.malformed.Load(); got != 3 {
		t.Fatalf("malformed %d, want 3", got)
	}
}

// FuzzFragments feeds arbitrary QUIC datagrams to the parser and the
// reassembler: no panic, bounded memory, and what is delivered is made of
// the pieces sent, no larger than MaxDatagram.
func FuzzFragments(f *testing.F) {
	for _, fr := range split(f, 1, 5, make([]byte, 3000), 1200) {
		f.Add(fr, fr)
	}
	f.Add([]byte{1, kindFragment, 0, 0, 0, 2, 'x'}, []byte{1, kindFragment, 0, 0, 1, 2, 'y'})
	f.Add(appendWhole(nil, 0, []byte("w")), []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r := &reassembler{now: time.Now}
		for _, in := range [][]byte{a, b, a, b} {
			fr, err := parseFragment(in)
			if err != nil || fr.whole {
				continue
			}
			if w := r.add(fr); len(w) > MaxDatagram || len(w) > len(a)+len(b)+len(in) {
				t.Fatalf("delivered %d bytes from inputs of %d and %d", len(w), len(a), len(b))
			}
			if len(r.partials) > maxPartials {
				t.Fatalf("%d partials", len(r.partials))
			}
		}
	})
}
