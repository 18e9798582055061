// Package atomicfile replaces files atomically: readers see either the old
// content or the new one, never a partial write, and the new content is on
// stable storage when WriteFile returns.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to a temporary file in the directory of path, flushes
// it to disk, sets its mode to perm (exactly, without the umask), renames it
// over path and flushes the directory so the rename survives a crash. On any
// error the temporary file is removed and path is left untouched.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if base == "" {
		return fmt.Errorf("atomic write %q: path names a directory", path)
	}
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomic write %s: create temp file: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("atomic write %s: write %s: %w", path, tmp, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("atomic write %s: chmod %s: %w", path, tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("atomic write %s: fsync %s: %w", path, tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("atomic write %s: close %s: %w", path, tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomic write %s: rename: %w", path, err)
	}
	if err = syncDir(dir); err != nil {
		// The new content is in place; only its durability is in doubt.
		return fmt.Errorf("atomic write %s: %w", path, err)
	}
	return nil
}

// syncDir flushes a directory's entries (the rename) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close directory %s: %w", dir, cerr)
	}
	return nil
}
