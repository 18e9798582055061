package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/packetparamedic/reflector/internal/atomicfile"
)

// ErrBadKeyFile is wrapped by LoadKey errors about the key file itself: wrong
// size, not a regular file, or permissions that break the key file rule
// (see checkKeyFile).
var ErrBadKeyFile = errors.New("bad identity key file")

const (
	keyFileMode = 0o600
	keyDirMode  = 0o700
	// backupTimeFormat names rotated keys: path + "." + UTC time + ".bak".
	backupTimeFormat = "20060102T150405Z"
)

// LoadKey reads a key file holding the raw 32-byte Ed25519 seed. It refuses
// a file of another size, one that is not a regular file, and one whose
// permissions break the key file rule (checkKeyFile: nothing for others,
// no group write, group read only for a group of this process, owned by
// this user or root); a file it may not open is explained with its owner,
// mode and the fixing command.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, explainOpenError(path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat identity key %s: %w", path, err)
	}
	if err := checkKeyFile(path, st); err != nil {
		return nil, err
	}
	if st.Size() != SeedSize {
		return nil, fmt.Errorf("%w %s: %d bytes, expected exactly %d (a raw Ed25519 seed)", ErrBadKeyFile, path, st.Size(), SeedSize)
	}
	seed := make([]byte, SeedSize+1) // one spare byte detects growth since Stat
	n, err := io.ReadFull(f, seed)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && n == SeedSize:
	case err == nil:
		return nil, fmt.Errorf("%w %s: longer than %d bytes", ErrBadKeyFile, path, SeedSize)
	default:
		return nil, fmt.Errorf("%w %s: read %d of %d bytes: %v", ErrBadKeyFile, path, n, SeedSize, err)
	}
	key := ed25519.NewKeyFromSeed(seed[:SeedSize])
	clear(seed)
	return key, nil
}

// LoadOrCreateKey loads the key at path, or, when no file exists there,
// generates a new key and writes its seed atomically with mode 0600, creating
// missing directories with mode 0700. created reports which happened.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), keyDirMode); err != nil {
		return nil, false, fmt.Errorf("create identity key directory: %w", err)
	}
	key, err = writeNewKey(path)
	if err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// RotateKey replaces the key at path with a new one. The old key, which must
// load cleanly, is first kept as path + ".<UTC time>.bak" (mode 0600); an
// existing backup of the same name is never overwritten.
func RotateKey(path string, now time.Time) (key ed25519.PrivateKey, backupPath string, err error) {
	old, err := LoadKey(path)
	if err != nil {
		return nil, "", fmt.Errorf("rotate identity key: %w", err)
	}
	backupPath = path + "." + now.UTC().Format(backupTimeFormat) + ".bak"
	if err := writeExclusive(backupPath, old.Seed()); err != nil {
		return nil, "", fmt.Errorf("rotate identity key: back up old key: %w", err)
	}
	key, err = writeNewKey(path)
	if err != nil {
		return nil, backupPath, fmt.Errorf("rotate identity key (old key kept in %s): %w", backupPath, err)
	}
	return key, backupPath, nil
}

// writeNewKey generates a key and writes its seed atomically to path.
func writeNewKey(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	seed := key.Seed()
	defer clear(seed)
	if err := writeKeyFile(path, seed); err != nil {
		return nil, err
	}
	return key, nil
}

// writeKeyFile writes seed atomically to path with mode 0600, owned like
// its directory when written by root (see chownLikeDir).
func writeKeyFile(path string, seed []byte) error {
	if err := atomicfile.WriteFile(path, seed, keyFileMode); err != nil {
		return fmt.Errorf("write identity key: %w", err)
	}
	if err := chownLikeDir(path, filepath.Dir(path)); err != nil {
		return fmt.Errorf("write identity key: give %s to the owner of its directory: %w", path, err)
	}
	return nil
}

// writeExclusive creates path (it must not exist), writes data with mode
// 0600 and flushes it to disk.
func writeExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, keyFileMode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if werr == nil {
		werr = chownLikeDir(path, filepath.Dir(path))
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}
