package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// lifecycleServe starts `reflector serve` in direct_ephemeral mode with
// the metrics listener on, shutdown_grace_sec = grace and one authorized
// client key. It returns the process, its status, the client key and the
// state directory.
func lifecycleServe(t *testing.T, grace int) (*proc, serveStatus, identity.EndpointID, string) {
	t.Helper()
	env := testEnv(t, t.TempDir())
	keyFile := filepath.Join(t.TempDir(), "client.key")
	id := showID(t, env, "--identity", keyFile)
	state := servertest.StateDir(t)
	base := testutil.PortRange(t, 10)
	body := fmt.Sprintf(`[network]
listen_address = "127.0.0.1:0"
mode = "direct_ephemeral"
data_port_range_start = %d
data_port_range_end = %d

[state]
dir = %q

[access]
authorized_peers = [%q]

[metrics]
listen_address = "127.0.0.1:0"

[limits]
shutdown_grace_sec = %d
`, base, base+9, state, id, grace)
	cfg := filepath.Join(t.TempDir(), "reflector.toml")
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, env, "-c", cfg)
	st := waitServing(t, p, env, cfg)
	if st.MetricsAddress == "" {
		t.Fatalf("status names no metrics address: %+v", st)
	}
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return p, serveStatus{Listen: st.ListenAddress, Metrics: "http://" + st.MetricsAddress, key: key, cfg: cfg, env: env}, identity.EndpointID(id), state
}

// serveStatus is what the lifecycle tests need of a running serve.
type serveStatus struct {
	Listen, Metrics string
	key             ed25519.PrivateKey
	cfg             string
	env             []string
}

func (s serveStatus) dial(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.Listen, s.key, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 10 * time.Second
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// get fetches url; a failed request is code 0.
func get(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b)
}

