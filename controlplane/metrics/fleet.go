package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HealthCheck names one part of the health definition, as the check label
// of reflector_health_ok.
type HealthCheck string

// Health checks, one series each.
const (
	// CheckAudit: the audit log can be written.
	CheckAudit HealthCheck = "audit"
	// CheckIdentity: the identity key and certificate in use are valid.
	CheckIdentity HealthCheck = "identity"
	// CheckListener: the pp-link/1 listener is up.
	CheckListener HealthCheck = "listener"
	// CheckDraining: the server is not shutting down (1 while serving, 0
	// from the first SIGTERM on, lame duck included).
	CheckDraining HealthCheck = "draining"
)

// HealthChecks is the closed label set of reflector_health_ok, in the order
// the series are exposed.
var HealthChecks = []HealthCheck{CheckAudit, CheckIdentity, CheckListener, CheckDraining}

// ObserveFleet registers the two fleet inventory series on m's registry:
// reflector_identity_info{endpoint_id} = 1 (one series per process, so
// `count by (endpoint_id)` lists a fleet) and reflector_health_ok{check},
// computed by health at every scrape (it must be cheap and safe for
// concurrent use; a check it leaves out reads 0, failing closed). Call it
// once per Metrics; it does nothing on a nil receiver.
func (m *Metrics) ObserveFleet(endpointID string, health func() map[HealthCheck]bool) {
	if m == nil {
		return
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "identity_info",
		Help:        "Always 1; the endpoint_id label carries this reflector's Endpoint ID.",
		ConstLabels: prometheus.Labels{"endpoint_id": endpointID},
	})
	info.Set(1)
	m.reg.MustRegister(info, &healthCollector{fn: health})
}

var healthDesc = prometheus.NewDesc(namespace+"_health_ok",
	"1 when the health check passes, 0 when it fails (check: audit, identity, listener, draining).",
	[]string{"check"}, nil)

// healthCollector evaluates the health function once per scrape.
type healthCollector struct {
	fn func() map[HealthCheck]bool
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- healthDesc }

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	res := c.fn()
	for _, k := range HealthChecks {
		v := 0.0
		if res[k] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, v, string(k))
	}
}

// SessionDuration observes how long an ended session lasted, from grant to
// end (call it beside SessionEnded). Negative durations are ignored.
func (m *Metrics) SessionDuration(tt TestType, d time.Duration) {
	if m == nil || d < 0 {
		return
	}
	m.sessionDuration.WithLabelValues(norm(tt, testTypes)).Observe(d.Seconds())
}
