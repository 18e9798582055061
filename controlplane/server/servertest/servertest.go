// Package servertest starts a real reflector control plane for tests: the
// server of package server on 127.0.0.1:0 with its state in a fresh
// temporary directory, helpers for client identities, the admin socket and
// the audit log, and a goroutine leak check when the test ends.
package servertest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server"
)

// Harness is one running server.
type Harness struct {
	t      testing.TB
	Server *server.Server
	Config *config.Config
	// Addr is the pp-link/1 listener, "127.0.0.1:PORT".
	Addr string
	// StateDir holds the key, audit log, peers and admin socket.
	StateDir string

	baseline int
	stopped  bool
}

// Config returns the default configuration with its state in dir and the
// listener on 127.0.0.1:0.
func Config(dir string) *config.Config {
	cfg := config.Default()
	cfg.State.Dir = dir
	cfg.Identity.PrivateKeyPath = filepath.Join(dir, "identity.ed25519")
	cfg.Logging.AuditLogPath = filepath.Join(dir, "audit.jsonl")
	cfg.Network.ListenAddress = "127.0.0.1:0"
	return cfg
}

// StateDir returns a fresh temporary directory, removed at the end of the
// test, with a path short enough for a Unix socket (t.TempDir's can be too
// long for the 108-byte limit).
func StateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rfl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Start runs a server whose config edit may adjust (nil: defaults). The
// server is shut down when the test ends, and the test fails if
// goroutines started since Start are still running a few seconds later
// (the count is process-wide: do not combine with t.Parallel).
func Start(t testing.TB, edit func(*config.Config), opts server.Options) *Harness {
	t.Helper()
	baseline := runtime.NumGoroutine()
	dir := StateDir(t)
	cfg := Config(dir)
	if edit != nil {
		edit(cfg)
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	h := &Harness{t: t, Server: srv, Config: cfg, Addr: srv.Addr().String(), StateDir: dir, baseline: baseline}
	t.Cleanup(h.Stop)
	return h
}

// Stop shuts the server down and checks that its goroutines are gone.
func (h *Harness) Stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Server.Shutdown(ctx); err != nil {
		h.t.Errorf("Shutdown: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > h.baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			h.t.Errorf("goroutine leak: %d running after Shutdown, %d before Start\n%s", runtime.NumGoroutine(), h.baseline, buf[:n])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NewKey returns a fresh client identity.
func NewKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ID returns the Endpoint ID of key.
func ID(key ed25519.PrivateKey) identity.EndpointID {
	return identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
}

// Admin sends req over the admin socket and decodes the result.
func (h *Harness) Admin(req admin.Request, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return admin.Call(ctx, h.Config.AdminSocket(), req, result)
}

// Authorize adds key's peer to the allowlist through the admin socket.
func (h *Harness) Authorize(key ed25519.PrivateKey) {
	h.t.Helper()
	if err := h.Admin(admin.Request{Op: admin.OpPeersAdd, ID: ID(key).String()}, nil); err != nil {
		h.t.Fatalf("authorize peer: %v", err)
	}
}

// OpenPairing opens a pairing window and returns its token.
func (h *Harness) OpenPairing(ttl time.Duration) string {
	h.t.Helper()
	var res admin.PairResult
	if err := h.Admin(admin.Request{Op: admin.OpPair, TTLSec: int(ttl / time.Second)}, &res); err != nil {
		h.t.Fatalf("open pairing window: %v", err)
	}
	return res.Token
}

// Dial connects a client with key, pinning the server's ID. The client
// is closed when the test ends.
func (h *Harness) Dial(key ed25519.PrivateKey) *client.Client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.Addr, key, h.Server.EndpointID())
	if err != nil {
		h.t.Fatalf("dial %s: %v", h.Addr, err)
	}
	c.Timeout = 10 * time.Second
	h.t.Cleanup(func() { _ = c.Close() })
	return c
}

// AuditEvents reads the audit log.
func (h *Harness) AuditEvents() []audit.Event {
	h.t.Helper()
	return ReadAudit(h.t, h.Config.Logging.AuditLogPath)
}

// ReadAudit parses every line of the audit log at path.
func ReadAudit(t testing.TB, path string) []audit.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open audit log: %v", err)
	}
	defer f.Close()
	var out []audit.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read audit log: %v", err)
	}
	return out
}

// FindAudit returns the events of type typ.
func FindAudit(events []audit.Event, typ audit.EventType) []audit.Event {
	var out []audit.Event
	for _, e := range events {
		if e.EventType == typ {
			out = append(out, e)
		}
	}
	return out
}
