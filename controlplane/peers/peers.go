// Package peers holds the allowlist of appliances the reflector serves: the
// peers listed in the config file plus those added by pairing or by the
// operator, which are persisted in a JSON file that is replaced atomically
// on every change.
package peers

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unicode"

	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/internal/atomicfile"
)

// Source says where an allowlist entry comes from.
type Source string

const (
	// SourceConfig entries come from the config file. They are not
	// persisted and cannot be removed through the admin socket.
	SourceConfig Source = "config"
	// SourcePaired entries were added by redeeming a pairing token.
	SourcePaired Source = "paired"
	// SourceAdmin entries were added by `reflector peers add`.
	SourceAdmin Source = "admin"
)

// FileVersion is the version of the persisted file format.
const FileVersion = 1

// MaxNoteLen is the longest note, in bytes, an entry may carry.
const MaxNoteLen = 256

const (
	fileMode = 0o600
	dirMode  = 0o700
)

var (
	// ErrStatic is returned when removing a peer listed in the config file.
	ErrStatic = errors.New("peer is listed in the config file")
	// ErrInvalid is wrapped by errors about a bad source or note.
	ErrInvalid = errors.New("invalid peer entry")
)

// Entry is one allowed peer.
type Entry struct {
	ID      identity.EndpointID `json:"id"`
	Source  Source              `json:"source"`
	AddedAt time.Time           `json:"added_at"`
	Note    string              `json:"note,omitempty"`
}

// file is the persisted form: {"version":1,"peers":[...]}.
type file struct {
	Version int     `json:"version"`
	Peers   []Entry `json:"peers"`
}

// Store is the allowlist. It is safe for concurrent use.
//
// Code that must react when a peer loses access (to close its connections
// and sessions) registers with OnRemove.
type Store struct {
	path string
	now  func() time.Time

	// mu serialises changes (including the file write) and guards the maps.
	mu     sync.RWMutex
	saved  map[identity.EndpointID]Entry // persisted: paired and admin
	static map[identity.EndpointID]Entry // from the config file

	cbMu     sync.Mutex
	onRemove []func(identity.EndpointID)
}

// Open loads the persisted allowlist at path, if the file exists, and adds
// the config file's peers. A file that cannot be read or parsed, or that
// holds an invalid entry, is an error naming the file: peers are never
// dropped silently. The file is created by the first Add.
func Open(path string, static []identity.EndpointID) (*Store, error) {
	s := &Store{path: path, now: time.Now, saved: map[identity.EndpointID]Entry{}}
	if err := s.load(); err != nil {
		return nil, err
	}
	st, err := s.staticSet(static)
	if err != nil {
		return nil, err
	}
	s.static = st
	return s, nil
}

func (s *Store) load() error {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read peer allowlist: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("peer allowlist %s is corrupt (fix or restore it; it was not changed): %w", s.path, err)
	}
	if f.Version != FileVersion {
		return fmt.Errorf("peer allowlist %s: unsupported version %d, expected %d", s.path, f.Version, FileVersion)
	}
	for i, e := range f.Peers {
		id, err := identity.ParseEndpointID(string(e.ID))
		if err != nil {
			return fmt.Errorf("peer allowlist %s: entry %d: %w", s.path, i, err)
		}
		if err := checkEntry(e.Source, e.Note); err != nil {
			return fmt.Errorf("peer allowlist %s: entry %d (%s): %w", s.path, i, id, err)
		}
		if _, dup := s.saved[id]; dup {
			continue // a hand-edited duplicate: the first entry stands
		}
		e.ID = id
		s.saved[id] = e
	}
	return nil
}

// checkEntry validates what Add accepts and what the file may hold.
func checkEntry(src Source, note string) error {
	if src != SourcePaired && src != SourceAdmin {
		return fmt.Errorf("%w: source %q (expected %q or %q)", ErrInvalid, src, SourcePaired, SourceAdmin)
	}
	if len(note) > MaxNoteLen {
		return fmt.Errorf("%w: note of %d bytes, at most %d", ErrInvalid, len(note), MaxNoteLen)
	}
	for _, r := range note {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: note contains control character %q", ErrInvalid, r)
		}
	}
	return nil
}

// staticSet validates config peers and keeps the AddedAt of those already
// present. Callers hold mu or own s exclusively.
func (s *Store) staticSet(ids []identity.EndpointID) (map[identity.EndpointID]Entry, error) {
	now := s.now().UTC()
	out := make(map[identity.EndpointID]Entry, len(ids))
	for _, raw := range ids {
		id, err := identity.ParseEndpointID(string(raw))
		if err != nil {
			return nil, fmt.Errorf("config peer: %w", err)
		}
		e, ok := s.static[id]
		if !ok {
			e = Entry{ID: id, Source: SourceConfig, AddedAt: now}
		}
		out[id] = e
	}
	return out, nil
}

// Path returns the persisted file's name.
func (s *Store) Path() string { return s.path }

