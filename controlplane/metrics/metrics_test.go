package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	itest "github.com/packetparamedic/reflector/internal/testutil"
)

func okHealth() Health {
	return Health{Version: "1.2.3", EndpointID: "PP-TEST", UptimeSec: 42, Load: [3]float64{0.1, 0.2, 0.3}, AuditOK: true, IdentityOK: true}
}

// scrape returns the /metrics body served by NewHandler.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	NewHandler(m, okHealth).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want the text exposition format", ct)
	}
	return rec.Body.String()
}

func exercise(m *Metrics) {
	m.ConnAccepted()
	m.ConnDenied(ConnNotAuthorized)
	m.HandshakeFailed(HandshakeTimeout)
	m.SessionGranted(TestThroughput)
	m.SessionGranted(TestUDPEcho)
	m.SessionDenied(DenyBusy, TestThroughput)
	m.SessionEnded(TestThroughput, EndDone)
	m.BytesMoved(RX, TestThroughput, 1000)
	m.BytesMoved(TX, TestThroughput, 500)
	m.QuotaCutoff()
	m.PairingEvent(PairingPaired)
	m.AuditWriteFailed()
	m.EchoPackets(10)
	m.EchoRateDropped(3)
	m.TunnelAttachDenied(AttachBadToken)
	m.RateLimited(LimitFrames)
	m.QUICHandshake(QUICRetry)
}

func TestCountersMove(t *testing.T) {
	m := New("1.2.3", "abc")
	exercise(m)
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"connections_accepted", testutil.ToFloat64(m.connAccepted), 1},
		{"connections_denied not_authorized", testutil.ToFloat64(m.connDenied.WithLabelValues("not_authorized")), 1},
		{"handshake timeout", testutil.ToFloat64(m.handshakeFailed.WithLabelValues("timeout")), 1},
		{"granted throughput", testutil.ToFloat64(m.sessionsGranted.WithLabelValues("throughput")), 1},
		{"denied busy throughput", testutil.ToFloat64(m.sessionsDenied.WithLabelValues("busy", "throughput")), 1},
		{"completed throughput done", testutil.ToFloat64(m.sessionsCompleted.WithLabelValues("throughput", "done")), 1},
		{"active throughput", testutil.ToFloat64(m.sessionsActive.WithLabelValues("throughput")), 0},
		{"active udp_echo", testutil.ToFloat64(m.sessionsActive.WithLabelValues("udp_echo")), 1},
		{"bytes rx", testutil.ToFloat64(m.bytes.WithLabelValues("rx", "throughput")), 1000},
		{"bytes tx", testutil.ToFloat64(m.bytes.WithLabelValues("tx", "throughput")), 500},
		{"quota", testutil.ToFloat64(m.quotaCutoffs), 1},
		{"pairing paired", testutil.ToFloat64(m.pairing.WithLabelValues("paired")), 1},
		{"audit failures", testutil.ToFloat64(m.auditFailures), 1},
		{"echo packets", testutil.ToFloat64(m.echoPackets), 10},
		{"echo dropped", testutil.ToFloat64(m.echoDropped), 3},
		{"attach bad_token", testutil.ToFloat64(m.attachDenied.WithLabelValues("bad_token")), 1},
		{"rate limited frames", testutil.ToFloat64(m.rateLimited.WithLabelValues("frames")), 1},
		{"quic retry", testutil.ToFloat64(m.quicHandshakes.WithLabelValues("retry")), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := m.ActiveSessions(); n != 1 {
		t.Errorf("ActiveSessions = %d, want 1", n)
	}
	body := scrape(t, m)
	for _, want := range []string{
		`reflector_connections_accepted_total 1`,
		`reflector_sessions_granted_total{test_type="throughput"} 1`,
		`reflector_data_bytes_total{direction="rx",test_type="throughput"} 1000`,
		`reflector_build_info{commit="abc",goversion="`,
		`process_start_time_seconds`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestInvariantGrantedEqualsCompletedPlusActive checks the invariant
// documented in deploy/METRICS.md over a mixed sequence.
func TestInvariantGrantedEqualsCompletedPlusActive(t *testing.T) {
	m := New("v", "c")
	for i := range 7 {
		m.SessionGranted(TestThroughput)
		if i%2 == 0 {
			m.SessionEnded(TestThroughput, []EndReason{EndDone, EndDeadline, "bogus"}[i%3])
		}
	}
	granted := testutil.ToFloat64(m.sessionsGranted.WithLabelValues("throughput"))
	completed := 0.0
	for _, e := range withOther(endReasons) {
		completed += testutil.ToFloat64(m.sessionsCompleted.WithLabelValues("throughput", e))
	}
	active := testutil.ToFloat64(m.sessionsActive.WithLabelValues("throughput"))
	if granted != completed+active || granted != 7 || active != 3 {
		t.Fatalf("granted %v != completed %v + active %v", granted, completed, active)
	}
}

// TestLabelCardinalityBounded feeds hostile label values and checks that
// they land in "other" and that the number of series does not grow.
func TestLabelCardinalityBounded(t *testing.T) {
	m := New("v", "c")
	before, err := testutil.GatherAndCount(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		junk := "PP-7DN2-FF6E-" + strings.Repeat("x", i) + "192.0.2.1:4000"
		m.ConnDenied(ConnDenyReason(junk))
		m.HandshakeFailed(HandshakeFailure(junk))
		m.SessionGranted(TestType(junk))
		m.SessionDenied(SessionDenyReason(junk), TestType(junk))
		m.SessionEnded(TestType(junk), EndReason(junk))
		m.BytesMoved(Direction(junk), TestType(junk), 1)
		m.BytesMoved(RX, TestType(junk), 1)
		m.PairingEvent(PairingKind(junk))
		m.TunnelAttachDenied(AttachDenyReason(junk))
		m.RateLimited(RateLimitKind(junk))
	}
	after, err := testutil.GatherAndCount(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	// The Go and process collectors may vary by a series or two between
	// gathers; ours must not grow at all: count only reflector_ series.
	ours := func() int {
		n, err := testutil.GatherAndCount(m.reg,
			"reflector_connections_denied_total", "reflector_tls_handshake_failures_total",
			"reflector_sessions_granted_total", "reflector_sessions_denied_total",
			"reflector_sessions_completed_total", "reflector_sessions_active",
			"reflector_data_bytes_total", "reflector_pairing_events_total",
			"reflector_tunnel_attach_denied_total", "reflector_rate_limited_total")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	fresh := New("v", "c")
	want, err := testutil.GatherAndCount(fresh.reg,
		"reflector_connections_denied_total", "reflector_tls_handshake_failures_total",
		"reflector_sessions_granted_total", "reflector_sessions_denied_total",
		"reflector_sessions_completed_total", "reflector_sessions_active",
		"reflector_data_bytes_total", "reflector_pairing_events_total",
		"reflector_tunnel_attach_denied_total", "reflector_rate_limited_total")
	if err != nil {
		t.Fatal(err)
	}
	if got := ours(); got != want {
		t.Fatalf("hostile labels changed the series count of our metrics: %d, want %d (all series: %d -> %d)", got, want, before, after)
	}
	if v := testutil.ToFloat64(m.connDenied.WithLabelValues(LabelOther)); v != 50 {
		t.Errorf("connections_denied{reason=other} = %v, want 50", v)
	}
	if v := testutil.ToFloat64(m.bytes.WithLabelValues("rx", LabelOther)); v != 50 {
		t.Errorf("data_bytes{rx,other} = %v, want 50 (wrong directions are dropped, not counted)", v)
	}
	body := scrape(t, m)
	if strings.Contains(body, "PP-7DN2") || strings.Contains(body, "192.0.2.1") {
		t.Fatal("a peer ID or address leaked into /metrics")
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	exercise(m)
	m.SessionEnded(TestUDPEcho, EndDone)
	if m.ActiveSessions() != 0 || m.Registry() != nil {
		t.Fatal("nil Metrics reported state")
	}
	rec := httptest.NewRecorder()
	NewHandler(nil, okHealth).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("GET /metrics without metrics = %d, want 404", rec.Code)
	}
}

func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := itest.LookBinary(t, "promtool")
	m := New("1.2.3", "abc")
	exercise(m)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, m))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics reported lint problems:\n%s", out)
	}
}

