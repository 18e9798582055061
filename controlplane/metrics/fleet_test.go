package metrics

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestObserveFleet(t *testing.T) {
	m := New("1.2.3", "abc")
	var auditOK atomic.Bool
	auditOK.Store(true)
	m.ObserveFleet("PP-TEST", func() []health.Check {
		// listener left out: a missing check must read 0.
		return []health.Check{{Name: health.Audit, OK: auditOK.Load()}, {Name: health.Identity, OK: true}, {Name: health.NotDraining, OK: true}}
	})
	want := `
# HELP reflector_health_ok 1 when the health check passes, 0 when it fails (check: audit_log, identity, listener, not_draining; the definition of 'reflector status' and /health).
# TYPE reflector_health_ok gauge
reflector_health_ok{check="audit_log"} %s
reflector_health_ok{check="identity"} 1
reflector_health_ok{check="listener"} 0
reflector_health_ok{check="not_draining"} 1
# HELP reflector_identity_info Always 1; the endpoint_id label carries this reflector's Endpoint ID.
# TYPE reflector_identity_info gauge
reflector_identity_info{endpoint_id="PP-TEST"} 1
`
	for _, audit := range []bool{true, false} {
		auditOK.Store(audit)
		v := "0"
		if audit {
			v = "1"
		}
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(strings.Replace(want, "%s", v, 1)),
			"reflector_health_ok", "reflector_identity_info"); err != nil {
			t.Errorf("audit ok %v: %v", audit, err)
		}
	}
	var nilM *Metrics
	nilM.ObserveFleet("PP-TEST", nil) // must not panic
}

func TestSessionDuration(t *testing.T) {
	m := New("1.2.3", "abc")
	m.SessionDuration(TestThroughput, 12*time.Second)
	m.SessionDuration(TestThroughput, -time.Second) // ignored
	m.SessionDuration("bogus", time.Second)         // counted as other
	if n := testutil.CollectAndCount(m.sessionDuration); n != 3 {
		t.Errorf("%d duration series, want 3 (throughput, udp_echo, other)", n)
	}
	body := scrape(t, m)
	for _, want := range []string{
		`reflector_session_duration_seconds_count{test_type="throughput"} 1`,
		`reflector_session_duration_seconds_sum{test_type="throughput"} 12`,
		`reflector_session_duration_seconds_bucket{test_type="throughput",le="10"} 0`,
		`reflector_session_duration_seconds_bucket{test_type="throughput",le="15"} 1`,
		`reflector_session_duration_seconds_count{test_type="other"} 1`,
		`reflector_session_duration_seconds_count{test_type="udp_echo"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var nilM *Metrics
	nilM.SessionDuration(TestUDPEcho, time.Second)
}
