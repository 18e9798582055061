// Package health defines, once, when the reflector is healthy: the audit
// log can be written, the identity key on disk is the one in use, the
// pp-link/1 listener is up and the server is not draining. The same named
// checks drive `reflector status`'s exit code, GET /health (and with it
// every readiness probe), the per-check metric and the session gate: no
// grant while any check fails.
package health

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

// Names of the checks: a closed set, usable as metric label values.
const (
	// Audit: the configured audit log opens for appending and is the file
	// being written (grants are audited first, so none without it).
	Audit = "audit_log"
	// Identity: the key file at private_key_path loads and holds the key
	// the server serves (appliances pin its Endpoint ID).
	Identity = "identity"
	// Listener: the pp-link/1 listener accepts connections.
	Listener = "listener"
	// NotDraining: shutdown has not started.
	NotDraining = "not_draining"
)

// Names lists every check in report order.
var Names = []string{Audit, Identity, Listener, NotDraining}

// Check is the outcome of one named check. Problem and Fix are one line
// each for people, empty when OK.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
	Fix     string `json:"fix,omitempty"`
}

// Sources are what the checks look at; the running server supplies them.
// Every function must be cheap and safe for concurrent use.
type Sources struct {
	// AuditProbe returns nil while the audit log can be written.
	AuditProbe func() error
	// AuditPath is the configured audit log (for the fix text).
	AuditPath string
	// KeyPath is the configured identity key file.
	KeyPath string
	// Key is the public key the server serves.
	Key ed25519.PublicKey
	// ListenerErr returns nil while the pp-link/1 listener is up.
	ListenerErr func() error
	// Draining reports whether shutdown has started.
	Draining func() bool
}

// Checker evaluates the definition against its sources.
type Checker struct{ src Sources }

// New returns a Checker over src.
func New(src Sources) *Checker { return &Checker{src: src} }

// Checks runs every check, in Names order. It reads the key file and opens
// the audit log once per call: call it per request, not in a tight loop.
func (c *Checker) Checks() []Check {
	return []Check{c.audit(), c.identity(), c.listener(), c.notDraining()}
}

// Err returns nil when every check passes, otherwise an error naming each
// failed check and its problem.
func (c *Checker) Err() error { return Err(c.Checks()) }

// Healthy reports whether every check in checks passed.
func Healthy(checks []Check) bool { return Err(checks) == nil }

// Err returns nil when every check in checks passed, otherwise an error
// naming each failed check and its problem.
func Err(checks []Check) error {
	var bad []string
	for _, ch := range checks {
		if !ch.OK {
			bad = append(bad, ch.Name+": "+ch.Problem)
		}
	}
	if bad == nil {
		return nil
	}
	return errors.New("unhealthy: " + strings.Join(bad, "; "))
}

func ok(name string) Check { return Check{Name: name, OK: true} }

func failed(name, problem, fix string) Check {
	return Check{Name: name, Problem: problem, Fix: fix}
}

func (c *Checker) audit() Check {
	err := c.src.AuditProbe()
	if err == nil {
		return ok(Audit)
	}
	return failed(Audit, err.Error(),
		fmt.Sprintf("make %s writable by the service user (free disk space, fix owner/mode), then send SIGHUP (systemctl reload reflector) to reopen it", c.src.AuditPath))
}

func (c *Checker) identity() Check {
	inUse := identity.IDFromPublicKey(c.src.Key)
	key, err := identity.LoadKey(c.src.KeyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return failed(Identity,
			fmt.Sprintf("identity key %s is missing; the server still serves %s from memory", c.src.KeyPath, inUse),
			"restore the key file from a backup; restarting now would create a NEW identity every appliance must re-pin")
	case err != nil:
		return failed(Identity, err.Error(),
			"repair the key file as the problem says (or restore it from a backup), then restart")
	}
	if onDisk := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey)); onDisk != inUse {
		return failed(Identity,
			fmt.Sprintf("identity key %s holds %s, but the server serves %s", c.src.KeyPath, onDisk, inUse),
			"restart the reflector to serve the key on disk (appliances must re-pin it), or restore the previous key")
	}
	return ok(Identity)
}

func (c *Checker) listener() Check {
	if err := c.src.ListenerErr(); err != nil {
		return failed(Listener, err.Error(), "restart the reflector (systemctl restart reflector) and read its log")
	}
	return ok(Listener)
}

func (c *Checker) notDraining() Check {
	if c.src.Draining() {
		return failed(NotDraining, "the reflector is shutting down", "wait for the restart, or start it again")
	}
	return ok(NotDraining)
}
