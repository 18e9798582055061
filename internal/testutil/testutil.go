// Package testutil holds helpers shared by the project's tests: locating
// external interop peers (stock iperf3, openssl), polling with deadlines
// instead of sleeping, the reflector binary built once per test process, free
// data-port ranges, and what -short leaves out.
package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// RequireInteropEnv is the environment variable that turns a missing interop
// binary from a loud skip into a test failure. CI sets it (see .ci/run).
const RequireInteropEnv = "REFLECTOR_REQUIRE_INTEROP"

// LookBinary returns the path of an external program the test needs. When it
// is missing the test is skipped with a loud message, or fails when
// REFLECTOR_REQUIRE_INTEROP is set (as in CI). Under -short it skips the
// test whatever is installed: the quick run starts no external program.
func LookBinary(t testing.TB, name string) string {
	t.Helper()
	SkipIfShort(t, "runs "+name)
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := "INTEROP TEST NOT RUN: " + name + " is not installed (apt-get install " + name + ")"
	if os.Getenv(RequireInteropEnv) != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Eventually polls cond every few milliseconds until it returns true or the
// timeout passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, msg)
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// SkipIfShort skips the test under `go test -short` (make test-short), giving
// why it is not part of the quick run. It wins over REFLECTOR_REQUIRE_INTEROP:
// CI runs the full suite without -short, where these tests run and fail
// loudly when a tool is missing.
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped with -short: " + why)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a server's
// goroutines, a child process) and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
