package quota

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/link"
)

var t0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

var testLimits = Limits{MaxTestsPerHour: 3, Cooldown: 5 * time.Second, MaxBytesPerDay: 1000}

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(filepath.Join(dir, "quotas.json"), testLimits)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// step is one action on the store at an offset from t0.
type step struct {
	at     time.Duration
	op     string // "begin", "end", "end-abnormal", "bytes", "check"
	bytes  int64
	want   link.DenyReason // for check: "" means allowed
	wantRA time.Duration   // for check: expected retry-after
}

func TestCheckTable(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"fresh peer allowed", []step{{op: "check"}}},
		{"cooldown after an aborted test", []step{
			{op: "begin"},
			{at: time.Second, op: "end-abnormal"},
			{at: 2 * time.Second, op: "check", want: link.DenyRateLimited, wantRA: 3 * time.Second},
			{at: 4500 * time.Millisecond, op: "check", want: link.DenyRateLimited, wantRA: time.Second},
			{at: 5 * time.Second, op: "check"},
		}},
		{"cooldown while the test still runs", []step{
			{op: "begin"},
			{at: 1200 * time.Millisecond, op: "check", want: link.DenyRateLimited, wantRA: 4 * time.Second},
		}},
		{"completed test releases the cooldown (appliance upload then download)", []step{
			{op: "begin"},
			{at: 2 * time.Second, op: "end"},
			{at: 2500 * time.Millisecond, op: "check"},
			{at: 2500 * time.Millisecond, op: "begin"},
			{at: 3 * time.Second, op: "check", want: link.DenyRateLimited, wantRA: 5 * time.Second},
		}},
		{"rolling hour", []step{
			{op: "begin"}, {at: time.Second, op: "end"},
			{at: 10 * time.Minute, op: "begin"}, {at: 10*time.Minute + time.Second, op: "end"},
			{at: 20 * time.Minute, op: "begin"}, {at: 20*time.Minute + time.Second, op: "end"},
			{at: 30 * time.Minute, op: "check", want: link.DenyRateLimited, wantRA: 30 * time.Minute},
			{at: 59*time.Minute + 59*time.Second + 500*time.Millisecond, op: "check", want: link.DenyRateLimited, wantRA: time.Second},
			{at: time.Hour, op: "check"},
			{at: time.Hour, op: "begin"}, {at: time.Hour + time.Second, op: "end"},
			// starts at 10m, 20m, 60m: the 10m one leaves the window at 70m.
			{at: time.Hour + 5*time.Minute, op: "check", want: link.DenyRateLimited, wantRA: 5 * time.Minute},
			{at: time.Hour + 10*time.Minute, op: "check"},
		}},
		{"byte budget", []step{
			{op: "begin"},
			{at: time.Second, op: "bytes", bytes: 999},
			{at: 2 * time.Second, op: "end"},
			{at: 3 * time.Second, op: "check"},
			{at: 3 * time.Second, op: "begin"},
			{at: 4 * time.Second, op: "bytes", bytes: 1},
			{at: 5 * time.Second, op: "end"},
			// 12:00:06 -> next midnight is 11h59m54s away.
			{at: 6 * time.Second, op: "check", want: link.DenyQuotaExceeded, wantRA: 11*time.Hour + 59*time.Minute + 54*time.Second},
		}},
		{"byte budget wins over the hourly limit", []step{
			{op: "begin"}, {op: "end"}, {op: "begin"}, {op: "end"}, {op: "begin"},
			{op: "bytes", bytes: 5000}, {op: "end"},
			{at: time.Minute, op: "check", want: link.DenyQuotaExceeded, wantRA: 11*time.Hour + 59*time.Minute},
		}},
		{"UTC day rollover resets bytes", []step{
			{at: 11*time.Hour + 59*time.Minute, op: "begin"},
			{at: 11*time.Hour + 59*time.Minute + 30*time.Second, op: "bytes", bytes: 2000},
			{at: 11*time.Hour + 59*time.Minute + 40*time.Second, op: "end"},
			{at: 11*time.Hour + 59*time.Minute + 50*time.Second, op: "check", want: link.DenyQuotaExceeded, wantRA: 10 * time.Second},
			{at: 12 * time.Hour, op: "check"},
		}},
		{"hourly limit spans midnight", []step{
			{at: 11*time.Hour + 40*time.Minute, op: "begin"}, {at: 11*time.Hour + 41*time.Minute, op: "end"},
			{at: 11*time.Hour + 50*time.Minute, op: "begin"}, {at: 11*time.Hour + 51*time.Minute, op: "end"},
			{at: 11*time.Hour + 55*time.Minute, op: "begin"}, {at: 11*time.Hour + 56*time.Minute, op: "end"},
			{at: 12*time.Hour + 5*time.Minute, op: "check", want: link.DenyRateLimited, wantRA: 35 * time.Minute},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			const peer = "PP-TEST"
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var err error
				switch st.op {
				case "begin":
					err = s.Begin(peer, now)
				case "end":
					err = s.End(peer, true, now)
				case "end-abnormal":
					err = s.End(peer, false, now)
				case "bytes":
					err = s.AddBytes(peer, st.bytes, now)
				case "check":
					d := s.Check(peer, now)
					if d.OK != (st.want == "") || d.Reason != st.want {
						t.Fatalf("step %d at +%v: Check = %+v, want reason %q", i, st.at, d, st.want)
					}
					if !d.OK && d.RetryAfter != st.wantRA {
						t.Fatalf("step %d at +%v: RetryAfter = %v, want %v (%s)", i, st.at, d.RetryAfter, st.wantRA, d.Message)
					}
					if !d.OK && (d.Message == "" || d.RetryAfterSec() != int(st.wantRA/time.Second)) {
						t.Fatalf("step %d: decision %+v lacks a message or whole seconds", i, d)
					}
				default:
					t.Fatalf("bad op %q", st.op)
				}
				if err != nil {
					t.Fatalf("step %d %s: %v", i, st.op, err)
				}
			}
		})
	}
}

