package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// Filter selects audit lines; zero fields select everything.
type Filter struct {
	// Since keeps events at or after this time.
	Since time.Time
	// Event keeps events of this type.
	Event EventType
	// Peer keeps events whose peer_id is exactly this (canonical) ID.
	Peer string
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Event) bool {
	return (f.Since.IsZero() || !e.Timestamp.Before(f.Since)) &&
		(f.Event == "" || e.EventType == f.Event) &&
		(f.Peer == "" || e.PeerID == f.Peer)
}

// Record is one audit line: the parsed event and the line as written
// (without its newline).
type Record struct {
	Event Event
	Raw   []byte
}

// ReadStats counts what a reader left out.
type ReadStats struct {
	// Malformed lines did not parse (a line torn by a full disk).
	Malformed int
	// Incomplete is set when the file ended inside a line (a torn last
	// line, or one being written).
	Incomplete bool
}

// maxLine bounds one audit line; a longer one is skipped as malformed.
const maxLine = 1 << 20

// Read calls fn for every whole line of the audit log at path that
// matches f, in file order. Lines that do not parse and an unfinished last
// line are skipped and counted, never fatal. An error from fn stops the
// read and is returned.
func Read(path string, f Filter, fn func(Record) error) (ReadStats, error) {
	t, err := openTail(path, f, fn)
	if err != nil {
		return ReadStats{}, err
	}
	defer t.close()
	if err := t.drain(); err != nil {
		return t.stats, err
	}
	t.stats.Incomplete = t.pending > 0
	return t.stats, nil
}

// Follow is Read, then it keeps calling fn for lines appended later until
// ctx ends (returning nil), checking every poll. It survives logrotate:
// after copytruncate it reads the shrunk file from its start, and after a
// rename (create) rotation it finishes the old file and opens the new one.
// A file that does not exist yet is waited for.
func Follow(ctx context.Context, path string, f Filter, poll time.Duration, fn func(Record) error) (ReadStats, error) {
	var t *tail
	for t == nil {
		var err error
		t, err = openTail(path, f, fn)
		if errors.Is(err, fs.ErrNotExist) {
			if !sleep(ctx, poll) {
				return ReadStats{}, nil
			}
			continue
		}
		if err != nil {
			return ReadStats{}, err
		}
	}
	defer t.close()
	for {
		if err := t.drain(); err != nil {
			return t.stats, err
		}
		if !sleep(ctx, poll) {
			return t.stats, nil
		}
		if err := t.checkRotation(); err != nil {
			return t.stats, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// tail reads whole lines from an audit log file, from off on.
type tail struct {
	path    string
	f       *os.File
	off     int64 // end of the last whole line consumed
	pending int64 // bytes after off without a newline yet
	filter  Filter
	fn      func(Record) error
	stats   ReadStats
	buf     []byte
}

func openTail(path string, f Filter, fn func(Record) error) (*tail, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &tail{path: path, f: file, filter: f, fn: fn, buf: make([]byte, 64<<10)}, nil
}

func (t *tail) close() { _ = t.f.Close() }

// drain reads from off to the end of the file, handing each whole line to
// emit; a trailing partial line stays unconsumed (pending) and is read
// again once its newline arrives.
func (t *tail) drain() error {
	var line []byte
	pos := t.off
	for {
		n, err := t.f.ReadAt(t.buf, pos)
		chunk := t.buf[:n]
		pos += int64(n)
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				line = append(line, chunk...)
				break
			}
			line = append(line, chunk[:i]...)
			t.off += int64(len(line)) + 1
			if err := t.emit(line); err != nil {
				return err
			}
			line, chunk = line[:0], chunk[i+1:]
		}
		if len(line) > maxLine { // no newline in sight: skip it for good
			t.off += int64(len(line))
			t.stats.Malformed++
			line = line[:0]
		}
		if errors.Is(err, io.EOF) || n == 0 && err == nil {
			t.pending = int64(len(line))
			return nil
		}
		if err != nil {
			return fmt.Errorf("read audit log %s: %w", t.path, err)
		}
	}
}

func (t *tail) emit(line []byte) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	var r Record
	if len(line) > maxLine || json.Unmarshal(line, &r.Event) != nil || r.Event.EventType == "" {
		t.stats.Malformed++
		return nil
	}
	if !t.filter.Match(&r.Event) {
		return nil
	}
	r.Raw = bytes.Clone(line)
	return t.fn(r)
}

// checkRotation notices logrotate: a new file at the path (rename and
// create: the old file is finished, then the new one read from its
// start) or a file cut shorter than what was read (copytruncate: read
// again from its start).
func (t *tail) checkRotation() error {
	cur, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat audit log %s: %w", t.path, err)
	}
	if st, err := os.Stat(t.path); err == nil && !os.SameFile(st, cur) {
		if err := t.drain(); err != nil {
			return err
		}
		next, err := os.Open(t.path)
		if err != nil {
			return nil // not there yet: try again at the next poll
		}
		if t.pending > 0 {
			t.stats.Malformed++ // the old file ended inside a line
		}
		_ = t.f.Close()
		t.f, t.off, t.pending = next, 0, 0
		return nil
	}
	if cur.Size() < t.off+t.pending || !t.atLineStart() {
		t.off, t.pending = 0, 0
	}
	return nil
}

// atLineStart reports whether off still follows a newline, which it does
// unless the file was truncated and has grown past off again since.
func (t *tail) atLineStart() bool {
	if t.off == 0 {
		return true
	}
	var b [1]byte
	n, _ := t.f.ReadAt(b[:], t.off-1)
	return n == 1 && b[0] == '\n'
}
