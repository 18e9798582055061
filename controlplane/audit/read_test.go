package audit

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

func line(t *testing.T, e Event) string {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestReadFiltersAndSkipsTornLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	appendTo(t, path, line(t, Event{Timestamp: t0, EventType: SessionGranted, PeerID: "PP-A"})+
		`{"timestamp":"2026-01-02T03:04:06Z","event_type":"sess`+"\n"+ // torn by a full disk
		line(t, Event{Timestamp: t0.Add(time.Minute), EventType: SessionCompleted, PeerID: "PP-A"})+
		line(t, Event{Timestamp: t0.Add(2 * time.Minute), EventType: SessionGranted, PeerID: "PP-B"})+
		`{"timestamp":"2026-01-02T03:09:00Z","event_type":"session_gr`) // being written

	read := func(f Filter) ([]Event, ReadStats) {
		t.Helper()
		var got []Event
		st, err := Read(path, f, func(r Record) error {
			var raw Event
			if err := json.Unmarshal(r.Raw, &raw); err != nil || raw.EventType != r.Event.EventType {
				t.Fatalf("raw line %q does not match its event", r.Raw)
			}
			got = append(got, r.Event)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, st
	}
	all, st := read(Filter{})
	if len(all) != 3 || st.Malformed != 1 || !st.Incomplete {
		t.Fatalf("all: %d events, stats %+v; want 3, 1 malformed, incomplete", len(all), st)
	}
	if got, _ := read(Filter{Event: SessionGranted}); len(got) != 2 {
		t.Fatalf("--event session_granted: %d events", len(got))
	}
	if got, _ := read(Filter{Peer: "PP-A"}); len(got) != 2 || got[1].EventType != SessionCompleted {
		t.Fatalf("--peer PP-A: %+v", got)
	}
	if got, _ := read(Filter{Since: t0.Add(time.Minute)}); len(got) != 2 {
		t.Fatalf("since: %+v", got)
	}
}

// collector gathers followed events for the test goroutine.
type collector struct {
	mu  sync.Mutex
	got []EventType
}

func (c *collector) add(r Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, r.Event.EventType)
	return nil
}

func (c *collector) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func TestFollowSurvivesLogrotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	ev := func(typ EventType) string { return line(t, Event{Timestamp: time.Now(), EventType: typ}) }
	appendTo(t, path, ev(PairingEnabled))
	ctx, cancel := context.WithCancel(context.Background())
	var c collector
	done := make(chan error, 1)
	go func() {
		_, err := Follow(ctx, path, Filter{}, 5*time.Millisecond, c.add)
		done <- err
	}()
	want := func(n int, what string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, what, func() bool { return c.n() >= n })
		if got := c.n(); got != n {
			t.Fatalf("%s: %d events, want %d", what, got, n)
		}
	}
	want(1, "existing line")

	// A line written in two pieces is delivered once, whole.
	half := ev(PeerPaired)
	appendTo(t, path, half[:10])
	appendTo(t, path, half[10:])
	want(2, "line written in two pieces")

	// copytruncate: the file is copied away and cut to zero; the writer
	// goes on appending at the new end.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	// Whether a poll sees the empty file or the new line, the new size is
	// below the offset read so far.
	appendTo(t, path, ev(SessionGranted))
	want(3, "line after copytruncate")

	// rename + create: the rest of the old file, then the new file.
	appendTo(t, path, ev(SessionCompleted))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path+".1", ev(SessionDenied)) // a writer not yet reopened
	appendTo(t, path, ev(QuotaExceeded))
	want(6, "lines around a rename rotation")

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	wantOrder := []EventType{PairingEnabled, PeerPaired, SessionGranted, SessionCompleted, SessionDenied, QuotaExceeded}
	for i, typ := range wantOrder {
		if c.got[i] != typ {
			t.Fatalf("events %v, want %v", c.got, wantOrder)
		}
	}
}

// TestFollowNoticesTruncationThatRegrew: after copytruncate the file grew
// past the old offset before the next poll; the offset no longer follows a
// newline, so the file is read again from its start.
func TestFollowNoticesTruncationThatRegrew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	short := line(t, Event{Timestamp: time.Now(), EventType: PeerPaired})
	appendTo(t, path, short)
	tl, err := openTail(path, Filter{}, func(Record) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer tl.close()
	if err := tl.drain(); err != nil || tl.off != int64(len(short)) {
		t.Fatalf("drain: off %d, %v", tl.off, err)
	}
	long := line(t, Event{Timestamp: time.Now(), EventType: SessionCompleted, Reason: "a reason long enough to pass the old offset"})
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, long)
	if err := tl.checkRotation(); err != nil {
		t.Fatal(err)
	}
	var got []EventType
	tl.fn = func(r Record) error { got = append(got, r.Event.EventType); return nil }
	if err := tl.drain(); err != nil || len(got) != 1 || got[0] != SessionCompleted || tl.stats.Malformed != 0 {
		t.Fatalf("after a regrown truncation: %v, malformed %d, %v", got, tl.stats.Malformed, err)
	}
}
