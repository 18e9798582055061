package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/buildinfo"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// runIn runs the command line in-process with a clean environment.
func runIn(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code = run(e, args)
	return code, out.String(), errb.String()
}

func TestGlobalFlagsAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-V"}, {"version"}} {
		code, out, _ := runIn(t, args...)
		if code != 0 || !strings.HasPrefix(out, "reflector "+buildinfo.Version+" ") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	cfg, _ := writeConfig(t, "")
	for _, args := range [][]string{
		{"-c", cfg, "config", "check"},
		{"--config", cfg, "config", "check"},
		{"--config=" + cfg, "config", "check"},
		{"config", "check", "-c", cfg},
		{"-c", "/nonexistent.toml", "config", "check", "-c", cfg}, // the later -c wins
	} {
		if code, _, errs := runIn(t, args...); code != 0 || !strings.Contains(errs, cfg) {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	// self-test takes -c (cheap check: the flag parses, the duration is
	// what is refused).
	for _, args := range [][]string{{"-c", cfg, "self-test", "--duration", "10ms"}, {"self-test", "-c", cfg, "--duration", "10ms"}} {
		if code, _, errs := runIn(t, args...); code != exitUsage || !strings.Contains(errs, "--duration 10ms") {
			t.Errorf("%v: exit %d, stderr %q; want the duration refused, not -c", args, code, errs)
		}
	}
	for _, args := range [][]string{{"-c"}, {"-c", cfg}, {"-x", "serve"}, {"-c", cfg, "version"}} {
		if code, _, _ := runIn(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestGuideCommandsAsWritten runs `reflector -c FILE serve` as the guide
// writes it, finds the Endpoint ID in the start-up log's message text, and
// checks that status, audit and show-id take -c on either side.
func TestGuideCommandsAsWritten(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, _ := writeConfig(t, "")
	p := &proc{cmd: exec.Command(testutil.ReflectorBinary(t), "-c", cfg, "serve"), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	st := waitServing(t, p, env, cfg)

	// journalctl -u reflector | grep "Endpoint ID": the JSON message text.
	// The admin socket (status) may answer before the banner is logged.
	named := func() bool {
		for _, l := range strings.Split(p.stdout.String(), "\n") {
			var m struct{ Message string }
			if json.Unmarshal([]byte(l), &m) == nil && strings.Contains(m.Message, "Endpoint ID "+st.EndpointID) {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, 10*time.Second, "a start-up log message names \"Endpoint ID "+st.EndpointID+"\"", named)
	if r := runBin(t, env, "-c", cfg, "status"); r.code != 0 || !strings.Contains(r.stdout, "Health:       ok") {
		t.Fatalf("reflector -c FILE status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBin(t, env, "-c", cfg, "show-id"); r.code != 0 || strings.TrimSpace(r.stdout) != st.EndpointID {
		t.Fatalf("reflector -c FILE show-id: exit %d %q", r.code, r.stdout)
	}
	if r := runBin(t, env, "pair", "--ttl", "1m", "-c", cfg); r.code != 0 { // audits pairing_enabled
		t.Fatalf("pair: exit %d %s", r.code, r.stderr)
	}
	r := runBin(t, env, "-c", cfg, "audit", "--json", "--event", "pairing_enabled")
	if r.code != 0 || r.stdout == "" {
		t.Fatalf("reflector -c FILE audit --json: exit %d %s", r.code, r.stderr)
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.EndpointID != st.EndpointID {
			t.Fatalf("audit --json line %q: %v", l, err)
		}
	}
}

// TestConsoleBannerNamesEndpointID: the console format (a terminal) shows
// the same message text.
func TestConsoleBannerNamesEndpointID(t *testing.T) {
	var buf testutil.SyncBuffer
	log := zerolog.New(zerolog.ConsoleWriter{Out: &buf, NoColor: true})
	h := servertest.Start(t, nil, server.Options{Logger: log})
	if out := buf.String(); !strings.Contains(out, "Endpoint ID "+h.Server.EndpointID().String()) {
		t.Fatalf("console log lacks the Endpoint ID in its text:\n%s", out)
	}
}

func TestAuditCommand(t *testing.T) {
	cfg, state := writeConfig(t, "")
	path := filepath.Join(state, "audit.jsonl")
	log, err := audit.Open(path, "PP-SELF")
	if err != nil {
		t.Fatal(err)
	}
	peerA, peerB := servertest.ID(servertest.NewKey(t)).String(), servertest.ID(servertest.NewKey(t)).String()
	n := int64(1234)
	old := time.Now().Add(-2 * time.Hour)
	for _, ev := range []audit.Event{
		{Timestamp: old, EventType: audit.SessionGranted, PeerID: peerA, TestType: "throughput"},
		{EventType: audit.SessionCompleted, PeerID: peerA, TestType: "throughput", BytesTransferred: &n},
		{EventType: audit.SessionDenied, PeerID: peerB, Reason: "busy", Details: map[string]any{"message": "one at a time"}},
	} {
		if err := log.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	_ = log.Close()
	appendRaw(t, path, `{"timestamp":"2026-`) // a torn last line

	code, out, errs := runIn(t, "-c", cfg, "audit")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.Contains(lines[1], "session_completed") || !strings.Contains(lines[1], peerA) ||
		!strings.Contains(lines[1], "bytes=1234") || !strings.Contains(lines[2], `message="one at a time"`) || !strings.Contains(errs, "ends inside a line") {
		t.Fatalf("audit table: exit %d\n%s\nstderr %s", code, out, errs)
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--event", "session_denied"}, 1},
		{[]string{"--peer", strings.ToLower(peerA)}, 2},
		{[]string{"--since", "1h"}, 2},
		{[]string{"--since", "1h", "--peer", peerA, "--event", "session_completed"}, 1},
	} {
		code, out, errs := runIn(t, append([]string{"audit", "--json", "-c", cfg}, tc.args...)...)
		got := strings.Split(strings.TrimSpace(out), "\n")
		if out == "" {
			got = nil
		}
		if code != 0 || len(got) != tc.want {
			t.Errorf("audit %v: exit %d, %d lines, want %d\n%s%s", tc.args, code, len(got), tc.want, out, errs)
		}
		for _, l := range got {
			if !json.Valid([]byte(l)) {
				t.Errorf("audit --json line %q is not JSON", l)
			}
		}
	}
	if code, _, _ := runIn(t, "audit", "-c", cfg, "--peer", "PP-NOPE"); code != exitUsage {
		t.Errorf("--peer with a bad ID: exit %d, want %d", code, exitUsage)
	}
}

func appendRaw(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestAuditFollowAcrossCopytruncate follows the log with the binary while
// lines are appended and the file is cut as logrotate's copytruncate does.
func TestAuditFollowAcrossCopytruncate(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	path := filepath.Join(state, "audit.jsonl")
	log, err := audit.Open(path, "PP-SELF")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if err := log.Write(audit.Event{EventType: audit.PairingEnabled}); err != nil { // before --follow: not shown
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.ReflectorBinary(t), "-c", cfg, "audit", "--follow", "--json")
	cmd.Env = env
	var out, errb testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	count := func(typ audit.EventType) int { return strings.Count(out.String(), `"event_type":"`+string(typ)+`"`) }
	// Writes until follow shows one (it starts at "now").
	testutil.Eventually(t, 20*time.Second, "follow shows a new line", func() bool {
		_ = log.Write(audit.Event{EventType: audit.PeerPaired})
		return count(audit.PeerPaired) > 0
	})
	if err := os.Truncate(path, 0); err != nil { // copytruncate's cut
		t.Fatal(err)
	}
	if err := log.Write(audit.Event{EventType: audit.SessionGranted}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "follow shows the line after the truncation", func() bool {
		return count(audit.SessionGranted) == 1
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || count(audit.PairingEnabled) != 0 {
		t.Fatalf("follow: %v, output:\n%s%s", err, out.String(), errb.String())
	}
}

// TestUpgradeFromRustReflector: the state directory of the Rust reflector
// holds its key as identity.key (written with fs::write, then chmod 0600);
// show-id and serve keep its Endpoint ID, and serve adopts it once,
// audited.
func TestUpgradeFromRustReflector(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	seed := make([]byte, identity.SeedSize)
	for i := range seed {
		seed[i] = byte(0x40 + i)
	}
	legacy := filepath.Join(state, identity.LegacyKeyName)
	if err := os.WriteFile(legacy, seed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	want := identity.IDFromPublicKey(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)).String()

	r := runBin(t, env, "show-id", "-c", cfg)
	if r.code != 0 || strings.TrimSpace(r.stdout) != want || !strings.Contains(r.stderr, "will be adopted") {
		t.Fatalf("show-id before the upgrade: exit %d %q %q, want %s", r.code, r.stdout, r.stderr, want)
	}
	for round := range 2 {
		p := startServe(t, env, "-c", cfg)
		if st := waitServing(t, p, env, cfg); st.EndpointID != want {
			t.Fatalf("round %d: serving %s, want the Rust reflector's %s", round, st.EndpointID, want)
		}
		if code := p.stop(t); code != 0 {
			t.Fatalf("round %d: serve exit %d", round, code)
		}
		if round == 0 && !strings.Contains(p.stdout.String(), "adopted the earlier reflector's identity.key") {
			t.Fatalf("no adoption in the log:\n%s", p.stdout.String())
		}
	}
	r = runBin(t, env, "audit", "--json", "--event", "identity_adopted", "-c", cfg)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("identity_adopted audited %d times, want once:\n%s%s", strings.Count(r.stdout, "\n"), r.stdout, r.stderr)
	}
}

// TestStatusExitCodeFollowsHealth: with the audit log unusable `reflector
// status` names the problem and the fix and exits 1 (`--live` still 0);
// repaired, it exits 0 again.
func TestStatusExitCodeFollowsHealth(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	p := startServe(t, env, "-c", cfg)
	waitServing(t, p, env, cfg)
	defer p.stop(t)
	auditPath := filepath.Join(state, "audit.jsonl")
	if err := os.Rename(auditPath, auditPath+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(auditPath, 0o700); err != nil { // unwritable, even for root
		t.Fatal(err)
	}
	r := runBin(t, env, "status", "-c", cfg)
	if r.code != exitFail || !strings.Contains(r.stdout, "UNHEALTHY") || !strings.Contains(r.stdout, "PROBLEM (audit_log): ") ||
		!strings.Contains(r.stdout, "FIX: ") || !strings.Contains(r.stderr, "unhealthy") {
		t.Fatalf("status with the audit log replaced by a directory: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBin(t, env, "status", "--live", "-c", cfg); r.code != 0 {
		t.Fatalf("status --live while unhealthy: exit %d %s", r.code, r.stderr)
	}
	if err := os.Remove(auditPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(auditPath+".away", auditPath); err != nil {
		t.Fatal(err)
	}
	if r := runBin(t, env, "status", "-c", cfg); r.code != 0 || !strings.Contains(r.stdout, "Health:       ok") {
		t.Fatalf("status after the repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestSudoShowIDKeepsServiceUserOwner: `sudo reflector show-id` on a state
// directory of the service user leaves a key that user owns.
func TestSudoShowIDKeepsServiceUserOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the guide runs show-id with sudo)")
	}
	env := testEnv(t, t.TempDir())
	cfg, state := writeConfig(t, "")
	if err := os.Chown(state, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if r := runBin(t, env, "show-id", "-c", cfg); r.code != 0 {
		t.Fatalf("show-id: exit %d %s", r.code, r.stderr)
	}
	st, err := os.Stat(filepath.Join(state, "identity.ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 4242 || sys.Gid != 4343 || st.Mode().Perm() != 0o600 {
		t.Fatalf("key owned by %d:%d mode %04o, want 4242:4343 0600", sys.Uid, sys.Gid, st.Mode().Perm())
	}
}
