package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// httpGet fetches url and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// health fetches /health and decodes it.
func health(t *testing.T, base string) (int, metrics.Health) {
	t.Helper()
	code, body := httpGet(t, base+"/health")
	var h metrics.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/health body %q: %v", body, err)
	}
	return code, h
}

// sample returns the value of the series written exactly as series (name
// and labels in exposition order) in a /metrics body, or -1.
func sample(body, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// promtoolCheck runs `promtool check metrics` on a /metrics body. With
// -short it does nothing, so the caller's own checks still count as a pass.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	if testing.Short() {
		return
	}
	bin := testutil.LookBinary(t, "promtool")
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func metricsEdit(next func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Metrics.ListenAddress = "127.0.0.1:0"
		if next != nil {
			next(c)
		}
	}
}

func TestMetricsEndpointCountsConnectionsAndPairing(t *testing.T) {
	key := servertest.NewKey(t)
	m := metrics.New("v-test", "abc123")
	h := servertest.Start(t, metricsEdit(func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}), server.Options{Metrics: m})
	base := "http://" + h.Server.MetricsAddr().String()

	if _, err := h.Dial(key).Hello(); err != nil {
		t.Fatal(err)
	}
	stranger := servertest.NewKey(t)
	if _, err := h.Dial(stranger).Hello(); err == nil {
		t.Fatal("unknown peer answered")
	}
	token := h.OpenPairing(time.Minute)
	pc := h.Dial(stranger)
	if r, err := pc.Pair(token + "x"); err != nil || r.Success {
		t.Fatalf("pairing with a wrong token: %+v, %v", r, err)
	}
	if r, err := pc.Pair(token); err != nil || !r.Success {
		t.Fatalf("pairing: %+v, %v", r, err)
	}

	want := map[string]float64{
		`reflector_connections_accepted_total`:                                                    2,
		`reflector_connections_denied_total{reason="not_authorized"}`:                             1,
		`reflector_pairing_events_total{kind="enabled"}`:                                          1,
		`reflector_pairing_events_total{kind="rejected"}`:                                         1,
		`reflector_pairing_events_total{kind="paired"}`:                                           1,
		`reflector_audit_write_failures_total`:                                                    0,
		`reflector_build_info{commit="abc123",goversion="` + goVersion(t) + `",version="v-test"}`: 1,
	}
	var body string
	testutil.Eventually(t, 5*time.Second, "counters on /metrics", func() bool {
		_, body = httpGet(t, base+"/metrics")
		for series, v := range want {
			if sample(body, series) != v {
				return false
			}
		}
		return true
	})
	promtoolCheck(t, body)

	code, hl := health(t, base)
	if code != http.StatusOK || hl.Status != metrics.StatusOK || hl.EndpointID != h.Server.EndpointID().String() ||
		!hl.AuditOK || !hl.IdentityOK || hl.Draining || len(hl.Problems) != 0 {
		t.Fatalf("/health = %d %+v", code, hl)
	}
	var st server.Status
	if err := h.Admin(admin.Request{Op: admin.OpStatus}, &st); err != nil || st.MetricsAddress != h.Server.MetricsAddr().String() {
		t.Fatalf("admin status metrics address %q (%v), want %s", st.MetricsAddress, err, h.Server.MetricsAddr())
	}
}

// goVersion is the goversion label of reflector_build_info.
func goVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env GOVERSION: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestHealthDegradedWhileAuditWritesFail(t *testing.T) {
	key := servertest.NewKey(t)
	m := metrics.New("v", "c")
	h := servertest.Start(t, metricsEdit(func(c *config.Config) {
		c.Logging.AuditLogPath = "/dev/full" // every write fails with ENOSPC
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}), server.Options{Metrics: m})
	base := "http://" + h.Server.MetricsAddr().String()
	if code, hl := health(t, base); code != http.StatusOK {
		t.Fatalf("before any write: /health = %d %+v", code, hl)
	}
	if _, err := h.Dial(key).Hello(); err != nil { // connection_accepted fails to write
		t.Fatal(err)
	}
	code, hl := health(t, base)
	if code != http.StatusServiceUnavailable || hl.Status != metrics.StatusDegraded || hl.AuditOK || !hl.IdentityOK ||
		len(hl.Problems) == 0 || !strings.Contains(hl.Problems[0], "audit log") {
		t.Fatalf("/health with a failing audit log = %d %+v", code, hl)
	}
	_, body := httpGet(t, base+"/metrics")
	if v := sample(body, "reflector_audit_write_failures_total"); v < 1 {
		t.Fatalf("audit_write_failures_total = %v, want >= 1", v)
	}
}

