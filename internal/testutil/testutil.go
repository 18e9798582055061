// Package testutil holds helpers shared by the project's tests: locating
// external interop peers (stock iperf3, openssl) and polling with deadlines
// instead of sleeping.
package testutil

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireInteropEnv is the environment variable that turns a missing interop
// binary from a loud skip into a test failure. CI sets it (see .ci/run).
const RequireInteropEnv = "REFLECTOR_REQUIRE_INTEROP"

// LookBinary returns the path of an external program the test needs. When it
// is missing the test is skipped with a loud message, or fails when
// REFLECTOR_REQUIRE_INTEROP is set (as in CI).
func LookBinary(t testing.TB, name string) string {
	t.Helper()
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
