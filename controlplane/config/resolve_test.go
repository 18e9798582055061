package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeFS is a map of path -> content; a nil content means "exists but
// unreadable".
type fakeFS map[string][]byte

func (f fakeFS) read(path string) ([]byte, error) {
	data, ok := f[path]
	switch {
	case !ok:
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	case data == nil:
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrPermission}
	}
	return data, nil
}

func TestResolve(t *testing.T) {
	level := func(l string) []byte { return []byte("[logging]\nlevel = \"" + l + "\"\n") }
	const xdgFile = "/home/u/.cfg/reflector/reflector.toml"
	const homeFile = "/home/u/.config/reflector/reflector.toml"
	baseEnv := map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "/home/u/.cfg"}

	tests := []struct {
		name       string
		flag       string
		env        map[string]string // merged over baseEnv; "" deletes
		files      fakeFS
		writable   bool
		wantSrc    Source
		wantLevel  string
		wantState  string
		wantNotes  []string // substrings, one per note
		wantErr    string
		wantErrIs  error
		probedDirs int // how often DirWritable may be asked
	}{
		{
			name:    "flag wins over everything",
			flag:    "/cli.toml",
			env:     map[string]string{EnvConfig: "/env.toml"},
			files:   fakeFS{"/cli.toml": level("debug"), "/env.toml": level("warn"), SystemConfigPath: level("error"), xdgFile: level("trace")},
			wantSrc: Source{Path: "/cli.toml", Origin: OriginFlag}, wantLevel: "debug", wantState: DefaultStateDir,
		},
		{
			name:    "env over system",
			env:     map[string]string{EnvConfig: "/env.toml"},
			files:   fakeFS{"/env.toml": level("warn"), SystemConfigPath: level("error"), xdgFile: level("trace")},
			wantSrc: Source{Path: "/env.toml", Origin: OriginEnv}, wantLevel: "warn", wantState: DefaultStateDir,
		},
		{
			name:    "system over XDG",
			files:   fakeFS{SystemConfigPath: level("error"), xdgFile: level("trace")},
			wantSrc: Source{Path: SystemConfigPath, Origin: OriginSystem}, wantLevel: "error", wantState: DefaultStateDir,
		},
		{
			name:    "XDG_CONFIG_HOME",
			files:   fakeFS{xdgFile: level("trace"), homeFile: level("warn")},
			wantSrc: Source{Path: xdgFile, Origin: OriginXDG}, wantLevel: "trace", wantState: DefaultStateDir,
		},
		{
			name:    "~/.config when XDG_CONFIG_HOME is unset",
			env:     map[string]string{"XDG_CONFIG_HOME": ""},
			files:   fakeFS{homeFile: level("warn")},
			wantSrc: Source{Path: homeFile, Origin: OriginXDG}, wantLevel: "warn", wantState: DefaultStateDir,
		},
		{
			name:    "relative XDG_CONFIG_HOME is ignored",
			env:     map[string]string{"XDG_CONFIG_HOME": "rel"},
			files:   fakeFS{"rel/reflector/reflector.toml": level("trace"), homeFile: level("warn")},
			wantSrc: Source{Path: homeFile, Origin: OriginXDG}, wantLevel: "warn", wantState: DefaultStateDir,
		},
		{
			name:     "defaults, state dir writable",
			files:    fakeFS{},
			writable: true,
			wantSrc:  Source{Origin: OriginDefaults}, wantLevel: "info", wantState: DefaultStateDir, probedDirs: 1,
		},
		{
			name:    "defaults, state falls back to XDG_STATE_HOME",
			env:     map[string]string{"XDG_STATE_HOME": "/home/u/.st"},
			files:   fakeFS{},
			wantSrc: Source{Origin: OriginDefaults}, wantLevel: "info", wantState: "/home/u/.st/reflector", probedDirs: 1,
			wantNotes: []string{"/var/lib/reflector is not writable: keeping state (identity key, audit log, peers, quotas, admin socket) in /home/u/.st/reflector"},
		},
		{
			name:    "defaults, state falls back to ~/.local/state",
			files:   fakeFS{},
			wantSrc: Source{Origin: OriginDefaults}, wantLevel: "info", wantState: "/home/u/.local/state/reflector", probedDirs: 1,
			wantNotes: []string{"in /home/u/.local/state/reflector"},
		},
		{
			name:    "defaults, nowhere to fall back to",
			env:     map[string]string{"HOME": "", "XDG_CONFIG_HOME": ""},
			files:   fakeFS{},
			wantSrc: Source{Origin: OriginDefaults}, wantLevel: "info", wantState: DefaultStateDir, probedDirs: 1,
			wantNotes: []string{"neither XDG_STATE_HOME nor HOME is set"},
		},
		{
			name:    "a config file stops the fallback",
			files:   fakeFS{SystemConfigPath: []byte("[quotas]\nallow_udp_echo = false\n[iperf3]\npath = \"/usr/bin/iperf3\"\n")},
			wantSrc: Source{Path: SystemConfigPath, Origin: OriginSystem}, wantLevel: "info", wantState: DefaultStateDir,
			wantNotes: []string{"iperf3.path"},
		},
		{
			name:    "missing flag file is an error",
			flag:    "/nope.toml",
			files:   fakeFS{SystemConfigPath: level("error")},
			wantErr: "config file /nope.toml (from -c/--config) does not exist",
			wantSrc: Source{Path: "/nope.toml", Origin: OriginFlag},
		},
		{
			name:    "missing env file is an error",
			env:     map[string]string{EnvConfig: "/nope.toml"},
			files:   fakeFS{SystemConfigPath: level("error")},
			wantErr: "config file /nope.toml (from $REFLECTOR_CONFIG) does not exist",
			wantSrc: Source{Path: "/nope.toml", Origin: OriginEnv},
		},
		{
			name:      "unreadable system file is an error, not skipped",
			files:     fakeFS{SystemConfigPath: nil, xdgFile: level("trace")},
			wantErr:   "config file /etc/reflector/reflector.toml (from /etc/reflector/reflector.toml)",
			wantErrIs: fs.ErrPermission,
			wantSrc:   Source{Path: SystemConfigPath, Origin: OriginSystem},
		},
		{
			name:      "invalid file is an error, not skipped",
			files:     fakeFS{SystemConfigPath: level("loud"), xdgFile: level("trace")},
			wantErr:   `/etc/reflector/reflector.toml: 1 configuration error:`,
			wantErrIs: ErrInvalid,
			wantSrc:   Source{Path: SystemConfigPath, Origin: OriginSystem},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range baseEnv {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			probes := 0
			r := Resolver{
				Getenv:   func(k string) string { return env[k] },
				ReadFile: tc.files.read,
				DirWritable: func(dir string) bool {
					probes++
					if dir != DefaultStateDir {
						t.Errorf("probed %s, want %s", dir, DefaultStateDir)
					}
					return tc.writable
				},
			}
			cfg, src, notes, err := r.Resolve(tc.flag)
			if src != tc.wantSrc {
				t.Errorf("source = %+v, want %+v", src, tc.wantSrc)
			}
			if probes != tc.probedDirs {
				t.Errorf("DirWritable called %d times, want %d", probes, tc.probedDirs)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				if tc.wantErrIs != nil && !errors.Is(err, tc.wantErrIs) {
					t.Errorf("error %v does not wrap %v", err, tc.wantErrIs)
				}
				if cfg != nil {
					t.Error("config returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if cfg.Logging.Level != tc.wantLevel {
				t.Errorf("level = %s, want %s (read the wrong file?)", cfg.Logging.Level, tc.wantLevel)
			}
			if cfg.State.Dir != tc.wantState ||
				cfg.Identity.PrivateKeyPath != filepath.Join(tc.wantState, "identity.ed25519") ||
				cfg.Logging.AuditLogPath != filepath.Join(tc.wantState, "audit.jsonl") {
				t.Errorf("state %s key %s audit %s, want all in %s", cfg.State.Dir, cfg.Identity.PrivateKeyPath, cfg.Logging.AuditLogPath, tc.wantState)
			}
			if len(notes) != len(tc.wantNotes) {
				t.Fatalf("notes %q, want %d", notes, len(tc.wantNotes))
			}
			for i, want := range tc.wantNotes {
				if !strings.Contains(notes[i], want) {
					t.Errorf("note %q does not contain %q", notes[i], want)
				}
			}
		})
	}
}

// TestResolveRealFiles runs the package-level Resolve against real files,
// reached through the flag and the environment (the system and default
// locations are the machine's, so they are not asserted here).
func TestResolveRealFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.toml")
	if err := os.WriteFile(path, []byte("[logging]\nlevel = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == EnvConfig {
			return path
		}
		return ""
	}
	cfg, src, _, err := Resolve("", getenv)
	if err != nil || src.Origin != OriginEnv || src.Path != path || cfg.Logging.Level != "debug" {
		t.Fatalf("Resolve via env = %+v, %+v, %v", cfg, src, err)
	}
	_, _, _, err = Resolve(filepath.Join(dir, "missing.toml"), getenv)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Resolve with a missing flag file: %v", err)
	}
}

func TestDirWritable(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "new", "state")
	if !dirWritable(sub) {
		t.Fatal("dirWritable on a creatable directory = false")
	}
	st, err := os.Stat(sub)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory not created with 0700: %v %v", st, err)
	}
	if entries, _ := os.ReadDir(sub); len(entries) != 0 {
		t.Errorf("probe file left behind: %v", entries)
	}
	// A path below a regular file can never be a directory, even for root.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if dirWritable(filepath.Join(file, "state")) {
		t.Fatal("dirWritable below a regular file = true")
	}
}
