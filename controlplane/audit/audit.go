// Package audit writes the reflector's audit log: one JSON object per line,
// appended to a file opened with O_APPEND so that logrotate's copytruncate
// works and every line reaches the file whole.
//
// The log fails closed by contract with its callers: Write returns an error
// whenever the line may not be on disk, and a caller about to grant something
// must refuse when it does. Health reports the last failure for /health and
// `reflector status`.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// EventType names what an audit line records.
type EventType string

// Event types of the audit log. The first ten are those of the original
// reflector; the rest are extensions.
const (
	ConnectionAccepted EventType = "connection_accepted"
	ConnectionDenied   EventType = "connection_denied"
	SessionGranted     EventType = "session_granted"
	SessionDenied      EventType = "session_denied"
	SessionCompleted   EventType = "session_completed"
	PairingEnabled     EventType = "pairing_enabled"
	PeerPaired         EventType = "peer_paired"
	PeerRemoved        EventType = "peer_removed"
	IdentityRotated    EventType = "identity_rotated"
	QuotaExceeded      EventType = "quota_exceeded"
	// TunnelAttachDenied records a refused tunnel attach (unknown test,
	// wrong token, or a peer that does not own the session).
	TunnelAttachDenied EventType = "tunnel_attach_denied"
	// IdentityAdopted records that the server took over the earlier (Rust)
	// reflector's identity.key, keeping the Endpoint ID appliances pinned.
	IdentityAdopted EventType = "identity_adopted"
	// RateLimited is an aggregate summary of events dropped or refused by a
	// rate limiter, written instead of one line per refused attempt.
	RateLimited EventType = "rate_limited"
)