// Contains reports whether id may use the reflector.
func (s *Store) Contains(id identity.EndpointID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.saved[id]
	if !ok {
		_, ok = s.static[id]
	}
	return ok
}

// Add allows id. src must be SourcePaired or SourceAdmin. The file is
// replaced atomically (mode 0600) before Add returns success; when that
// fails the allowlist is unchanged. added is false when id was already
// allowed (the existing entry is kept).
func (s *Store) Add(id identity.EndpointID, src Source, note string) (added bool, err error) {
	canon, err := identity.ParseEndpointID(string(id))
	if err != nil {
		return false, fmt.Errorf("add peer: %w", err)
	}
	if err := checkEntry(src, note); err != nil {
		return false, fmt.Errorf("add peer %s: %w", canon, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.saved[canon]; ok {
		return false, nil
	}
	if _, ok := s.static[canon]; ok {
		return false, nil
	}
	next := make(map[identity.EndpointID]Entry, len(s.saved)+1)
	for k, v := range s.saved {
		next[k] = v
	}
	next[canon] = Entry{ID: canon, Source: src, AddedAt: s.now().UTC(), Note: note}
	if err := s.persist(next); err != nil {
		return false, fmt.Errorf("add peer %s: %w", canon, err)
	}
	s.saved = next
	return true, nil
}

// Remove withdraws id. A peer listed in the config file cannot be removed
// (ErrStatic). removed is false when id was not allowed. The file is
// replaced before Remove returns success; on failure nothing changes. After
// a removal the OnRemove functions run.
func (s *Store) Remove(id identity.EndpointID) (removed bool, err error) {
	canon, err := identity.ParseEndpointID(string(id))
	if err != nil {
		return false, fmt.Errorf("remove peer: %w", err)
	}
	s.mu.Lock()
	if _, ok := s.static[canon]; ok {
		s.mu.Unlock()
		return false, fmt.Errorf("remove peer %s: %w; remove it from the config file and reload", canon, ErrStatic)
	}
	if _, ok := s.saved[canon]; !ok {
		s.mu.Unlock()
		return false, nil
	}
	next := make(map[identity.EndpointID]Entry, len(s.saved))
	for k, v := range s.saved {
		if k != canon {
			next[k] = v
		}
	}
	if err := s.persist(next); err != nil {
		s.mu.Unlock()
		return false, fmt.Errorf("remove peer %s: %w", canon, err)
	}
	s.saved = next
	s.mu.Unlock()
	s.notify([]identity.EndpointID{canon})
	return true, nil
}

// SetStatic replaces the config file's peers, on a config reload. It
// validates every ID first and changes nothing when one is invalid. Peers
// that lose access (dropped from the config and not paired or added) are
// passed to the OnRemove functions.
func (s *Store) SetStatic(ids []identity.EndpointID) error {
	s.mu.Lock()
	next, err := s.staticSet(ids)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	var dropped []identity.EndpointID
	for id := range s.static {
		if _, ok := next[id]; ok {
			continue
		}
		if _, ok := s.saved[id]; !ok {
			dropped = append(dropped, id)
		}
	}
	s.static = next
	s.mu.Unlock()
	slices.Sort(dropped)
	s.notify(dropped)
	return nil
}

// OnRemove registers fn to run whenever a peer loses access (Remove, or
// SetStatic dropping it). fn runs synchronously in the goroutine that made
// the change, after the change is visible to Contains, and must not call
// back into the Store's mutating methods or block for long.
func (s *Store) OnRemove(fn func(identity.EndpointID)) {
	s.cbMu.Lock()
	s.onRemove = append(s.onRemove, fn)
	s.cbMu.Unlock()
}

func (s *Store) notify(ids []identity.EndpointID) {
	if len(ids) == 0 {
		return
	}
	s.cbMu.Lock()
	fns := slices.Clone(s.onRemove)
	s.cbMu.Unlock()
	for _, id := range ids {
		for _, fn := range fns {
			fn(id)
		}
	}
}

// List returns every allowed peer sorted by ID. A peer both in the config
// file and persisted is listed once, as a config peer.
func (s *Store) List() []Entry {
	s.mu.RLock()
	out := make([]Entry, 0, len(s.saved)+len(s.static))
	for _, e := range s.static {
		out = append(out, e)
	}
	for id, e := range s.saved {
		if _, ok := s.static[id]; !ok {
			out = append(out, e)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// persist writes the persisted entries atomically. Callers hold mu.
func (s *Store) persist(saved map[identity.EndpointID]Entry) error {
	f := file{Version: FileVersion, Peers: make([]Entry, 0, len(saved))}
	for _, e := range saved {
		f.Peers = append(f.Peers, e)
	}
	slices.SortFunc(f.Peers, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode peer allowlist: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), dirMode); err != nil {
		return fmt.Errorf("save peer allowlist: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, append(data, '\n'), fileMode); err != nil {
		return fmt.Errorf("save peer allowlist: %w", err)
	}
	return nil
}
