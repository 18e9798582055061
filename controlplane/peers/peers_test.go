package peers

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

// testID returns a distinct valid Endpoint ID for each n.
func testID(n byte) identity.EndpointID {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	return identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
}

func openStore(t *testing.T, path string, static ...identity.EndpointID) *Store {
	t.Helper()
	s, err := Open(path, static)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func ids(entries []Entry) []identity.EndpointID {
	out := make([]identity.EndpointID, len(entries))
	for i, e := range entries {
		out[i] = e.ID
	}
	return out
}

func TestAddPersistReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "peers.json")
	s := openStore(t, path)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created the file (%v)", err)
	}
	a, b := testID(1), testID(2)
	if added, err := s.Add(lowerID(b), SourceAdmin, "office box"); err != nil || !added {
		t.Fatalf("Add(b) = %v, %v", added, err)
	}
	if added, err := s.Add(a, SourcePaired, ""); err != nil || !added {
		t.Fatalf("Add(a) = %v, %v", added, err)
	}
	if added, err := s.Add(a, SourceAdmin, "again"); err != nil || added {
		t.Fatalf("second Add(a) = %v, %v; want false, nil", added, err)
	}
	if !s.Contains(a) || !s.Contains(b) || s.Contains(testID(3)) {
		t.Fatal("Contains disagrees with the adds")
	}

	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != fileMode {
		t.Fatalf("file mode = %v (%v), want 0600", st.Mode().Perm(), err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int               `json:"version"`
		Peers   []json.RawMessage `json:"peers"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 1 || len(f.Peers) != 2 {
		t.Fatalf("file = %s (%v)", raw, err)
	}

	before := s.List()
	want := []identity.EndpointID{a, b}
	if a > b {
		want = []identity.EndpointID{b, a}
	}
	if got := ids(before); !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	after := openStore(t, path).List()
	if len(after) != len(before) {
		t.Fatalf("reopened List has %d entries, want %d", len(after), len(before))
	}
	for i := range before {
		x, y := before[i], after[i]
		if x.ID != y.ID || x.Source != y.Source || x.Note != y.Note || !x.AddedAt.Equal(y.AddedAt) {
			t.Errorf("entry %d: reopened %+v, want %+v", i, y, x)
		}
	}
	for _, e := range after {
		if e.ID == b && (e.Source != SourceAdmin || e.Note != "office box") {
			t.Errorf("b = %+v", e)
		}
	}
}

// lowerID is an ID as a person might type it: lower case.
func lowerID(id identity.EndpointID) identity.EndpointID {
	return identity.EndpointID(strings.ToLower(string(id)))
}

func TestAddInvalid(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "peers.json"))
	tests := []struct {
		name string
		id   identity.EndpointID
		src  Source
		note string
		want error
	}{
		{"bad id", "PP-NOPE", SourcePaired, "", identity.ErrInvalidID},
		{"config source", testID(1), SourceConfig, "", ErrInvalid},
		{"empty source", testID(1), "", "", ErrInvalid},
		{"control char in note", testID(1), SourceAdmin, "a\nb", ErrInvalid},
		{"long note", testID(1), SourceAdmin, strings.Repeat("n", MaxNoteLen+1), ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Add(tc.id, tc.src, tc.note); !errors.Is(err, tc.want) {
				t.Fatalf("Add = %v, want %v", err, tc.want)
			}
		})
	}
	if len(s.List()) != 0 {
		t.Fatalf("invalid adds changed the list: %v", s.List())
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	s := openStore(t, path)
	var mu sync.Mutex
	var gone []identity.EndpointID
	s.OnRemove(func(id identity.EndpointID) {
		if s.Contains(id) {
			t.Errorf("OnRemove(%s) ran while the peer is still allowed", id)
		}
		mu.Lock()
		gone = append(gone, id)
		mu.Unlock()
	})
	a, b := testID(1), testID(2)
	for _, id := range []identity.EndpointID{a, b} {
		if _, err := s.Add(id, SourcePaired, ""); err != nil {
			t.Fatal(err)
		}
	}
	if removed, err := s.Remove(lowerID(a)); err != nil || !removed {
		t.Fatalf("Remove(a) = %v, %v", removed, err)
	}
	if removed, err := s.Remove(a); err != nil || removed {
		t.Fatalf("second Remove(a) = %v, %v; want false, nil", removed, err)
	}
	if _, err := s.Remove("garbage"); !errors.Is(err, identity.ErrInvalidID) {
		t.Fatalf("Remove(garbage) = %v", err)
	}
	if s.Contains(a) || !s.Contains(b) {
		t.Fatal("Contains wrong after Remove")
	}
	if !slices.Equal(gone, []identity.EndpointID{a}) {
		t.Fatalf("OnRemove saw %v, want [%s]", gone, a)
	}
	if got := ids(openStore(t, path).List()); !slices.Equal(got, []identity.EndpointID{b}) {
		t.Fatalf("reopened List = %v, want [%s]", got, b)
	}
}

func TestStatic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	a, b, c := testID(1), testID(2), testID(3)
	s := openStore(t, path, a)
	var gone []identity.EndpointID
	s.OnRemove(func(id identity.EndpointID) { gone = append(gone, id) })

	if !s.Contains(a) {
		t.Fatal("config peer not allowed")
	}
	if l := s.List(); len(l) != 1 || l[0].Source != SourceConfig || l[0].AddedAt.IsZero() {
		t.Fatalf("List = %+v", l)
	}
	if _, err := s.Remove(a); !errors.Is(err, ErrStatic) {
		t.Fatalf("Remove(config peer) = %v, want ErrStatic", err)
	}
	if added, err := s.Add(a, SourceAdmin, ""); err != nil || added {
		t.Fatalf("Add(config peer) = %v, %v; want false, nil", added, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("config peers were persisted (%v)", err)
	}

	// c is both paired and, later, in the config: dropping it from the
	// config keeps it allowed.
	if _, err := s.Add(c, SourcePaired, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStatic([]identity.EndpointID{b, c}); err != nil {
		t.Fatal(err)
	}
	if s.Contains(a) || !s.Contains(b) || !s.Contains(c) {
		t.Fatal("Contains wrong after SetStatic")
	}
	if !slices.Equal(gone, []identity.EndpointID{a}) {
		t.Fatalf("OnRemove saw %v, want [%s]", gone, a)
	}
	for _, e := range s.List() {
		if e.ID == c && e.Source != SourceConfig {
			t.Errorf("peer in both sets listed as %q, want config", e.Source)
		}
	}
	if err := s.SetStatic([]identity.EndpointID{b, "PP-BAD"}); !errors.Is(err, identity.ErrInvalidID) {
		t.Fatalf("SetStatic(invalid) = %v", err)
	}
	if !s.Contains(b) || !s.Contains(c) {
		t.Fatal("a failed SetStatic changed the set")
	}
	if err := s.SetStatic(nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gone, []identity.EndpointID{a, b}) || !s.Contains(c) {
		t.Fatalf("after SetStatic(nil): OnRemove saw %v, Contains(c) = %v", gone, s.Contains(c))
	}
	if _, err := Open(path, []identity.EndpointID{"nope"}); !errors.Is(err, identity.ErrInvalidID) {
		t.Fatalf("Open with an invalid config peer = %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	good := testID(1)
	tests := []struct {
		name, content string
	}{
		{"not JSON", "{\"version\":1,\"peers\":["},
		{"wrong version", `{"version":2,"peers":[]}`},
		{"missing version", `{"peers":[]}`},
		{"invalid id", `{"version":1,"peers":[{"id":"PP-XXXX","source":"paired"}]}`},
		{"bad source", `{"version":1,"peers":[{"id":"` + string(good) + `","source":"config"}]}`},
		{"peers not a list", `{"version":1,"peers":{}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "peers.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, nil)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v, want an error naming %s", err, path)
			}
			if got, _ := os.ReadFile(path); string(got) != tc.content {
				t.Fatal("Open changed a corrupt file")
			}
		})
	}
}

