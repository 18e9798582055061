package main

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

// configFlag adds -c/--config.
func configFlag(fs *pflag.FlagSet) *string {
	return fs.StringP("config", "c", "", "config file (default: $REFLECTOR_CONFIG, /etc/reflector/reflector.toml, $XDG_CONFIG_HOME/reflector/reflector.toml, built-in defaults)")
}

// configError is an invalid or unreadable configuration (exit 2).
func loadConfig(e *env, path string) (*config.Config, config.Source, []string, error) {
	cfg, src, notes, err := config.Resolve(path, e.getenv)
	if err != nil {
		return nil, src, nil, &exitError{code: exitUsage, err: err}
	}
	return cfg, src, notes, nil
}

// describeSource renders a config source for people.
func describeSource(src config.Source) string {
	if src.Path == "" {
		return src.Origin
	}
	if src.Origin == config.OriginFlag {
		return src.Path
	}
	return src.Path + " (via " + src.Origin + ")"
}

// isTerminal reports whether f is a terminal (not merely a character
// device such as /dev/null).
func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// newLogger writes JSON lines to w, or readable console lines when w is a
// terminal, at level (trace, debug, info, warn, error).
func newLogger(w io.Writer, level string, forceJSON bool) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(strings.ToLower(level))
		if err != nil {
			return zerolog.Logger{}, usagef("log level %q: use trace, debug, info, warn or error", level)
		}
		lvl = l
	}
	out := w
	if f, ok := w.(*os.File); ok && !forceJSON && isTerminal(f) {
		out = zerolog.ConsoleWriter{Out: f, TimeFormat: "15:04:05"}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// loadClientKey loads the client identity at path (the default client key
// when path is empty), creating it on first use and saying so on stderr.
func loadClientKey(e *env, path string) (ed25519.PrivateKey, error) {
	if path == "" {
		p, err := defaultClientKey(e.getenv)
		if err != nil {
			return nil, err
		}
		path = p
	}
	key, created, err := identity.LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	if created {
		fmt.Fprintf(e.stderr, "created a new client identity %s in %s (authorize it on the reflector)\n", idOf(key), path)
	}
	return key, nil
}

// defaultClientKey is the client identity used by pair-with (and
// show-id --client): $XDG_CONFIG_HOME/reflector/client.ed25519, or
// ~/.config/reflector/client.ed25519.
func defaultClientKey(getenv func(string) string) (string, error) {
	base := getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(base) {
		home := getenv("HOME")
		if !filepath.IsAbs(home) {
			return "", fmt.Errorf("cannot place the client identity: neither XDG_CONFIG_HOME nor HOME is set; pass --identity FILE")
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "reflector", "client.ed25519"), nil
}
