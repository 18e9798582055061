package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Origins of a configuration, as reported in Source.Origin.
const (
	OriginFlag     = "flag"
	OriginEnv      = EnvConfig
	OriginSystem   = SystemConfigPath
	OriginXDG      = "XDG_CONFIG_HOME"
	OriginDefaults = "built-in defaults"
)

// Source says where the configuration came from.
type Source struct {
	Path   string // the file read; "" for built-in defaults
	Origin string // one of the Origin constants
}

// Resolver finds and loads the configuration. Its fields replace the
// environment and the file system, for tests; nil fields use the real ones.
type Resolver struct {
	// Getenv reads an environment variable.
	Getenv func(string) string
	// ReadFile reads a configuration file; a missing file must yield an
	// error matching fs.ErrNotExist.
	ReadFile func(path string) ([]byte, error)
	// DirWritable reports whether the state directory can be used, creating
	// it if needed.
	DirWritable func(dir string) bool
}

// Resolve finds and loads the configuration with the real file system. See
// Resolver.Resolve.
func Resolve(flagPath string, getenv func(string) string) (*Config, Source, []string, error) {
	return Resolver{Getenv: getenv}.Resolve(flagPath)
}

// Resolve loads the first configuration found in this order: flagPath (the
// -c/--config flag), $REFLECTOR_CONFIG, /etc/reflector/reflector.toml,
// $XDG_CONFIG_HOME/reflector/reflector.toml (~/.config when unset), and
// otherwise the built-in defaults. A file named by the flag or the
// environment must exist; a file that exists must be readable and valid.
// With the built-in defaults and an unwritable /var/lib/reflector, state
// moves to $XDG_STATE_HOME/reflector (~/.local/state when unset). notes are
// messages for the log: that fallback and the configuration's Warnings.
func (r Resolver) Resolve(flagPath string) (cfg *Config, src Source, notes []string, err error) {
	getenv, readFile, writable := r.Getenv, r.ReadFile, r.DirWritable
	if getenv == nil {
		getenv = os.Getenv
	}
	if readFile == nil {
		readFile = readFileCapped
	}
	if writable == nil {
		writable = dirWritable
	}

	type candidate struct {
		path, origin string
		required     bool
	}
	var cands []candidate
	if flagPath != "" {
		cands = append(cands, candidate{flagPath, OriginFlag, true})
	}
	if p := getenv(EnvConfig); p != "" {
		cands = append(cands, candidate{p, OriginEnv, true})
	}
	cands = append(cands, candidate{SystemConfigPath, OriginSystem, false})
	if base := userDir(getenv, "XDG_CONFIG_HOME", ".config"); base != "" {
		cands = append(cands, candidate{filepath.Join(base, "reflector", "reflector.toml"), OriginXDG, false})
	}

	for _, cand := range cands {
		data, err := readFile(cand.path)
		if errors.Is(err, fs.ErrNotExist) && !cand.required {
			continue
		}
		src = Source{Path: cand.path, Origin: cand.origin}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, src, nil, fmt.Errorf("config file %s (from %s) does not exist", cand.path, describeOrigin(cand.origin))
			}
			return nil, src, nil, fmt.Errorf("config file %s (from %s): %w", cand.path, describeOrigin(cand.origin), err)
		}
		cfg, err := Parse(data, cand.path)
		if err != nil {
			return nil, src, nil, err
		}
		return cfg, src, cfg.Warnings(), nil
	}

	cfg = Default()
	src = Source{Origin: OriginDefaults}
	if !writable(cfg.State.Dir) {
		if base := userDir(getenv, "XDG_STATE_HOME", filepath.Join(".local", "state")); base != "" {
			cfg.State.Dir = filepath.Join(base, "reflector")
			cfg.deriveStatePaths(true, true)
			notes = append(notes, fmt.Sprintf("no config file found and %s is not writable: keeping state (identity key, audit log, peers, quotas, admin socket) in %s", DefaultStateDir, cfg.State.Dir))
		} else {
			notes = append(notes, fmt.Sprintf("no config file found and %s is not writable, and neither XDG_STATE_HOME nor HOME is set: state stays in %s", DefaultStateDir, DefaultStateDir))
		}
	}
	return cfg, src, notes, nil
}

// userDir returns $env if it is an absolute path (the XDG rule), else
// $HOME/fallback, else "".
func userDir(getenv func(string) string, env, fallback string) string {
	if d := getenv(env); filepath.IsAbs(d) {
		return d
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, fallback)
	}
	return ""
}

func describeOrigin(origin string) string {
	switch origin {
	case OriginFlag:
		return "-c/--config"
	case OriginEnv:
		return "$" + EnvConfig
	default:
		return origin
	}
}

// dirWritable creates dir if needed and writes and removes a probe file.
func dirWritable(dir string) bool {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false
	}
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return false
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name) == nil
}
