package identity

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// LegacyKeyName is where the Rust reflector kept its key: a file of the raw
// 32-byte seed named identity.key in the directory of private_key_path,
// whatever file name the configuration gave (it wrote it with fs::write and
// then set mode 0600).
const LegacyKeyName = "identity.key"

// KeyOrigin says how LoadServerKey got the server's key.
type KeyOrigin int

// Key origins.
const (
	// KeyLoaded: the configured key file existed.
	KeyLoaded KeyOrigin = iota
	// KeyAdopted: the configured file was missing and the Rust reflector's
	// identity.key was copied to it (the Endpoint ID appliances pinned is
	// kept).
	KeyAdopted
	// KeyCreated: neither existed; a new identity was written.
	KeyCreated
)

// LegacyKeyPath is the Rust reflector's key file for the configured path.
func LegacyKeyPath(path string) string { return filepath.Join(filepath.Dir(path), LegacyKeyName) }

// LoadServerKey loads the server key at path. When no file exists there it
// adopts the Rust reflector's key (LegacyKeyPath) if that loads, writing it
// to path (0600, atomically; the old file is left in place), and otherwise
// creates a new key as LoadOrCreateKey does.
func LoadServerKey(path string) (ed25519.PrivateKey, KeyOrigin, error) {
	key, err := LoadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, KeyLoaded, err
	}
	if legacy := LegacyKeyPath(path); legacy != filepath.Clean(path) {
		key, err := LoadKey(legacy)
		switch {
		case err == nil:
			seed := key.Seed()
			defer clear(seed)
			if err := writeKeyFile(path, seed); err != nil {
				return nil, KeyLoaded, fmt.Errorf("adopt the earlier reflector's key %s: %w", legacy, err)
			}
			return key, KeyAdopted, nil
		case !errors.Is(err, fs.ErrNotExist):
			// Refuse rather than silently start with a new identity.
			return nil, KeyLoaded, fmt.Errorf("the configured key %s is missing and the earlier reflector's key cannot be adopted: %w", path, err)
		}
	}
	key, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		return key, KeyLoaded, err
	}
	return key, KeyCreated, nil
}
