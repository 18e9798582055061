package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const selfID = "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"

// readLines returns the file's lines, failing on a missing final newline.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end in a newline: %q", path, data)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		t.Fatalf("%s contains NUL bytes", path)
	}
	return strings.Split(string(data[:len(data)-1]), "\n")
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("line %q... is not JSON: %v", line[:min(len(line), 200)], err)
	}
	return m
}

func TestWriteFields(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(path, selfID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })

	zero := int64(0)
	dur := 10.5
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	events := []Event{
		{EventType: ConnectionAccepted, PeerID: "PP-PEER", PeerAddr: "192.0.2.1:5000"},
		{EventType: SessionCompleted, TestType: "throughput", TestID: "t-1", BytesTransferred: &zero, DurationSec: &dur,
			Params: map[string]any{"duration_sec": 10}, Decision: "granted", Timestamp: fixed},
		{EventType: IdentityRotated, EndpointID: "PP-OTHER", Details: map[string]any{"backup": "key.bak"}},
	}
	for _, e := range events {
		if err := l.Write(e); err != nil {
			t.Fatalf("Write(%s): %v", e.EventType, err)
		}
	}
	if err := l.Health(); err != nil {
		t.Fatalf("Health = %v", err)
	}
	lines := readLines(t, path)
	if len(lines) != len(events) {
		t.Fatalf("got %d lines, want %d", len(lines), len(events))
	}
	tests := []struct {
		want   map[string]any
		absent []string
	}{
		{want: map[string]any{"event_type": "connection_accepted", "endpoint_id": selfID, "peer_id": "PP-PEER", "peer_addr": "192.0.2.1:5000"},
			absent: []string{"test_type", "test_id", "params", "decision", "reason", "bytes_transferred", "duration_sec", "details"}},
		{want: map[string]any{"event_type": "session_completed", "endpoint_id": selfID, "test_type": "throughput", "test_id": "t-1",
			"bytes_transferred": 0.0, "duration_sec": 10.5, "decision": "granted", "timestamp": "2026-01-02T02:04:05.000000006Z"},
			absent: []string{"peer_id", "reason"}},
		{want: map[string]any{"event_type": "identity_rotated", "endpoint_id": "PP-OTHER"}},
	}
	for i, tc := range tests {
		m := decode(t, lines[i])
		for k, v := range tc.want {
			if m[k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, m[k], v)
			}
		}
		for _, k := range tc.absent {
			if _, ok := m[k]; ok {
				t.Errorf("line %d: %s present, want it left out", i, k)
			}
		}
		ts, _ := m["timestamp"].(string)
		parsed, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !strings.HasSuffix(ts, "Z") {
			t.Errorf("line %d: timestamp %q is not RFC 3339 UTC (%v)", i, ts, err)
		}
		if i == 0 && time.Since(parsed) > time.Minute {
			t.Errorf("line 0: filled timestamp %v is not now", parsed)
		}
	}
	if p := decode(t, lines[1])["params"].(map[string]any); p["duration_sec"] != 10.0 {
		t.Errorf("params = %v", p)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != fileMode {
		t.Errorf("file mode = %v (%v), want %v", st.Mode().Perm(), err, os.FileMode(fileMode))
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != dirMode {
		t.Errorf("dir mode = %v (%v), want %v", st.Mode().Perm(), err, os.FileMode(dirMode))
	}

	l.SetEndpointID("PP-NEW")
	if err := l.Write(Event{EventType: PeerRemoved}); err != nil {
		t.Fatal(err)
	}
	lines = readLines(t, path)
	if got := decode(t, lines[len(lines)-1])["endpoint_id"]; got != "PP-NEW" {
		t.Errorf("after SetEndpointID: endpoint_id = %v", got)
	}
}

func TestEncodeError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, selfID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	if err := l.Write(Event{EventType: SessionGranted, Params: make(chan int)}); err == nil {
		t.Fatal("Write of an unencodable event succeeded")
	}
	if lines := readLines(t, path); len(lines) != 0 {
		t.Fatalf("unencodable event left %d lines", len(lines))
	}
}

