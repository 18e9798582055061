package session_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// scrape renders m in the exposition format and returns the value of each
// wanted series (-1 when absent).
func scrape(t *testing.T, m *metrics.Metrics, names ...string) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.NewHandler(m, func() metrics.Health { return metrics.Health{} }).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := map[string]float64{}
	for _, n := range names {
		out[n] = -1
	}
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if _, want := out[name]; want && ok {
			if v, err := strconv.ParseFloat(val, 64); err == nil {
				out[name] = v
			}
		}
	}
	return out
}

// TestSessionMetrics runs real sessions through the server and checks the
// session counters: a udp_echo test granted, ended, its echoed packets and
// bytes; a request with a bad test type and one over the hourly limit
// denied by reason and test type, the latter also as a rate limit.
func TestSessionMetrics(t *testing.T) {
	m := metrics.New("v", "c")
	h := servertest.Start(t, func(c *config.Config) {
		directEdit(t, c)
		c.Quotas.MaxTestsPerHourPerPeer = 1
	}, server.Options{NewSessions: session.NewSessions, Metrics: m})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}

	_, err := c.RequestSession(link.SessionRequest{TestType: "bogus", Params: link.TestParams{DurationSec: 1}})
	var denied *client.DeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("bogus test type: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := c.RunEcho(ctx, "127.0.0.1", client.EchoOptions{Duration: time.Second, Rate: 100, Size: 64}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}})
	if !errors.As(err, &denied) || denied.Deny.Reason != link.DenyRateLimited {
		t.Fatalf("second test in the hour: %v", err)
	}

	const (
		granted   = `reflector_sessions_granted_total{test_type="udp_echo"}`
		active    = `reflector_sessions_active{test_type="udp_echo"}`
		echoed    = `reflector_echo_packets_total`
		txBytes   = `reflector_data_bytes_total{direction="tx",test_type="udp_echo"}`
		badType   = `reflector_sessions_denied_total{reason="invalid_params",test_type="other"}`
		hourly    = `reflector_sessions_denied_total{reason="rate_limited",test_type="udp_echo"}`
		limitHour = `reflector_rate_limited_total{kind="tests_per_hour"}`
		failures  = `reflector_audit_write_failures_total`
	)
	done := `reflector_sessions_completed_total{end_reason="done",test_type="udp_echo"}`
	closed := `reflector_sessions_completed_total{end_reason="closed",test_type="udp_echo"}`
	var got map[string]float64
	testutil.Eventually(t, 10*time.Second, "the echo session ended", func() bool {
		got = scrape(t, m, granted, active, echoed, txBytes, badType, hourly, limitHour, failures, done, closed)
		return max(got[done], 0)+max(got[closed], 0) == 1
	})
	n := float64(rep.Server.BytesSent) // echoed bytes as the reflector counted them
	if got[granted] != 1 || got[active] != 0 || got[echoed] != float64(rep.Client.Received) ||
		got[txBytes] != n || n <= 0 || got[badType] != 1 || got[hourly] != 1 || got[limitHour] != 1 || got[failures] != 0 {
		t.Fatalf("metrics %v; client received %d, reflector sent %v bytes", got, rep.Client.Received, n)
	}
}