func TestHealthDegradedUntilAuditReopenSucceeds(t *testing.T) {
	h := servertest.Start(t, metricsEdit(func(c *config.Config) {
		c.Logging.AuditLogPath = filepath.Join(c.State.Dir, "audit", "audit.jsonl")
	}), server.Options{})
	base := "http://" + h.Server.MetricsAddr().String()
	dir := filepath.Dir(h.Config.Logging.AuditLogPath)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := h.Server.Reload(nil); err == nil {
		t.Fatal("reopening into a removed directory succeeded")
	}
	if code, hl := health(t, base); code != http.StatusServiceUnavailable || hl.AuditOK || hl.Status != metrics.StatusDegraded {
		t.Fatalf("/health after a failed reopen = %d %+v", code, hl)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.Server.Reload(nil); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if code, hl := health(t, base); code != http.StatusOK || !hl.AuditOK {
		t.Fatalf("/health after a good reopen = %d %+v", code, hl)
	}
}

// drainSessions is a Sessions with one test that runs until release is
// called (or Shutdown ends it).
type drainSessions struct {
	server.NoSessions
	running atomic.Bool
	// cutOff records that Shutdown found the test still running.
	cutOff atomic.Bool
}

func (d *drainSessions) Status() server.SessionStatus {
	if !d.running.Load() {
		return server.SessionStatus{}
	}
	return server.SessionStatus{Active: []server.ActiveSession{{TestID: "t1", TestType: link.TestThroughput}}}
}

func (d *drainSessions) Shutdown(context.Context) error {
	d.cutOff.Store(d.running.Swap(false))
	return nil
}

// startDraining starts a server with a running fake test and grace, then
// calls Shutdown in the background; the channel yields its result.
func startDraining(t *testing.T, grace int) (*servertest.Harness, *drainSessions, *client.Client, chan error) {
	t.Helper()
	key := servertest.NewKey(t)
	sess := &drainSessions{}
	sess.running.Store(true)
	h := servertest.Start(t, metricsEdit(func(c *config.Config) {
		c.Limits.ShutdownGraceSec = grace
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}), server.Options{
		Metrics:     metrics.New("v", "c"),
		NewSessions: func(server.Env) (server.Sessions, error) { return sess, nil },
	})
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	if code, _ := health(t, "http://"+h.Server.MetricsAddr().String()); code != http.StatusOK {
		t.Fatalf("/health before shutdown = %d", code)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(grace+10)*time.Second)
		defer cancel()
		done <- h.Server.Shutdown(ctx)
	}()
	return h, sess, c, done
}

func TestDrainLetsRunningTestFinish(t *testing.T) {
	h, sess, c, done := startDraining(t, 60)
	base := "http://" + h.Server.MetricsAddr().String()
	testutil.Eventually(t, 5*time.Second, "/health reports draining", func() bool {
		code, hl := health(t, base)
		return code == http.StatusServiceUnavailable && hl.Status == metrics.StatusDraining && hl.Draining
	})
	// New work is refused: a session request on the open connection is
	// denied busy with a retry hint past the grace period, and nothing
	// connects any more.
	_, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 5}})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Deny.Reason != link.DenyBusy || denied.Deny.RetryAfterSec == nil || *denied.Deny.RetryAfterSec < 60 {
		t.Fatalf("session request while draining: %v (%+v)", err, denied)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if nc, err := client.Dial(ctx, h.Addr, servertest.NewKey(t), ""); err == nil {
		_ = nc.Close()
		t.Fatal("a new connection was accepted while draining")
	}
	_, body := httpGet(t, base+"/metrics")
	if v := sample(body, `reflector_sessions_denied_total{reason="busy",test_type="throughput"}`); v != 1 {
		t.Fatalf("sessions_denied_total busy = %v, want 1", v)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned while a test was running in its grace period: %v", err)
	default:
	}
	sess.running.Store(false) // the test ends by itself
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if sess.cutOff.Load() {
		t.Fatal("the test was cut off although it ended within the grace period")
	}
	denials := servertest.FindAudit(h.AuditEvents(), audit.SessionDenied)
	if len(denials) != 1 || denials[0].Reason != string(link.DenyBusy) {
		t.Fatalf("session_denied events %+v", denials)
	}
}

func TestDrainCutsOffAfterGrace(t *testing.T) {
	h, sess, _, done := startDraining(t, 1)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !sess.cutOff.Load() {
		t.Fatal("the test outliving the grace period was not ended by Shutdown")
	}
	if _, err := http.Get("http://" + h.Server.MetricsAddr().String() + "/health"); err == nil {
		t.Fatal("/health still answers after Shutdown")
	}
}

func TestReloadKeepsAuthorizedConnections(t *testing.T) {
	keep, drop := servertest.NewKey(t), servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(keep).String(), servertest.ID(drop).String()}
	}, server.Options{})
	ck, cd := h.Dial(keep), h.Dial(drop)
	for _, c := range []*client.Client{ck, cd} {
		if _, err := c.Hello(); err != nil {
			t.Fatal(err)
		}
	}
	// logrotate moves the audit log away; the reload reopens the path.
	rotated := h.Config.Logging.AuditLogPath + ".1"
	if err := os.Rename(h.Config.Logging.AuditLogPath, rotated); err != nil {
		t.Fatal(err)
	}
	next := *h.Config
	next.Access.AuthorizedPeers = []string{servertest.ID(keep).String()}
	if err := h.Server.Reload(&next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the peer dropped from the config is disconnected", func() bool {
		_, err := cd.Status()
		return err != nil
	})
	if _, err := ck.Status(); err != nil {
		t.Fatalf("the still-authorized connection was dropped by the reload: %v", err)
	}
	if _, err := h.Dial(keep).Hello(); err != nil {
		t.Fatal(err)
	}
	old := servertest.ReadAudit(t, rotated)
	cur := h.AuditEvents()
	if len(servertest.FindAudit(old, audit.ConnectionAccepted)) != 2 || len(servertest.FindAudit(cur, audit.ConnectionAccepted)) != 1 {
		t.Fatalf("accepted events: %d in the rotated file (want 2), %d in the reopened one (want 1)",
			len(servertest.FindAudit(old, audit.ConnectionAccepted)), len(servertest.FindAudit(cur, audit.ConnectionAccepted)))
	}
	if !bytes.Contains(mustRead(t, h.Config.Logging.AuditLogPath), []byte(servertest.ID(keep).String())) {
		t.Fatal("the reopened audit log does not name the reconnected peer")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
