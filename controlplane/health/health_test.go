package health

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestChecks(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "identity.ed25519")
	_, key, _ := ed25519.GenerateKey(nil)
	if err := os.WriteFile(keyPath, key.Seed(), 0o600); err != nil {
		t.Fatal(err)
	}
	var auditErr, listenErr error
	draining := false
	c := New(Sources{
		AuditProbe: func() error { return auditErr }, AuditPath: "/x/audit.jsonl",
		KeyPath: keyPath, Key: key.Public().(ed25519.PublicKey),
		ListenerErr: func() error { return listenErr }, Draining: func() bool { return draining },
	})
	failed := func() []string {
		var out []string
		checks := c.Checks()
		var names []string
		for _, ch := range checks {
			names = append(names, ch.Name)
			if !ch.OK {
				if ch.Problem == "" || ch.Fix == "" {
					t.Errorf("failed check %s without problem or fix", ch.Name)
				}
				out = append(out, ch.Name)
			}
		}
		if !slices.Equal(names, Names) {
			t.Fatalf("checks %v, want %v", names, Names)
		}
		if Healthy(checks) != (out == nil) || (c.Err() == nil) != (out == nil) {
			t.Fatalf("Healthy/Err disagree with %v", out)
		}
		return out
	}
	if got := failed(); got != nil {
		t.Fatalf("healthy sources: failed %v", got)
	}
	auditErr, listenErr, draining = errors.New("disk full"), errors.New("closed"), true
	if got := failed(); !slices.Equal(got, []string{Audit, Listener, NotDraining}) {
		t.Fatalf("failed %v", got)
	}
	if err := c.Err(); !strings.Contains(err.Error(), "audit_log: disk full") {
		t.Fatalf("Err() = %v", err)
	}
	auditErr, listenErr, draining = nil, nil, false

	// The identity check reads the file each time: replaced, then missing.
	_, other, _ := ed25519.GenerateKey(nil)
	if err := os.WriteFile(keyPath, other.Seed(), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := failed(); !slices.Equal(got, []string{Identity}) {
		t.Fatalf("replaced key: failed %v", got)
	}
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if got := c.Checks()[1]; got.OK || !strings.Contains(got.Problem, "missing") {
		t.Fatalf("missing key: %+v", got)
	}
	if err := os.WriteFile(keyPath, key.Seed(), 0o644); err != nil { // breaks the key file rule
		t.Fatal(err)
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := c.Checks()[1]; got.OK || !strings.Contains(got.Problem, "chmod 600") {
		t.Fatalf("world-readable key: %+v", got)
	}
}
