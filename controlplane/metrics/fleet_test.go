package metrics

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestObserveFleet(t *testing.T) {
	m := New("1.2.3", "abc")
	var auditOK atomic.Bool
	auditOK.Store(true)
	m.ObserveFleet("PP-TEST", func() map[HealthCheck]bool {
		// listener left out: a missing check must read 0.
		return map[HealthCheck]bool{CheckAudit: auditOK.Load(), CheckIdentity: true, CheckDraining: true}
	})
	want := `
# HELP reflector_health_ok 1 when the health check passes, 0 when it fails (check: audit, identity, listener, draining).
# TYPE reflector_health_ok gauge
reflector_health_ok{check="audit"} %s
reflector_health_ok{check="draining"} 1
reflector_health_ok{check="identity"} 1
reflector_health_ok{check="listener"} 0
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
