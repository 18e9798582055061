package server

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
)

type recordingWriter struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recordingWriter) Write(e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

// TestDenialAggregatorBounded: a flood from 2,000 sources with a table of
// 16 writes 16 per-source summaries and one "other" line, never more, and
// each source's first denial is the only one written in full.
func TestDenialAggregatorBounded(t *testing.T) {
	w := &recordingWriter{}
	d := newDenialAggregator(w, 16)
	now := time.Date(2026, 11, 29, 4, 0, 0, 0, time.UTC)
	full := 0
	for i := 0; i < 2000; i++ {
		addr := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		for j := 0; j < 3; j++ {
			if d.deny(addr, ReasonNotAuthorized, now) {
				full++
			}
		}
		d.drop(addr, ReasonHandshakeFailed, now)
	}
	if full != 16 {
		t.Fatalf("%d denials to write in full, want 16 (one per tracked source)", full)
	}
	if err := d.flush(now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if len(w.events) != 17 {
		t.Fatalf("%d summary lines, want 16 + 1 other", len(w.events))
	}
	var otherCount, perSource uint64
	for _, e := range w.events {
		if e.EventType != audit.RateLimited || e.Reason != string(audit.ConnectionDenied) {
			t.Fatalf("summary event %+v", e)
		}
		n := e.Details["count"].(uint64)
		if e.PeerAddr == OtherSources {
			otherCount = n
			r := e.Details["reasons"].(map[string]uint64)
			if r[ReasonNotAuthorized] != (2000-16)*3 || r[ReasonHandshakeFailed] != 2000-16 {
				t.Fatalf("other line %+v", e.Details)
			}
			continue
		}
		perSource += n
		r := e.Details["reasons"].(map[string]uint64)
		if n != 3 || r[ReasonNotAuthorized] != 2 || r[ReasonHandshakeFailed] != 1 {
			t.Fatalf("per-source line %+v", e)
		}
	}
	if otherCount != (2000-16)*4 || perSource != 16*3 {
		t.Fatalf("other %d, per source %d", otherCount, perSource)
	}
	w.events = nil
	if err := d.flush(now.Add(2 * time.Minute)); err != nil || len(w.events) != 0 {
		t.Fatalf("empty interval wrote %d lines (%v)", len(w.events), err)
	}
	if !d.deny(netip.AddrFrom4([4]byte{10, 0, 0, 1}), ReasonNotAuthorized, now.Add(2*time.Minute)) {
		t.Fatal("first denial of a new interval not written in full")
	}
}
