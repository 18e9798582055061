package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// The tests that run the reflector as a process use
// testutil.ReflectorBinary (built once, readable by an unprivileged user for
// the state fallback test), removed at exit by testutil.Run.
func TestMain(m *testing.M) { os.Exit(testutil.Run(m)) }

// testEnv is a clean environment: a private HOME and no REFLECTOR_CONFIG.
func testEnv(t *testing.T, home string) []string {
	t.Helper()
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_STATE_HOME=" + filepath.Join(home, ".local", "state"),
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary to completion (bounded).
func runBin(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.ReflectorBinary(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run reflector %v: %v", args, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// proc is a running `reflector serve`.
type proc struct {
	cmd    *exec.Cmd
	stdout testutil.SyncBuffer
	stderr testutil.SyncBuffer
	done   chan struct{}
	err    error
}

func startServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(testutil.ReflectorBinary(t), append([]string{"serve"}, args...)...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop on SIGTERM; output:\n%s%s", p.stdout.String(), p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitServing polls `reflector status --json` and returns the status.
func waitServing(t *testing.T, p *proc, env []string, cfg string) server.Status {
	t.Helper()
	var st server.Status
	testutil.Eventually(t, 30*time.Second, "reflector status exits 0", func() bool {
		select {
		case <-p.done:
			t.Fatalf("serve exited early (%v):\n%s%s", p.err, p.stdout.String(), p.stderr.String())
		default:
		}
		r := runBin(t, env, "status", "--json", "-c", cfg)
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil
	})
	return st
}

// writeConfig writes a config with state in a fresh short directory.
func writeConfig(t *testing.T, extra string) (cfgPath, stateDir string) {
	t.Helper()
	stateDir = servertest.StateDir(t)
	cfgPath = filepath.Join(t.TempDir(), "reflector.toml")
	if err := os.WriteFile(cfgPath, []byte(configBody(stateDir, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, stateDir
}

// configBody is a config on 127.0.0.1:0 with state in stateDir, plus extra.
func configBody(stateDir, extra string) string {
	return fmt.Sprintf("[network]\nlisten_address = \"127.0.0.1:0\"\n\n[state]\ndir = %q\n%s", stateDir, extra)
}

func field(t *testing.T, out, label string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), label); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q line in:\n%s", label, out)
	return ""
}

// TestPairingAcrossProcesses is the operator flow with real processes:
// serve, pair, pair-with, peers, status, restart.
func TestPairingAcrossProcesses(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	srv := startServe(t, env, "-c", cfg)
	st := waitServing(t, srv, env, cfg)
	addr := st.ListenAddress

	r := runBin(t, env, "pair", "--ttl", "2m", "-c", cfg)
	if r.code != 0 {
		t.Fatalf("pair: %d %s", r.code, r.stderr)
	}
	token, serverID := field(t, r.stdout, "Token:"), field(t, r.stdout, "Endpoint ID:")
	if serverID != st.EndpointID {
		t.Fatalf("pair printed %s, status says %s", serverID, st.EndpointID)
	}

	keyA, keyB := filepath.Join(t.TempDir(), "a.key"), filepath.Join(t.TempDir(), "b.key")
	r = runBin(t, env, "pair-with", "--peer", addr, "--token", token, "--identity", keyA, "--expect-id", serverID)
	if r.code != 0 || !strings.Contains(r.stdout, serverID) {
		t.Fatalf("pair-with: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The token is spent: another appliance cannot use it.
	if r = runBin(t, env, "pair-with", "--peer", addr, "--token", token, "--identity", keyB); r.code == 0 || !strings.Contains(r.stderr, "no pairing window is open") {
		t.Fatalf("reused token: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A wrong token fails while a window is open.
	if r = runBin(t, env, "pair", "-c", cfg); r.code != 0 {
		t.Fatalf("second pair: %s", r.stderr)
	}
	r = runBin(t, env, "pair-with", "--peer", addr, "--token", "0000-0000-0000-0000", "--identity", keyB)
	if r.code == 0 || !strings.Contains(r.stderr, "wrong pairing token") {
		t.Fatalf("wrong token: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A pinned ID that is not the server's is refused before pairing.
	r = runBin(t, env, "pair-with", "--peer", addr, "--token", token, "--identity", keyB, "--expect-id", servertest.ID(servertest.NewKey(t)).String())
	if r.code == 0 || !strings.Contains(r.stderr, "expected") {
		t.Fatalf("wrong --expect-id: %d\n%s", r.code, r.stderr)
	}

	idA := showID(t, env, "--identity", keyA)
	r = runBin(t, env, "peers", "list", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, idA) || !strings.Contains(r.stdout, "paired") {
		t.Fatalf("peers list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	idB := showID(t, env, "--identity", keyB)
	if r = runBin(t, env, "peers", "add", idB, "-c", cfg); r.code != 0 {
		t.Fatalf("peers add: %s", r.stderr)
	}
	if r = runBin(t, env, "peers", "remove", idB, "-c", cfg); r.code != 0 {
		t.Fatalf("peers remove: %s", r.stderr)
	}
	if r = runBin(t, env, "peers", "remove", idB, "-c", cfg); r.code != 1 {
		t.Fatalf("removing an absent peer: exit %d, want 1", r.code)
	}
	if r = runBin(t, env, "peers", "add", "PP-BOGUS", "-c", cfg); r.code != 2 {
		t.Fatalf("adding a malformed ID: exit %d, want 2", r.code)
	}

	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exit code %d after SIGTERM:\n%s", code, srv.stderr.String())
	}
	if out := srv.stdout.String(); !strings.Contains(out, "reflector serving pp-link/1") || !strings.Contains(out, st.EndpointID) {
		t.Fatalf("no start-up banner in:\n%s", out)
	}
	r = runBin(t, env, "status", "-c", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "no reflector answers at "+filepath.Join(state, "admin.sock")) {
		t.Fatalf("status with the server down: %d %s", r.code, r.stderr)
	}

	// After a restart the paired peer is still authorized.
	srv = startServe(t, env, "-c", cfg)
	st = waitServing(t, srv, env, cfg)
	key, err := identity.LoadKey(keyA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, st.ListenAddress, key, identity.EndpointID(serverID))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(); err != nil {
		t.Fatalf("get_status after restart: %v", err)
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("second serve exit code %d", code)
	}
	events := servertest.ReadAudit(t, filepath.Join(state, "audit.jsonl"))
	for _, typ := range []audit.EventType{audit.PairingEnabled, audit.PeerPaired, audit.PeerRemoved, audit.ConnectionAccepted} {
		if len(servertest.FindAudit(events, typ)) == 0 {
			t.Errorf("no %s in the audit log", typ)
		}
	}
}

func showID(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := runBin(t, env, append([]string{"show-id"}, args...)...)
	if r.code != 0 {
		t.Fatalf("show-id %v: %s", args, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if _, err := identity.ParseEndpointID(id); err != nil {
		t.Fatalf("show-id printed %q: %v", id, err)
	}
	return id
}

func TestSIGHUPReloadsAllowlist(t *testing.T) {
	env := testEnv(t, t.TempDir())
	keyFile := filepath.Join(t.TempDir(), "a.key")
	id := showID(t, env, "--identity", keyFile)
	cfg, state := writeConfig(t, fmt.Sprintf("\n[access]\nauthorized_peers = [%q]\n", id))
	srv := startServe(t, env, "-c", cfg)
	st := waitServing(t, srv, env, cfg)
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), st.ListenAddress, key, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(configBody(state, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "peer dropped from the config is disconnected", func() bool {
		_, err := c.Status()
		return err != nil
	})
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestConfigCheck(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, _ := writeConfig(t, "")
	r := runBin(t, env, "config", "check", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "[network]") || !strings.Contains(r.stdout, "127.0.0.1:0") {
		t.Fatalf("config check of a good file: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, tc := range []struct{ body, key string }{
		{"[network]\nmode = \"sideways\"\n", "network.mode"},
		{"[quotas]\nmax_test_duration = 5\n", "quotas.max_test_duration"},
		{"[network]\ndata_port_range_start = 6000\ndata_port_range_end = 5000\n", "data_port_range"},
	} {
		bad := filepath.Join(t.TempDir(), "bad.toml")
		if err := os.WriteFile(bad, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		r := runBin(t, env, "config", "check", "-c", bad)
		if r.code == 0 || !strings.Contains(r.stderr, tc.key) {
			t.Errorf("config check of %q: exit %d, stderr %q: want non-zero naming %s", tc.body, r.code, r.stderr, tc.key)
		}
		if r := runBin(t, env, "serve", "-c", bad); r.code == 0 || !strings.Contains(r.stderr, tc.key) {
			t.Errorf("serve with %q: exit %d, want a refusal naming %s", tc.body, r.code, tc.key)
		}
	}
}

func TestHelpAndUsageErrors(t *testing.T) {
	env := testEnv(t, t.TempDir())
	for _, c := range commands {
		r := runBin(t, env, c.name, "--help")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage:") || !strings.Contains(r.stdout, "reflector "+c.name) {
			t.Errorf("%s --help: exit %d, stdout %q", c.name, r.code, r.stdout)
		}
	}
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"serve", "--bind", "nonsense"},
		{"serve", "--bogus"},
		{"pair", "--ttl", "0s"},
		{"pair", "--ttl", "48h"},
		{"peers"},
		{"peers", "frobnicate"},
		{"config"},
		{"pair-with", "--peer", "127.0.0.1:1"},
		{"pair-with", "--peer", "nohostport", "--token", "x"},
		{"iperf3-server", "--listen", "nonsense"},
		{"version", "extra"},
	} {
		if r := runBin(t, env, args...); r.code != 2 || r.stderr == "" {
			t.Errorf("reflector %v: exit %d, stderr %q; want 2 and a message", args, r.code, r.stderr)
		}
	}
	if r := runBin(t, env, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "reflector ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

func TestShowIDAndRotateIdentity(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	first := showID(t, env, "-c", cfg)
	if again := showID(t, env, "-c", cfg); again != first {
		t.Fatalf("show-id changed: %s then %s", first, again)
	}
	clientKey := filepath.Join(t.TempDir(), "sub", "client.key")
	cid := showID(t, env, "--identity", clientKey)
	if fi, err := os.Stat(clientKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key %v %v: want mode 0600", fi, err)
	}
	if cid == first || showID(t, env, "--identity", clientKey) != cid {
		t.Fatal("client identity not stable or equal to the server's")
	}
	// The default client key lives under XDG_CONFIG_HOME.
	def := showID(t, env, "--client")
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(env[2], "XDG_CONFIG_HOME="), "reflector", "client.ed25519")); err != nil || def == "" {
		t.Fatalf("default client key: %v", err)
	}

	if r := runBin(t, env, "rotate-identity", "-c", cfg); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("rotate without a terminal or --yes: %d %s", r.code, r.stderr)
	}
	r := runBin(t, env, "rotate-identity", "--yes", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "re-pin") {
		t.Fatalf("rotate-identity --yes: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	second := showID(t, env, "-c", cfg)
	if second == first {
		t.Fatal("identity did not change")
	}
	backups, _ := filepath.Glob(filepath.Join(state, "identity.ed25519.*.bak"))
	if len(backups) != 1 {
		t.Fatalf("backups %v", backups)
	}
	rot := servertest.FindAudit(servertest.ReadAudit(t, filepath.Join(state, "audit.jsonl")), audit.IdentityRotated)
	if len(rot) != 1 || rot[0].EndpointID != second || rot[0].Details["old_endpoint_id"] != first {
		t.Fatalf("identity_rotated events %+v", rot)
	}
}

// TestServeStateFallback: with no config file anywhere and
// /var/lib/reflector not writable, `reflector serve` keeps its state in
// $XDG_STATE_HOME/reflector and says so. As root the test runs the binary
// as nobody so that /var/lib/reflector is really not writable.
func TestServeStateFallback(t *testing.T) {
	if _, err := os.Stat("/etc/reflector/reflector.toml"); err == nil {
		t.Skip("/etc/reflector/reflector.toml exists: the fallback does not apply on this machine")
	}
	home, err := os.MkdirTemp("", "rfl-home")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	env := testEnv(t, home)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	} else if f, err := os.CreateTemp("/var/lib/reflector", "probe"); err == nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		t.Skip("/var/lib/reflector is writable by this user: the fallback does not apply")
	}
	cmd := exec.Command(testutil.ReflectorBinary(t), "serve", "--bind", "127.0.0.1:0")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	state := filepath.Join(home, ".local", "state", "reflector")
	testutil.Eventually(t, 30*time.Second, "serve starts with state in XDG_STATE_HOME", func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v\n%s", err, out.String())
		default:
		}
		_, err := os.Stat(filepath.Join(state, "admin.sock"))
		return err == nil && strings.Contains(out.String(), "reflector serving pp-link/1")
	})
	if !strings.Contains(out.String(), state) || !strings.Contains(out.String(), "not writable") {
		t.Fatalf("the log does not say where state went:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(state, "identity.ed25519")); err != nil {
		t.Fatalf("identity key: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after SIGINT: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}
	if _, err := os.Stat(filepath.Join(state, "admin.sock")); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}

// startIperf3Server runs `reflector iperf3-server --json` on listen and
// returns the process and the bound address from its log.
func startIperf3Server(t *testing.T, listen string, extra ...string) (*exec.Cmd, *testutil.SyncBuffer, chan error, string) {
	t.Helper()
	cmd := exec.Command(testutil.ReflectorBinary(t), append([]string{"iperf3-server", "--listen", listen, "--json"}, extra...)...)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var addr string
	testutil.Eventually(t, 20*time.Second, "iperf3-server logs its address", func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			var rec struct {
				Addr    string `json:"addr"`
				Message string `json:"message"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Message == "iperf3 server listening" {
				addr = rec.Addr
				return true
			}
		}
		return false
	})
	return cmd, &out, done, addr
}

func TestIperf3ServerCommand(t *testing.T) {
	iperf := testutil.LookBinary(t, "iperf3")
	_, out, done, addr := startIperf3Server(t, "127.0.0.1:0", "--one-off")
	if strings.Contains(out.String(), "no authentication") {
		t.Fatalf("loopback listener warned:\n%s", out.String())
	}
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := exec.CommandContext(ctx, iperf, "-c", host, "-p", port, "-t", "1", "-J").CombinedOutput()
	if err != nil {
		t.Fatalf("iperf3 -c: %v\n%s", err, res)
	}
	var rep struct {
		End struct {
			SumReceived struct {
				Bytes int64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(res, &rep); err != nil || rep.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 report (%v): %s", err, res)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("--one-off exit: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("--one-off server still running after its test")
	}

	cmd, out, done, _ := startIperf3Server(t, "0.0.0.0:0")
	if !strings.Contains(out.String(), "no authentication") {
		t.Fatalf("a non-loopback listener did not warn:\n%s", out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("iperf3-server did not stop on SIGTERM")
	}
}
