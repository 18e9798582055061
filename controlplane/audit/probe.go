package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Probe reports whether the log can be written now, for the health
// definition (controlplane/health): Health must be nil, the configured path
// must open for appending, and it must be the file the log writes to. A
// log whose file was deleted, replaced, made read-only or moved away
// without a SIGHUP fails the probe, so no grant rests on lines that land
// nowhere an operator looks. The probe opens the path without creating it.
func (l *Log) Probe() error {
	if err := l.Health(); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("audit log %s is gone (deleted or moved without a SIGHUP)", l.path)
	}
	if err != nil {
		return fmt.Errorf("audit log %s cannot be opened for writing: %w", l.path, err)
	}
	defer f.Close()
	probe, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	l.mu.Lock()
	cur, _ := l.f.(interface{ Stat() (os.FileInfo, error) })
	l.mu.Unlock()
	if cur == nil {
		return nil // a test double: nothing to compare
	}
	st, err := cur.Stat()
	if err != nil {
		return fmt.Errorf("audit log %s: stat the open file: %w", l.path, err)
	}
	if !os.SameFile(st, probe) {
		return fmt.Errorf("audit log %s is not the file being written (replaced or moved without a SIGHUP)", l.path)
	}
	return nil
}
