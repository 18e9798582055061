package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadKeyRejects(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		msg     string
	}{
		{name: "too short", content: make([]byte, 31), mode: 0o600, msg: "31 bytes, expected exactly 32"},
		{name: "too long", content: make([]byte, 64), mode: 0o600, msg: "64 bytes, expected exactly 32"},
		{name: "empty", content: nil, mode: 0o600, msg: "0 bytes"},
		{name: "world readable", content: make([]byte, 32), mode: 0o644, msg: "mode 0644"},
		{name: "group writable", content: make([]byte, 32), mode: 0o620, msg: "mode 0620"},
		{name: "other readable", content: make([]byte, 32), mode: 0o604, msg: "others can access it"},
		{name: "other writable", content: make([]byte, 32), mode: 0o602, msg: "chmod 600"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.ed25519")
			if err := os.WriteFile(path, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // umask-proof
				t.Fatal(err)
			}
			_, err := LoadKey(path)
			if !errors.Is(err, ErrBadKeyFile) {
				t.Fatalf("LoadKey error = %v, want ErrBadKeyFile", err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the path and %q", err, tc.msg)
			}
			// LoadOrCreateKey must not paper over a bad file by replacing it.
			if _, _, err := LoadOrCreateKey(path); !errors.Is(err, ErrBadKeyFile) {
				t.Errorf("LoadOrCreateKey error = %v, want ErrBadKeyFile", err)
			}
		})
	}
}

func TestLoadKeyNotRegular(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("LoadKey(directory) error = %v, want ErrBadKeyFile", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKey(missing) error = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadKeyVector(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := IDFromPublicKey(key.Public().(ed25519.PublicKey)); got != "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K" {
		t.Fatalf("ID of zero seed file = %s", got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "state", "sub", "identity.ed25519")
	key, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKey = created %v, err %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != SeedSize {
		t.Errorf("key file mode %v size %d, want 0600 and 32", st.Mode().Perm(), st.Size())
	}
	for _, d := range []string{filepath.Join(base, "state"), filepath.Join(base, "state", "sub")} {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("directory %s: mode %v, err %v; want 0700", d, st.Mode().Perm(), err)
		}
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Equal(raw, key.Seed()) {
		t.Error("file does not hold the key's seed")
	}
	again, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateKey = created %v, err %v", created, err)
	}
	if !again.Equal(key) {
		t.Error("second LoadOrCreateKey returned another key")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("key directory holds %d entries, want only the key", len(entries))
	}
}

func TestRotateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.ed25519")
	old, _, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 4, 5, 6, 0, time.FixedZone("CET", 3600))
	key, backup, err := RotateKey(path, now)
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if want := path + ".20261129T030506Z.bak"; backup != want {
		t.Errorf("backup path = %s, want %s (UTC)", backup, want)
	}
	if key.Equal(old) {
		t.Fatal("rotation kept the same key")
	}
	loaded, err := LoadKey(path)
	if err != nil || !loaded.Equal(key) {
		t.Fatalf("key file after rotation: %v, matches new key %v", err, err == nil && loaded.Equal(key))
	}
	kept, err := LoadKey(backup) // also checks mode 0600 and size
	if err != nil || !kept.Equal(old) {
		t.Fatalf("backup: %v, holds old key %v", err, err == nil && kept.Equal(old))
	}

	// A second rotation in the same second must not overwrite the backup.
	if _, _, err := RotateKey(path, now); err == nil || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second rotation with the same timestamp: err = %v, want fs.ErrExist", err)
	}
	if still, err := LoadKey(path); err != nil || !still.Equal(key) {
		t.Fatal("failed rotation changed the key")
	}
	if kept, err := LoadKey(backup); err != nil || !kept.Equal(old) {
		t.Fatal("failed rotation changed the backup")
	}

	if _, _, err := RotateKey(filepath.Join(dir, "missing"), now); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("RotateKey of a missing key: err = %v, want fs.ErrNotExist", err)
	}
}
