package identity

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSeed writes a key file with an exact mode.
func writeSeed(t *testing.T, path string, seed []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, seed, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// seedFrom is a seed of consecutive bytes starting at b.
func seedFrom(b byte) []byte { return seedOf(func(i int) byte { return b + byte(i) }) }

// TestKeyFromKubernetesSecret: a Secret volume is a sticky world-writable
// (1777) read-only directory whose files are 0440 or 0400, owned by root
// and root's group or the pod's fsGroup.
func TestKeyFromKubernetesSecret(t *testing.T) {
	for _, mode := range []os.FileMode{0o400, 0o440} {
		dir := filepath.Join(t.TempDir(), "secret")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "identity.ed25519")
		writeSeed(t, path, seedFrom(1), mode)
		key, err := LoadKey(path)
		if err != nil {
			t.Fatalf("mode %04o in a 1777 directory: %v", mode, err)
		}
		if !key.Equal(ed25519.NewKeyFromSeed(seedFrom(1))) {
			t.Fatal("wrong key")
		}
	}
}

func TestKeyFileRuleRefusals(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // world-writable, no sticky bit
		t.Fatal(err)
	}
	path := filepath.Join(dir, "identity.ed25519")
	writeSeed(t, path, seedFrom(2), 0o600)
	if _, err := LoadKey(path); !errors.Is(err, ErrBadKeyFile) || !strings.Contains(err.Error(), "chmod o-w "+dir) {
		t.Fatalf("world-writable directory: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the foreign owner and group cases need root to chown")
	}
	path = filepath.Join(t.TempDir(), "identity.ed25519")
	writeSeed(t, path, seedFrom(2), 0o640)
	if err := os.Chown(path, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); !errors.Is(err, ErrBadKeyFile) || !strings.Contains(err.Error(), "gid 4242") ||
		!strings.Contains(err.Error(), "mode 0640") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable by a foreign group: %v", err)
	}
	// Root reads a key of the service user (sudo reflector show-id).
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err != nil {
		t.Fatalf("root loading the service user's key: %v", err)
	}
}

func TestPermissionErrorNamesOwnerModeAndFix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.ed25519")
	writeSeed(t, path, seedFrom(3), 0o600)
	err := explainOpenError(path, &fs.PathError{Op: "open", Path: path, Err: fs.ErrPermission})
	for _, want := range []string{"owner ", "mode 0600", "sudo chown ", path, "sudo -u reflector"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("%v does not wrap fs.ErrPermission", err)
	}
}

// TestRootWritesKeyOwnedLikeStateDir: `sudo reflector show-id` on a state
// directory of the service user leaves a key that user can read.
func TestRootWritesKeyOwnedLikeStateDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "identity.ed25519")
	if _, origin, err := LoadServerKey(path); err != nil || origin != KeyCreated {
		t.Fatalf("LoadServerKey = %v, %v", origin, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := fileOwner(st); uid != 4242 || gid != 4343 || st.Mode().Perm() != 0o600 {
		t.Fatalf("key owned by %d:%d mode %04o, want 4242:4343 0600", uid, gid, st.Mode().Perm())
	}
	if _, backup, err := RotateKey(path, time.Now()); err != nil {
		t.Fatal(err)
	} else if bst, err := os.Stat(backup); err != nil {
		t.Fatal(err)
	} else if uid, _, _ := fileOwner(bst); uid != 4242 {
		t.Fatalf("rotation backup owned by %d", uid)
	}
}

// TestAdoptRustReflectorKey: the Rust reflector wrote its seed with
// fs::write (mode from the umask, 0644) and then set 0600, as identity.key
// next to the configured path.
func TestAdoptRustReflectorKey(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, LegacyKeyName)
	if err := os.WriteFile(legacy, seedFrom(7), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	want := IDFromPublicKey(ed25519.NewKeyFromSeed(seedFrom(7)).Public().(ed25519.PublicKey))
	path := filepath.Join(dir, "identity.ed25519")
	key, origin, err := LoadServerKey(path)
	if err != nil || origin != KeyAdopted || IDFromPublicKey(key.Public().(ed25519.PublicKey)) != want {
		t.Fatalf("LoadServerKey = %v, %v; want the legacy key adopted", origin, err)
	}
	if got, err := LoadKey(path); err != nil || !got.Equal(key) {
		t.Fatalf("adopted key not written to %s: %v", path, err)
	}
	if _, origin, err := LoadServerKey(path); err != nil || origin != KeyLoaded {
		t.Fatalf("second load: %v, %v; want loaded (adopted once)", origin, err)
	}
	// A legacy key that breaks the rule is refused, never replaced by a
	// new identity.
	dir = t.TempDir()
	writeSeed(t, filepath.Join(dir, LegacyKeyName), seedFrom(8), 0o644)
	if _, _, err := LoadServerKey(filepath.Join(dir, "identity.ed25519")); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("unreadable legacy key: %v, want ErrBadKeyFile", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "identity.ed25519")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a new identity was created beside an unusable legacy key")
	}
	// The configured path is identity.key itself: nothing to adopt.
	if _, origin, err := LoadServerKey(filepath.Join(t.TempDir(), LegacyKeyName)); err != nil || origin != KeyCreated {
		t.Fatalf("configured identity.key, missing: %v, %v; want created", origin, err)
	}
}
