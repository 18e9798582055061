package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name     string
		existing []byte // nil: no file before the write
		oldPerm  os.FileMode
		data     []byte
		perm     os.FileMode
	}{
		{name: "new file 0600", data: []byte("secret"), perm: 0o600},
		{name: "new file 0644 ignores umask", data: []byte("public"), perm: 0o644},
		{name: "empty content", data: []byte{}, perm: 0o600},
		{name: "replace existing, tighten mode", existing: []byte("old content that is longer"), oldPerm: 0o644, data: []byte("new"), perm: 0o600},
		{name: "replace existing, widen mode", existing: []byte("old"), oldPerm: 0o600, data: []byte("new content"), perm: 0o640},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "file.json")
			if tc.existing != nil {
				if err := os.WriteFile(path, tc.existing, tc.oldPerm); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(path, tc.data, tc.perm); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Errorf("content = %q, want %q", got, tc.data)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.perm {
				t.Errorf("mode = %v, want %v", st.Mode().Perm(), tc.perm)
			}
			assertOnlyEntry(t, dir, "file.json")
		})
	}
}

func TestWriteFileRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFile("rel.txt", []byte("x"), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "rel.txt"))
	if err != nil || string(got) != "x" {
		t.Fatalf("read back = %q, %v", got, err)
	}
	assertOnlyEntry(t, dir, "rel.txt")
}

func TestWriteFileErrorsLeaveNoTemp(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty directory: the rename must fail, and neither
	// the directory nor a temp file may be left changed.
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	assertOnlyEntry(t, dir, "target")
	if st, err := os.Stat(filepath.Join(target, "child")); err != nil || !st.IsDir() {
		t.Fatalf("directory damaged: %v", err)
	}

	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
	if err := WriteFile(dir+string(filepath.Separator), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile to a path ending in a separator succeeded")
	}
}

func assertOnlyEntry(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != name {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only %q (temp file left behind?)", names, name)
	}
}