// Event is one audit line. Write fills Timestamp and EndpointID when they
// are zero; every other field is the caller's.
type Event struct {
	// Timestamp is written in RFC 3339 with nanoseconds, in UTC.
	Timestamp time.Time `json:"timestamp"`
	EventType EventType `json:"event_type"`
	// EndpointID is the reflector's own Endpoint ID.
	EndpointID string `json:"endpoint_id"`
	// PeerID is the Endpoint ID derived from the peer's certificate key.
	PeerID   string `json:"peer_id,omitempty"`
	PeerAddr string `json:"peer_addr,omitempty"`
	TestType string `json:"test_type,omitempty"`
	TestID   string `json:"test_id,omitempty"`
	// Params are the test parameters as requested or granted.
	Params   any    `json:"params,omitempty"`
	Decision string `json:"decision,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// BytesTransferred and DurationSec are pointers so that a real zero
	// is written and an unknown value is left out.
	BytesTransferred *int64         `json:"bytes_transferred,omitempty"`
	DurationSec      *float64       `json:"duration_sec,omitempty"`
	Details          map[string]any `json:"details,omitempty"`
}

// Writer is what code that audits needs; *Log implements it. Accept a
// Writer to let tests substitute a failing or recording one.
type Writer interface {
	// Write appends one event. A non-nil error means the event may not
	// be recorded: a caller about to grant something must refuse.
	Write(e Event) error
}

var _ Writer = (*Log)(nil)

// ErrClosed is returned by Write and Reopen after Close.
var ErrClosed = errors.New("audit log closed")

// file is the part of *os.File the log uses; tests inject failing ones.
type file interface {
	io.Writer
	io.Closer
}

// openFunc opens the log's destination for appending.
type openFunc func(path string) (file, error)

const (
	fileMode = 0o600
	dirMode  = 0o700
)

// openAppend opens path for appending, creating it with mode 0600.
func openAppend(path string) (file, error) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, fileMode)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Log is an append-only JSON-lines audit log. It is safe for concurrent use.
type Log struct {
	path string
	open openFunc
	now  func() time.Time

	mu         sync.Mutex
	f          file // nil after Close
	endpointID string
	writeErr   error // last Write failure, cleared by a successful Write
	reopenErr  error // last Reopen failure, cleared by a successful Reopen
	torn       bool  // the last write left a partial line in the file
}

// Open opens (creating if needed) the audit log at path, creating missing
// parent directories with mode 0700; the file is created with mode 0600.
// endpointID is filled into events that carry none.
func Open(path, endpointID string) (*Log, error) {
	return openWith(path, endpointID, openAppend, time.Now)
}

func openWith(path, endpointID string, open openFunc, now func() time.Time) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("open audit log %s: create directory: %w", path, err)
	}
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return &Log{path: path, open: open, now: now, f: f, endpointID: endpointID}, nil
}

// Path returns the file name the log writes to.
func (l *Log) Path() string { return l.path }

// SetEndpointID changes the ID filled into later events, after an identity
// rotation.
func (l *Log) SetEndpointID(id string) {
	l.mu.Lock()
	l.endpointID = id
	l.mu.Unlock()
}

// Write appends e as one line. It fills a zero Timestamp with the current
// time and an empty EndpointID with the log's, and converts the timestamp
// to UTC. The whole line, newline included, is handed to the kernel in a
// single write on a file opened with O_APPEND, so lines from concurrent
// writers (in this process or others) never interleave. A failed or short
// write returns an error, and Health reports it until a later Write
// succeeds; the next line then starts on a fresh line so that it still
// parses.
func (l *Log) Write(e Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Timestamp.IsZero() {
		e.Timestamp = l.now()
	}
	e.Timestamp = e.Timestamp.UTC()
	if e.EndpointID == "" {
		e.EndpointID = l.endpointID
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit %s event: encode: %w", e.EventType, err)
	}
	if l.f == nil {
		return fmt.Errorf("audit %s event: %w", e.EventType, ErrClosed)
	}
	if l.torn {
		line = append([]byte{'\n'}, line...)
	}
	line = append(line, '\n')
	n, err := l.f.Write(line)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 && !cutPartial(l.f, n) {
			l.torn = true
		}
		l.writeErr = fmt.Errorf("write audit log %s: %w", l.path, err)
		return fmt.Errorf("audit %s event: %w", e.EventType, l.writeErr)
	}
	l.torn = false
	l.writeErr = nil
	return nil
}

// Health returns nil when the log is working: the last write (or the open)
// succeeded and the last Reopen, if any, did too. Otherwise it returns the
// failure, for /health and `reflector status`.
func (l *Log) Health() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.f == nil:
		return ErrClosed
	case l.writeErr != nil:
		return l.writeErr
	default:
		return l.reopenErr
	}
}

// Reopen opens the path again and switches later writes to the new file,
// for SIGHUP after logrotate moved the old file away. When the path cannot
// be opened the log keeps writing to the file it had (nothing is lost, the
// lines land in the rotated file), returns the error, and Health reports it
// until a Reopen succeeds.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("reopen audit log %s: %w", l.path, ErrClosed)
	}
	f, err := l.open(l.path)
	if err != nil {
		l.reopenErr = fmt.Errorf("reopen audit log %s (still writing to the previous file): %w", l.path, err)
		return l.reopenErr
	}
	old := l.f
	l.f, l.reopenErr, l.torn = f, nil, false
	if err := old.Close(); err != nil {
		return fmt.Errorf("reopen audit log %s: close previous file: %w", l.path, err)
	}
	return nil
}

// Close closes the file. Later writes fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("close audit log %s: %w", l.path, err)
	}
	return nil
}

// truncater is the part of *os.File that cutPartial needs.
type truncater interface {
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
}

// cutPartial removes the n bytes of a line that was only partly written
// (a full disk) from the end of f, so the file holds only whole lines. It
// reports whether that worked; when it did not, the next line starts on a
// fresh line instead (see Log.torn).
func cutPartial(f any, n int) bool {
	t, ok := f.(truncater)
	if !ok {
		return false
	}
	st, err := t.Stat()
	if err != nil || st.Size() < int64(n) {
		return false
	}
	return t.Truncate(st.Size()-int64(n)) == nil
}