func TestLoadCanonicalises(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	id := testID(5)
	content := `{"version":1,"peers":[{"id":"` + strings.ToLower(string(id)) + `","source":"admin"},` +
		`{"id":"` + string(id) + `","source":"paired"}]}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openStore(t, path).List()
	if len(l) != 1 || l[0].ID != id || l[0].Source != SourceAdmin {
		t.Fatalf("List = %+v, want one canonical admin entry", l)
	}
}

func TestPersistFailureLeavesMemoryUnchanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "peers.json")
	s := openStore(t, path)
	a, b := testID(1), testID(2)
	if _, err := s.Add(a, SourcePaired, ""); err != nil {
		t.Fatal(err)
	}
	// Put a regular file where the directory was: every save now fails.
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var called bool
	s.OnRemove(func(identity.EndpointID) { called = true })
	if added, err := s.Add(b, SourceAdmin, ""); err == nil || added {
		t.Fatalf("Add with a broken directory = %v, %v; want an error", added, err)
	}
	if s.Contains(b) {
		t.Fatal("failed Add left the peer allowed")
	}
	if removed, err := s.Remove(a); err == nil || removed {
		t.Fatalf("Remove with a broken directory = %v, %v; want an error", removed, err)
	}
	if !s.Contains(a) || called {
		t.Fatal("failed Remove changed the allowlist")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	if added, err := s.Add(b, SourceAdmin, ""); err != nil || !added {
		t.Fatalf("Add after repair = %v, %v", added, err)
	}
	if got := len(openStore(t, path).List()); got != 2 {
		t.Fatalf("reopened store has %d peers, want 2", got)
	}
}

func TestConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	s := openStore(t, path)
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Add(testID(byte(i)), SourcePaired, ""); err != nil {
				t.Error(err)
			}
			s.Contains(testID(byte(i)))
			s.List()
		}()
	}
	wg.Wait()
	if got := len(openStore(t, path).List()); got != n {
		t.Fatalf("persisted %d peers, want %d", got, n)
	}
}
