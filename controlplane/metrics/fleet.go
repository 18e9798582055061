package metrics

import (
	"time"

	"github.com/packetparamedic/reflector/controlplane/health"

	"github.com/prometheus/client_golang/prometheus"
)

// ObserveFleet registers the two fleet inventory series on m's registry:
// reflector_identity_info{endpoint_id} = 1 (one series per process, so
// `count by (endpoint_id)` lists a fleet) and reflector_health_ok{check},
// one series per name in health.Names, computed by checks at every scrape
// (it must be safe for concurrent use; a check it leaves out reads 0,
// failing closed). Call it once per Metrics; it does nothing on a nil
// receiver.
func (m *Metrics) ObserveFleet(endpointID string, checks func() []health.Check) {
	if m == nil {
		return
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "identity_info",
		Help:        "Always 1; the endpoint_id label carries this reflector's Endpoint ID.",
		ConstLabels: prometheus.Labels{"endpoint_id": endpointID},
	})
	info.Set(1)
	m.reg.MustRegister(info, &healthCollector{fn: checks})
}

var healthDesc = prometheus.NewDesc(namespace+"_health_ok",
	"1 when the health check passes, 0 when it fails (check: audit_log, identity, listener, not_draining; the definition of 'reflector status' and /health).",
	[]string{"check"}, nil)

// healthCollector evaluates the health checks once per scrape.
type healthCollector struct {
	fn func() []health.Check
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- healthDesc }

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	ok := make(map[string]bool, len(health.Names))
	for _, c := range c.fn() {
		ok[c.Name] = c.OK
	}
	for _, name := range health.Names {
		v := 0.0
		if ok[name] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, v, name)
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
