package filewatch

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// configMapDir lays out dir the way the kubelet mounts a ConfigMap:
// name -> ..data/name, ..data -> ..<version>, ..<version>/name holds body.
func configMapDir(t *testing.T, dir, name, body string) {
	t.Helper()
	writeVersion(t, dir, "..2026_12_01_00_00_00.000000001", name, body)
	if err := os.Symlink("..2026_12_01_00_00_00.000000001", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func writeVersion(t *testing.T, dir, version, name, body string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, version, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// swap publishes a new version as the kubelet's atomic writer does: new
// timestamped directory, a ..data_tmp symlink to it renamed over ..data,
// then the old directory removed. The file's own symlink is not touched.
func swap(t *testing.T, dir, name, body string, n int) {
	t.Helper()
	old, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	version := fmt.Sprintf("..2026_12_01_00_00_%02d.000000001", n)
	writeVersion(t, dir, version, name, body)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
		t.Fatal(err)
	}
}

// recorder collects the targets changed reports.
type recorder struct {
	mu      sync.Mutex
	targets []string
}

func (r *recorder) changed(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.targets = append(r.targets, target)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.targets...)
}

func TestConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "reflector.toml")
	configMapDir(t, dir, "reflector.toml", "[access]\nauthorized_peers = []\n")
	var rec recorder
	w, err := Start(path, 5*time.Millisecond, rec.changed)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	// Same content republished (the kubelet resyncs): no change reported.
	swap(t, dir, "reflector.toml", "[access]\nauthorized_peers = []\n", 1)
	swap(t, dir, "reflector.toml", "[access]\nauthorized_peers = [\"PP-X\"]\n", 2)
	testutil.Eventually(t, 5*time.Second, "the ..data swap was not noticed", func() bool { return len(rec.get()) >= 1 })
	swap(t, dir, "reflector.toml", "[access]\nauthorized_peers = [\"PP-Y\"]\n", 3)
	testutil.Eventually(t, 5*time.Second, "the second swap was not noticed", func() bool { return len(rec.get()) >= 2 })
	w.Stop()
	got := rec.get()
	if len(got) != 2 {
		t.Fatalf("changed called %d times (%q), want 2: once per new content", len(got), got)
	}
	want := filepath.Join(dir, "..2026_12_01_00_00_03.000000001", "reflector.toml")
	if resolved, _ := filepath.EvalSymlinks(want); got[1] != resolved {
		t.Errorf("target %q, want %q", got[1], resolved)
	}
}

func TestMissingFileAndRecovery(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	if _, err := Start(path, time.Millisecond, func(string) {}); err == nil {
		t.Fatal("Start on a missing file succeeded")
	}
	if _, err := Start(path, 0, func(string) {}); err == nil {
		t.Fatal("Start with interval 0 succeeded")
	}
	if err := os.WriteFile(path, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	// The ticker never fires in this test: polls are driven by hand.
	w, err := Start(path, time.Hour, rec.changed)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	w.poll()
	if n := len(rec.get()); n != 0 {
		t.Fatalf("unchanged content reported %d times", n)
	}
	// Gone for a while (a failed read keeps the old content), then back
	// with new content written by rename: one change.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.poll()
	w.poll()
	if n := len(rec.get()); n != 0 {
		t.Fatalf("a missing file was reported as %d changes", n)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	w.poll()
	w.poll()
	if got := rec.get(); len(got) != 1 || got[0] != path {
		t.Fatalf("changes %q, want one for %s", got, path)
	}
	w.Stop()
	w.Stop() // idempotent
}