// series returns the value of the exact series in a /metrics body, or -1.
func series(body, name string) float64 {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// iperf3Run is a stock iperf3 client running in the background.
type iperf3Run struct {
	done chan struct{} // closed when it exited
	err  error
}

// runIperf3 starts stock iperf3 against a granted port; it is killed at
// the end of the test if still running.
func runIperf3(t *testing.T, bin string, port, secs int) *iperf3Run {
	t.Helper()
	cmd := exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-b", "200M")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &iperf3Run{done: make(chan struct{})}
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// wait waits (bounded) for the client to exit and returns its error.
func (r *iperf3Run) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(60 * time.Second):
		t.Fatal("iperf3 client did not exit")
		return nil
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestServeMetricsAndSIGTERMDrain runs the built binary: /metrics counters
// across a real session with stock iperf3 (checked by promtool), then
// SIGTERM during a 20 s test: /health turns 503 draining, new sessions are
// refused busy, the test is ended at the grace period, the process exits
// 0 and the quota file holds the test's bytes.
func TestServeMetricsAndSIGTERMDrain(t *testing.T) {
	iperf3 := testutil.LookBinary(t, "iperf3")
	promtool := testutil.LookBinary(t, "promtool")
	p, s, id, state := lifecycleServe(t, 3)

	if code, body := get(s.Metrics + "/health"); code != http.StatusOK || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("/health = %d %s", code, body)
	}
	c := s.dial(t)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}

	// A short test that runs to its end.
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 1, Streams: ptrTo(1)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := runIperf3(t, iperf3, g.Port, 1).wait(t); err != nil {
		t.Fatalf("iperf3 -t 1: %v", err)
	}
	var body string
	testutil.Eventually(t, 15*time.Second, "a completed session on /metrics", func() bool {
		_, body = get(s.Metrics + "/metrics")
		return series(body, `reflector_sessions_completed_total{end_reason="done",test_type="throughput"}`) == 1
	})
	for name, ok := range map[string]func(float64) bool{
		`reflector_connections_accepted_total`:                              func(v float64) bool { return v == 1 },
		`reflector_sessions_granted_total{test_type="throughput"}`:          func(v float64) bool { return v == 1 },
		`reflector_sessions_active{test_type="throughput"}`:                 func(v float64) bool { return v == 0 },
		`reflector_data_bytes_total{direction="rx",test_type="throughput"}`: func(v float64) bool { return v > 1e6 },
		`reflector_audit_write_failures_total`:                              func(v float64) bool { return v == 0 },
	} {
		if v := series(body, name); !ok(v) {
			t.Errorf("%s = %v after one completed test", name, v)
		}
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	// A 20 s test, interrupted by SIGTERM once bytes flow.
	g, err = c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 20, Streams: ptrTo(1)}})
	if err != nil {
		t.Fatal(err)
	}
	long := runIperf3(t, iperf3, g.Port, 20)
	testutil.Eventually(t, 15*time.Second, "the long test running and moving bytes", func() bool {
		_, body = get(s.Metrics + "/metrics")
		return series(body, `reflector_sessions_active{test_type="throughput"}`) == 1 &&
			series(body, `reflector_data_bytes_total{direction="rx",test_type="throughput"}`) > 2e6
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "/health reports draining", func() bool {
		code, body := get(s.Metrics + "/health")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"status":"`+metrics.StatusDraining+`"`)
	})
	_, err = c.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Deny.Reason != link.DenyBusy || denied.Deny.RetryAfterSec == nil {
		t.Fatalf("session request while draining: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM:\n%s%s", p.stdout.String(), p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("serve exit %d after SIGTERM:\n%s%s", code, p.stdout.String(), p.stderr.String())
	}
	_ = long.wait(t) // the client sees the reflector go; its error is expected

	var ended *audit.Event
	for _, e := range servertest.ReadAudit(t, filepath.Join(state, "audit.jsonl")) {
		if e.EventType == audit.SessionCompleted && e.TestID == g.TestID {
			ended = &e
		}
	}
	if ended == nil || ended.Reason != "shutdown" || ended.DurationSec == nil || *ended.DurationSec >= 20 ||
		ended.BytesTransferred == nil || *ended.BytesTransferred <= 0 {
		t.Fatalf("session_completed of the interrupted test: %+v", ended)
	}
	q, err := quota.Open(filepath.Join(state, "quotas.json"), quota.Limits{MaxTestsPerHour: 10, MaxBytesPerDay: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	u := q.Peer(id.String(), time.Now())
	first := ended.BytesTransferred
	if u.TestsToday != 2 || u.BytesToday <= *first {
		t.Fatalf("quota file: %+v, want 2 tests and more than the interrupted test's %d bytes", u, *first)
	}
	if !strings.Contains(p.stdout.String(), "draining") {
		t.Errorf("no drain in the log:\n%s", p.stdout.String())
	}
}

// TestServeSIGHUPKeepsConnectionsAndReopensAudit: after logrotate moves
// the audit log, SIGHUP reopens it; the authorized peer's connection
// survives the reload.
func TestServeSIGHUPKeepsConnectionsAndReopensAudit(t *testing.T) {
	p, s, id, state := lifecycleServe(t, 1)
	c := s.dial(t)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(state, "audit.jsonl")
	if err := os.Rename(auditPath, auditPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "SIGHUP reopened the audit log", func() bool {
		_, err := os.Stat(auditPath)
		return err == nil
	})
	if _, err := c.Status(); err != nil {
		t.Fatalf("the authorized connection did not survive SIGHUP: %v", err)
	}
	if _, err := s.dial(t).Hello(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the new connection audited in the reopened log", func() bool {
		for _, e := range servertest.ReadAudit(t, auditPath) {
			if e.EventType == audit.ConnectionAccepted && e.PeerID == id.String() {
				return true
			}
		}
		return false
	})
	if code, body := get(s.Metrics + "/health"); code != http.StatusOK {
		t.Fatalf("/health after SIGHUP = %d %s", code, body)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