// TestConcurrentWriters runs goroutines on two Log values sharing one file,
// as two processes would, and checks that every line arrives whole.
func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	logs := make([]*Log, 2)
	for i := range logs {
		l, err := Open(path, selfID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		logs[i] = l
	}
	const writers, perWriter = 8, 100
	pad := strings.Repeat("x", 3000) // lines larger than a pipe buffer's atomic size
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := logs[w%len(logs)]
			for i := range perWriter {
				e := Event{EventType: SessionGranted, TestID: fmt.Sprintf("%d/%d", w, i), Details: map[string]any{"pad": pad}}
				if err := l.Write(e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range readLines(t, path) {
		m := decode(t, line)
		id, _ := m["test_id"].(string)
		if seen[id] {
			t.Fatalf("test_id %q twice", id)
		}
		seen[id] = true
		if m["details"].(map[string]any)["pad"] != pad {
			t.Fatalf("line %q: padding damaged", id)
		}
	}
	if len(seen) != writers*perWriter {
		t.Fatalf("got %d lines, want %d", len(seen), writers*perWriter)
	}
}

func TestReopenAfterRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, selfID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	write := func(id string) {
		t.Helper()
		if err := l.Write(Event{EventType: SessionGranted, TestID: id}); err != nil {
			t.Fatal(err)
		}
	}
	write("before")
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	write("between") // still the old file, as before logrotate's postrotate
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	write("after")

	ids := func(p string) (out []string) {
		for _, line := range readLines(t, p) {
			out = append(out, decode(t, line)["test_id"].(string))
		}
		return out
	}
	if got := strings.Join(ids(rotated), ","); got != "before,between" {
		t.Errorf("rotated file holds %q", got)
	}
	if got := strings.Join(ids(path), ","); got != "after" {
		t.Errorf("new file holds %q", got)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != fileMode {
		t.Errorf("new file mode = %v (%v)", st.Mode().Perm(), err)
	}
}

func TestCopytruncate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, selfID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	for i := range 3 {
		if err := l.Write(Event{EventType: SessionGranted, TestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(Event{EventType: SessionCompleted, TestID: "after-truncate"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 || data[0] != '{' {
		t.Fatalf("after truncation the file starts with %q, want the new line at offset 0", data[:min(len(data), 8)])
	}
	lines := readLines(t, path) // also checks for NUL holes
	if len(lines) != 1 || decode(t, lines[0])["test_id"] != "after-truncate" {
		t.Fatalf("lines after truncation: %q", lines)
	}
}

func TestDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here")
	}
	l, err := Open("/dev/full", selfID)
	if err != nil {
		t.Fatalf("Open(/dev/full): %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	err = l.Write(Event{EventType: SessionGranted})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write to /dev/full = %v, want ENOSPC", err)
	}
	if h := l.Health(); !errors.Is(h, syscall.ENOSPC) {
		t.Fatalf("Health = %v, want ENOSPC", h)
	}
}

// flakyFile writes into a real file but fails on demand, optionally after
// writing part of the line as a full disk does.
type flakyFile struct {
	*os.File
	mu      *sync.Mutex
	fail    *bool
	partial int
}

func (f flakyFile) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *f.fail {
		n, _ := f.File.Write(b[:min(f.partial, len(b))])
		return n, syscall.ENOSPC
	}
	return f.File.Write(b)
}

func TestWriteFailureAndRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var mu sync.Mutex
	fail := false
	openFails := false
	open := func(p string) (file, error) {
		mu.Lock()
		defer mu.Unlock()
		if openFails {
			return nil, syscall.EACCES
		}
		f, err := openAppend(p)
		if err != nil {
			return nil, err
		}
		return flakyFile{File: f.(*os.File), mu: &mu, fail: &fail, partial: 10}, nil
	}
	set := func(p *bool, v bool) { mu.Lock(); *p = v; mu.Unlock() }
	l, err := openWith(path, selfID, open, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })

	if err := l.Write(Event{EventType: SessionGranted, TestID: "ok-1"}); err != nil {
		t.Fatal(err)
	}
	set(&fail, true)
	err = l.Write(Event{EventType: SessionGranted, TestID: "lost"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("failing Write = %v, want ENOSPC", err)
	}
	if !errors.Is(l.Health(), syscall.ENOSPC) {
		t.Fatalf("Health after failure = %v", l.Health())
	}
	if err := l.Write(Event{EventType: SessionGranted}); err == nil {
		t.Fatal("second failing Write succeeded")
	}
	set(&fail, false)
	if err := l.Write(Event{EventType: SessionGranted, TestID: "ok-2"}); err != nil {
		t.Fatalf("Write after recovery: %v", err)
	}
	if err := l.Health(); err != nil {
		t.Fatalf("Health after recovery = %v", err)
	}
	// The fragments the full disk let through were cut off again: the file
	// holds only whole lines.
	lines := readLines(t, path)
	if len(lines) != 2 {
		t.Fatalf("lines = %q, want ok-1, ok-2 and no torn fragments", lines)
	}
	if decode(t, lines[0])["test_id"] != "ok-1" || decode(t, lines[1])["test_id"] != "ok-2" {
		t.Fatalf("lines = %q", lines)
	}

	// A failed Reopen keeps the old file and is reported until one succeeds.
	set(&openFails, true)
	if err := l.Reopen(); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Reopen = %v, want EACCES", err)
	}
	if err := l.Write(Event{EventType: SessionGranted, TestID: "ok-3"}); err != nil {
		t.Fatalf("Write after failed Reopen: %v", err)
	}
	if !errors.Is(l.Health(), syscall.EACCES) {
		t.Fatalf("Health after failed Reopen = %v", l.Health())
	}
	set(&openFails, false)
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Health(); err != nil {
		t.Fatalf("Health after Reopen = %v", err)
	}
	if got := len(readLines(t, path)); got != 3 {
		t.Fatalf("got %d lines, want 3", got)
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, selfID)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Write(Event{EventType: SessionGranted}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if err := l.Reopen(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reopen after Close = %v, want ErrClosed", err)
	}
	if !errors.Is(l.Health(), ErrClosed) {
		t.Fatalf("Health after Close = %v", l.Health())
	}
}

func TestOpenError(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(parent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(parent, "audit.jsonl")
	_, err := Open(path, selfID)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open under a regular file = %v, want an error naming %s", err, path)
	}
}

// noTruncFile hides Stat/Truncate, like a writer that cannot be cut.
type noTruncFile struct{ w *strings.Builder }

func (f noTruncFile) Write(b []byte) (int, error) { return f.w.Write(b) }

func TestCutPartialNeedsTruncate(t *testing.T) {
	if cutPartial(noTruncFile{&strings.Builder{}}, 3) {
		t.Fatal("cutPartial succeeded on a writer without Truncate")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.WriteString("whole\npart"); err != nil {
		t.Fatal(err)
	}
	if !cutPartial(f, 4) {
		t.Fatal("cutPartial failed on a file")
	}
	b, err := os.ReadFile(f.Name())
	if err != nil || string(b) != "whole\n" {
		t.Fatalf("file = %q, %v; want %q", b, err, "whole\n")
	}
}