func TestPeersAreSeparate(t *testing.T) {
	s := open(t, t.TempDir())
	if err := s.Begin("A", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBytes("A", 5000, t0); err != nil {
		t.Fatal(err)
	}
	if d := s.Check("A", t0.Add(time.Minute)); d.OK {
		t.Fatalf("A allowed after using its budget")
	}
	if d := s.Check("B", t0.Add(time.Second)); !d.OK {
		t.Fatalf("B refused: %+v", d)
	}
	if got := s.Remaining("A", t0); got != 0 {
		t.Fatalf("Remaining(A) = %d, want 0", got)
	}
	if got := s.Remaining("B", t0); got != 1000 {
		t.Fatalf("Remaining(B) = %d, want 1000", got)
	}
	if u := s.Usages(t0); len(u) != 1 || u["A"].BytesToday != 5000 || u["A"].TestsToday != 1 {
		t.Fatalf("Usages = %+v, want only A with 1 test and 5000 bytes", u)
	}
	tests, bytes := s.Today(t0)
	if tests != 1 || bytes != 5000 {
		t.Fatalf("Today = %d tests, %d bytes; want 1, 5000", tests, bytes)
	}
	if tests, bytes := s.Today(t0.Add(24 * time.Hour)); tests != 0 || bytes != 0 {
		t.Fatalf("Today on the next day = %d, %d; want zeros", tests, bytes)
	}
}

func TestPersistAndReload(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "quotas.json"), testLimits, WithFlushInterval(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Begin("A", t0); err != nil {
		t.Fatal(err)
	}
	// Begin persisted; bytes within the flush interval are only in memory.
	if err := s.AddBytes("A", 100, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := open(t, dir).Peer("A", t0.Add(time.Second)); got.TestsToday != 1 || got.BytesToday != 0 || got.TestsLastHour != 1 {
		t.Fatalf("after Begin and an early AddBytes the file holds %+v, want 1 test, 0 bytes", got)
	}
	// Past the interval the next AddBytes writes everything.
	if err := s.AddBytes("A", 50, t0.Add(2500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if got := open(t, dir).Peer("A", t0.Add(3*time.Second)); got.BytesToday != 150 {
		t.Fatalf("after the flush interval the file holds %d bytes, want 150", got.BytesToday)
	}
	if err := s.End("A", false, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	r := open(t, dir)
	if d := r.Check("A", t0.Add(4*time.Second)); d.OK || d.Reason != link.DenyRateLimited || d.RetryAfter != time.Second {
		t.Fatalf("reloaded store lost the cooldown: %+v", d)
	}
	if tests, bytes := r.Today(t0.Add(4 * time.Second)); tests != 1 || bytes != 150 {
		t.Fatalf("reloaded totals = %d, %d; want 1, 150", tests, bytes)
	}
	// The file is versioned JSON, mode 0600.
	fi, err := os.Stat(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != fileMode {
		t.Fatalf("quota file mode %v, want %v", fi.Mode().Perm(), os.FileMode(fileMode))
	}
	var fd map[string]any
	b, _ := os.ReadFile(r.Path())
	if err := json.Unmarshal(b, &fd); err != nil || fd["version"] != float64(FileVersion) {
		t.Fatalf("file %s: version %v, err %v", b, fd["version"], err)
	}
}

func TestFlushDropsIdlePeers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Begin("A", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.End("A", true, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Next day, more than an hour later: nothing of A counts any more.
	later := t0.Add(25 * time.Hour)
	if err := s.Begin("B", later); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	var fd fileData
	if err := json.Unmarshal(b, &fd); err != nil {
		t.Fatal(err)
	}
	if _, ok := fd.Peers["A"]; ok || fd.Peers["B"] == nil {
		t.Fatalf("peers in file = %v, want only B", fd.Peers)
	}
}

func TestOpenCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not json":         "{\"version\": 1, \"peers\": {",
		"wrong version":    `{"version": 7, "peers": {}}`,
		"no version":       `{"peers": {}}`,
		"negative bytes":   `{"version": 1, "peers": {"A": {"bytes_day": -5}}}`,
		"null peer":        `{"version": 1, "peers": {"A": null}}`,
		"negative totals":  `{"version": 1, "bytes_today": -1, "peers": {}}`,
		"wrong field type": `{"version": 1, "peers": {"A": {"starts": "yesterday"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "quotas.json")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(p, testLimits)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open(%s) = %v, want ErrCorrupt", content, err)
			}
		})
	}
}

func TestOpenUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: not "missing", not "corrupt".
	p := filepath.Join(dir, "quotas.json")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, testLimits); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open on a directory = %v, want a read error", err)
	}
}

func TestPersistFailureReported(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "missing", "quotas.json"), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Begin("A", t0); err == nil {
		t.Fatal("Begin persisted into a missing directory")
	}
	if s.Err() == nil {
		t.Fatal("Err() is nil after a failed write")
	}
	// The start is counted in memory regardless.
	if got := s.Peer("A", t0); got.TestsLastHour != 1 {
		t.Fatalf("in-memory starts = %d, want 1", got.TestsLastHour)
	}
	if err := os.Mkdir(filepath.Join(dir, "missing"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(t0); err != nil || s.Err() != nil {
		t.Fatalf("Flush after repair = %v, Err = %v", err, s.Err())
	}
}

func TestAddBytesSaturates(t *testing.T) {
	s := open(t, t.TempDir())
	const big = int64(1) << 62
	for range 3 {
		if err := s.AddBytes("A", big, t0); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Peer("A", t0).BytesToday; got <= 0 {
		t.Fatalf("bytes overflowed to %d", got)
	}
	if err := s.AddBytes("A", -5, t0); err != nil {
		t.Fatal(err)
	}
}

// TestWithdraw: a start taken back counts neither in the hour nor the day,
// releases the cooldown, and is gone from the file too.
func TestWithdraw(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	const peer = "PP-A"
	if err := s.Begin(peer, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.End(peer, true, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	second := t0.Add(2 * time.Second)
	if err := s.Begin(peer, second); err != nil {
		t.Fatal(err)
	}
	if d := s.Check(peer, second.Add(time.Second)); d.OK {
		t.Fatal("no cooldown after a start")
	}
	if err := s.Withdraw(peer, second, second.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := s.Check(peer, second.Add(time.Second)); !d.OK {
		t.Fatalf("after Withdraw: %+v, want allowed", d)
	}
	u := s.Peer(peer, second.Add(time.Second))
	if u.TestsLastHour != 1 || u.TestsToday != 1 {
		t.Fatalf("usage %+v: want only the first start counted", u)
	}
	if tests, _ := s.Today(second); tests != 1 {
		t.Fatalf("tests today %d, want 1", tests)
	}
	if u := open(t, dir).Peer(peer, second.Add(time.Second)); u.TestsLastHour != 1 || u.TestsToday != 1 {
		t.Fatalf("reloaded usage %+v", u)
	}
}
