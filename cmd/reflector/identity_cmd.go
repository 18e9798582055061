package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

func runShowID(e *env, args []string) error {
	fs := newFlags(e, "show-id")
	cfgPath := configFlag(fs)
	keyPath := fs.String("identity", "", "client key file: print its ID (the key is created if missing)")
	client := fs.Bool("client", false, "use the default client key ($XDG_CONFIG_HOME/reflector/client.ed25519)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *client && *keyPath != "" {
		return usagef("show-id: --client and --identity exclude each other")
	}
	path := *keyPath
	if *client {
		p, err := defaultClientKey(e.getenv)
		if err != nil {
			return err
		}
		path = p
	}
	if path == "" {
		cfg, _, _, err := loadConfig(e, *cfgPath)
		if err != nil {
			return err
		}
		path = cfg.Identity.PrivateKeyPath
		if key, err := legacyKey(e, path); err != nil || key != nil {
			if err == nil {
				fmt.Fprintln(e.stdout, idOf(key))
			}
			return err
		}
	}
	key, created, err := identity.LoadOrCreateKey(path)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.stderr, "created a new identity key in %s\n", path)
	}
	fmt.Fprintln(e.stdout, idOf(key))
	return nil
}

// legacyKey returns the earlier (Rust) reflector's key when the server key
// at path is missing and that one exists: show-id prints its ID and leaves
// the adoption (and its audit line) to the next 'reflector serve'. A
// legacy key that does not load is an error, never a reason to create a
// new identity.
func legacyKey(e *env, path string) (ed25519.PrivateKey, error) {
	legacy := identity.LegacyKeyPath(path)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) || legacy == filepath.Clean(path) {
		return nil, nil
	}
	if _, err := os.Stat(legacy); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	key, err := identity.LoadKey(legacy)
	if err != nil {
		return nil, fmt.Errorf("%s is missing and the earlier reflector's key cannot be read: %w", path, err)
	}
	fmt.Fprintf(e.stderr, "%s is missing: the earlier reflector's key %s will be adopted at the next 'reflector serve' (same Endpoint ID)\n", path, legacy)
	return key, nil
}

func idOf(key ed25519.PrivateKey) identity.EndpointID {
	return identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
}

func runRotate(e *env, args []string) error {
	fs := newFlags(e, "rotate-identity")
	cfgPath := configFlag(fs)
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	cfg, _, _, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	path := cfg.Identity.PrivateKeyPath
	old, err := identity.LoadKey(path)
	if err != nil {
		return fmt.Errorf("rotate identity: %w", err)
	}
	oldID := idOf(old)
	if !*yes {
		f, ok := e.stdin.(*os.File)
		if !ok || !isTerminal(f) {
			return usagef("rotate-identity: not a terminal, cannot ask for confirmation; pass --yes")
		}
		fmt.Fprintf(e.stderr, "Replace the identity %s (key %s)?\nEvery paired appliance will have to pair again / re-pin the new ID. [y/N] ", oldID, path)
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return &exitError{code: exitFail, err: errors.New("identity not rotated")}
		}
	}
	key, backup, err := identity.RotateKey(path, time.Now())
	if err != nil {
		return err
	}
	newID := idOf(key)
	log, err := audit.Open(cfg.Logging.AuditLogPath, newID.String())
	if err != nil {
		fmt.Fprintf(e.stderr, "warning: identity rotated but not audited: %v\n", err)
	} else {
		werr := log.Write(audit.Event{
			EventType: audit.IdentityRotated,
			Decision:  "rotated",
			Details:   map[string]any{"old_endpoint_id": oldID.String(), "new_endpoint_id": newID.String(), "backup": backup},
		})
		if cerr := log.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			fmt.Fprintf(e.stderr, "warning: identity rotated but not audited: %v\n", werr)
		}
	}
	fmt.Fprintf(e.stdout, "Old Endpoint ID: %s (key kept in %s)\nNew Endpoint ID: %s\n", oldID, backup, newID)
	fmt.Fprintln(e.stdout, "Paired appliances pin the old ID: each must re-pin the new one (pair again, or update --expect-id).")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if admin.Call(ctx, cfg.AdminSocket(), admin.Request{Op: admin.OpStatus}, nil) == nil {
		fmt.Fprintln(e.stdout, "The running server still uses the old key and grants no tests until it is restarted (its identity check fails): restart it now.")
	}
	return nil
}