func TestHealth(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(*Health)
		code   int
		status string
	}{
		{"ok", func(*Health) {}, 200, StatusOK},
		{"audit broken", func(h *Health) { h.AuditOK = false; h.Problems = []string{"audit: disk full"} }, 503, StatusDegraded},
		{"identity broken", func(h *Health) { h.IdentityOK = false }, 503, StatusDegraded},
		{"draining", func(h *Health) { h.Draining = true }, 503, StatusDraining},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := NewHandler(New("v", "c"), func() Health { x := okHealth(); c.mod(&x); return x })
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
			if rec.Code != c.code {
				t.Fatalf("code = %d, want %d", rec.Code, c.code)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if got["status"] != c.status {
				t.Fatalf("status = %v, want %s", got["status"], c.status)
			}
			for _, k := range []string{"version", "endpoint_id", "uptime_sec", "load", "audit_ok", "identity_ok", "problems"} {
				if _, ok := got[k]; !ok {
					t.Errorf("health JSON lacks %q: %s", k, rec.Body)
				}
			}
			if load, _ := got["load"].([]any); len(load) != 3 {
				t.Errorf("load = %v, want 3 values", got["load"])
			}
		})
	}
}

func TestHandlerMethodsAndPaths(t *testing.T) {
	h := NewHandler(New("v", "c"), okHealth)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPost, "/health", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodHead, "/health", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, rec.Code, c.code)
		}
	}
}

// TestServeLoopback runs the real listener on 127.0.0.1:0 and checks that
// it stops when the context ends.
func TestServeLoopback(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New("v", "c")
	m.ConnAccepted()
	addr, _, err := Serve(ctx, "127.0.0.1:0", NewHandler(m, okHealth))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/metrics")
	if err != nil || code != 200 || !strings.Contains(body, "reflector_connections_accepted_total 1") {
		t.Fatalf("GET /metrics: %v %d %.200s", err, code, body)
	}
	code, body, err = get("/health")
	if err != nil || code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("GET /health: %v %d %s", err, code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	itest.Eventually(t, 5*time.Second, "listener closed after ctx end", func() bool {
		_, _, err := get("/health")
		return err != nil
	})
	if _, _, err := Serve(context.Background(), "127.0.0.1:-1", http.NotFoundHandler()); err == nil {
		t.Fatal("Serve on an invalid address succeeded")
	}
}
