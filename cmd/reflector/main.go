// Command reflector is the PacketParamedic reflector: the server
// (`reflector serve`), its operator commands (pair, peers, status,
// identity) and the client side of pairing (`reflector pair-with`).
// Flag parsing only; the work is done in the controlplane packages.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// usageError is bad command-line input (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitError carries a specific exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis after the name
	summary string
	run     func(env *env, args []string) error
}

// env is the process environment a command runs in (replaced in tests).
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

var commands []command

func init() {
	commands = []command{
		{"serve", "[--bind ADDR] [-c FILE]", "run the reflector server", runServe},
		{"config", "check [-c FILE]", "validate the configuration and print the effective settings", runConfig},
		{"show-id", "[--identity FILE | --client] [-c FILE]", "print the server's (or a client key's) Endpoint ID", runShowID},
		{"rotate-identity", "[--yes] [-c FILE]", "replace the server's identity key (keeps a backup)", runRotate},
		{"pair", "[--ttl 10m] [-c FILE]", "open a pairing window on the running server and print its token", runPair},
		{"peers", "list|add ID|remove ID [-c FILE]", "manage the running server's allowlist", runPeers},
		{"audit", "[--follow] [--since 1h] [--event TYPE] [--peer ID] [--json] [-c FILE]", "print the audit log (a table, or raw JSON lines)", runAudit},
		{"status", "[--json] [--live] [-c FILE]", "ask the running server for its status (exit 0 when healthy; --live: when it answers)", runStatus},
		{"pair-with", "--peer HOST:PORT --token T [--identity FILE] [--expect-id ID]", "pair this machine's client identity with a reflector", runPairWith},
		{"test", "--peer HOST:PORT [--json] throughput|udp-echo [flags]", "run a throughput or UDP echo test against a reflector", runTest},
		{"tunnel", "--peer HOST:PORT [--listen 127.0.0.1:5201] [-t 10] [-P 4] [-R] [--bidir] [-u]", "carry a stock iperf3 client's test through a tunneled reflector's control port", runTunnel},
		{"iperf3-server", "[--listen 127.0.0.1:5201] [--one-off] [--json]", "run the native iperf3 server alone, without the control plane", runIperf3Server},
		{"self-test", "[--json] [--duration 3s] [-c FILE]", "check whether this host can sustain 1 Gbit/s tests (READY / DEGRADED / NOT READY)", runSelfTest},
		{"version", "", "print the version", runVersion},
	}
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(e, os.Args[1:]))
}

// run executes the command line and returns the exit code.
func run(e *env, args []string) int {
	if len(args) == 0 {
		topUsage(e.stderr)
		return exitUsage
	}
	global, args, err := splitGlobal(args)
	if err != nil {
		return exitCode(e, err)
	}
	switch {
	case global.version:
		return exitCode(e, runVersion(e, nil))
	case global.help:
		topUsage(e.stdout)
		return exitOK
	case len(args) == 0:
		return exitCode(e, usagef("a command must follow the flags (e.g. reflector -c FILE serve)"))
	}
	name := args[0]
	if name == "help" {
		topUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			rest := args[1:]
			if global.config != "" {
				// Prepended, so a -c after the command name wins; a command
				// without -c refuses it as an unknown flag.
				rest = append([]string{"--config", global.config}, rest...)
			}
			return exitCode(e, c.run(e, rest))
		}
	}
	fmt.Fprintf(e.stderr, "reflector: unknown command %q\n\n", name)
	topUsage(e.stderr)
	return exitUsage
}

// globalFlags are the flags accepted before the command name.
type globalFlags struct {
	config        string
	version, help bool
}

// splitGlobal takes the flags before the command name (-c/--config FILE,
// -V/--version, -h/--help), as in `reflector -c test-config.toml serve`,
// and returns the command line that follows them.
func splitGlobal(args []string) (globalFlags, []string, error) {
	var g globalFlags
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		a := args[0]
		args = args[1:]
		switch {
		case a == "-V" || a == "--version":
			g.version = true
		case a == "-h" || a == "--help":
			g.help = true
		case a == "-c" || a == "--config":
			if len(args) == 0 {
				return g, nil, usagef("%s: missing file name", a)
			}
			g.config, args = args[0], args[1:]
		case strings.HasPrefix(a, "--config="):
			g.config = strings.TrimPrefix(a, "--config=")
		case strings.HasPrefix(a, "-c") && len(a) > 2:
			g.config = strings.TrimPrefix(strings.TrimPrefix(a, "-c"), "=")
		default:
			return g, nil, usagef("unknown flag %q before the command (flags that come before it: -c FILE, -V, -h)", a)
		}
	}
	return g, args, nil
}

func exitCode(e *env, err error) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "reflector: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(e.stderr, "Run 'reflector <command> --help' for usage.")
		return exitUsage
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFail
}

func topUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: reflector [-c FILE] <command> [flags]")
	fmt.Fprintln(w, "       reflector --version | -V")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	names := make([]string, 0, len(commands))
	byName := map[string]command{}
	for _, c := range commands {
		names = append(names, c.name)
		byName[c.name] = c
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, byName[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'reflector <command> --help' for a command's flags. -c/--config FILE")
	fmt.Fprintln(w, "may come before or after the command name.")
}

// newFlags returns a flag set for a command whose --help prints the
// synopsis and flags to stdout.
func newFlags(e *env, name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.SortFlags = false
	var c command
	for _, cc := range commands {
		if cc.name == name {
			c = cc
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: reflector %s %s\n\n%s\n\nFlags:\n", c.name, c.args, c.summary)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(e.stderr)
	}
	return fs
}

// parse parses args, turning flag errors into usage errors.
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

// noArgs rejects positional arguments.
func noArgs(fs *pflag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), strings.Join(fs.Args(), " "))
	}
	return nil
}
