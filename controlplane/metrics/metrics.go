// Package metrics holds the reflector's Prometheus metrics and the optional
// HTTP listener serving /metrics and /health.
//
// Metrics live on their own registry (never the global one), every label
// value comes from a closed enumeration (see labels.go; anything else counts
// as "other"), and every method is safe on a nil *Metrics, so code paths
// need no check when metrics are off. deploy/METRICS.md documents each
// series and the invariants between them.
package metrics

import (
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "reflector"

// Metrics is the set of the reflector's metrics on one registry. All
// methods are safe for concurrent use and do nothing on a nil receiver.
type Metrics struct {
	reg *prometheus.Registry

	connAccepted      prometheus.Counter
	connDenied        *prometheus.CounterVec
	handshakeFailed   *prometheus.CounterVec
	sessionsGranted   *prometheus.CounterVec
	sessionsDenied    *prometheus.CounterVec
	sessionsCompleted *prometheus.CounterVec
	sessionsActive    *prometheus.GaugeVec
	active            atomic.Int64
	bytes             *prometheus.CounterVec
	quotaCutoffs      prometheus.Counter
	pairing           *prometheus.CounterVec
	auditFailures     prometheus.Counter
	echoPackets       prometheus.Counter
	echoDropped       prometheus.Counter
	attachDenied      *prometheus.CounterVec
	rateLimited       *prometheus.CounterVec
	legacyDenied      *prometheus.CounterVec
	dataRefused       *prometheus.CounterVec
	sessionDuration   *prometheus.HistogramVec
	quicHandshakes    *prometheus.CounterVec
}

// New returns the metrics on a fresh registry that also carries the build
// info gauge (version and commit labels) and the process and Go runtime
// collectors. Every labelled series starts at zero, so dashboards and the
// invariants in deploy/METRICS.md hold from the first scrape.
func New(version, commit string) *Metrics {
	reg := prometheus.NewRegistry()
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		reg:          reg,
		connAccepted: counter("connections_accepted_total", "Control connections (TCP+TLS or QUIC) accepted after the handshake and the peer check."),
		connDenied: counterVec("connections_denied_total",
			"Control connections refused, by reason.", "reason"),
		handshakeFailed: counterVec("tls_handshake_failures_total",
			"TLS/QUIC handshakes that failed, by kind.", "kind"),
		sessionsGranted: counterVec("sessions_granted_total",
			"Sessions granted (session_grant sent), by test type.", "test_type"),
		sessionsDenied: counterVec("sessions_denied_total",
			"Session requests denied (session_deny sent), by reason and test type.", "reason", "test_type"),
		sessionsCompleted: counterVec("sessions_completed_total",
			"Granted sessions that ended, by test type and how they ended.", "test_type", "end_reason"),
		bytes: counterVec("data_bytes_total",
			"Test payload bytes moved, by direction seen from the reflector (rx: from the client, tx: to the client) and test type.",
			"direction", "test_type"),
		quotaCutoffs: counter("quota_cutoffs_total", "Sessions cut off because the peer reached its daily byte quota."),
		pairing: counterVec("pairing_events_total",
			"Pairing events, by kind.", "kind"),
		auditFailures: counter("audit_write_failures_total", "Audit log lines that could not be written (grants fail closed while this happens)."),
		echoPackets:   counter("echo_packets_total", "UDP echo packets reflected."),
		echoDropped:   counter("echo_rate_dropped_packets_total", "UDP echo packets dropped by the per-session rate clamp."),
		attachDenied: counterVec("tunnel_attach_denied_total",
			"Tunnel attach requests refused, by reason.", "reason"),
		rateLimited: counterVec("rate_limited_total",
			"Requests refused by a rate limiter, by limiter.", "kind"),
		legacyDenied: counterVec("legacy_client_denials_total",
			"Session requests refused because the client did not announce a capability the grant needs (also in sessions_denied_total as invalid_params), by missing feature.", "missing"),
		dataRefused: counterVec("data_connections_refused_total",
			"Connections to a granted direct-mode data port refused with iperf3 ACCESS_DENIED, by reason.", "reason"),
	}
	m.sessionsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sessions_active",
		Help: "Sessions granted and not yet ended, by test type.",
	}, []string{"test_type"})
	reg.MustRegister(m.sessionsActive)
	m.sessionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "session_duration_seconds",
		Help:    "Time from grant to end of the sessions that ended, by test type.",
		Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 600},
	}, []string{"test_type"})
	reg.MustRegister(m.sessionDuration)
	m.quicHandshakes = counterVec("quic_handshakes_total",
		"QUIC handshakes on the tunnel's UDP port, by outcome: completed, failed, retry (source address validation asked for), or the limit that refused it.", "outcome")

	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels carry the build's version, commit and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(build,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	m.zero()
	return m
}

// zero creates every labelled series at 0.
func (m *Metrics) zero() {
	for _, r := range withOther(connDenyReasons) {
		m.connDenied.WithLabelValues(r)
	}
	for _, k := range withOther(handshakeFailures) {
		m.handshakeFailed.WithLabelValues(k)
	}
	for _, tt := range withOther(testTypes) {
		m.sessionsGranted.WithLabelValues(tt)
		m.sessionsActive.WithLabelValues(tt)
		m.sessionDuration.WithLabelValues(tt)
		for _, r := range withOther(sessionDenyReasons) {
			m.sessionsDenied.WithLabelValues(r, tt)
		}
		for _, e := range withOther(endReasons) {
			m.sessionsCompleted.WithLabelValues(tt, e)
		}
		for _, d := range directions {
			m.bytes.WithLabelValues(string(d), tt)
		}
	}
	for _, k := range withOther(pairingKinds) {
		m.pairing.WithLabelValues(k)
	}
	for _, r := range withOther(attachDenyReasons) {
		m.attachDenied.WithLabelValues(r)
	}
	for _, k := range withOther(rateLimitKinds) {
		m.rateLimited.WithLabelValues(k)
	}
	for _, f := range withOther(clientFeatures) {
		m.legacyDenied.WithLabelValues(f)
	}
	for _, r := range withOther(dataConnRefusals) {
		m.dataRefused.WithLabelValues(r)
	}
	for _, o := range withOther(quicOutcomes) {
		m.quicHandshakes.WithLabelValues(o)
	}
}

// Registry returns the registry holding these metrics, for tests and for
// registering further collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// ConnAccepted counts a control connection that passed the handshake and
// the peer check.
func (m *Metrics) ConnAccepted() {
	if m == nil {
		return
	}
	m.connAccepted.Inc()
}

// ConnDenied counts a refused control connection.
func (m *Metrics) ConnDenied(reason ConnDenyReason) {
	if m == nil {
		return
	}
	m.connDenied.WithLabelValues(norm(reason, connDenyReasons)).Inc()
}

// HandshakeFailed counts a failed TLS or QUIC handshake.
func (m *Metrics) HandshakeFailed(kind HandshakeFailure) {
	if m == nil {
		return
	}
	m.handshakeFailed.WithLabelValues(norm(kind, handshakeFailures)).Inc()
}

// SessionGranted counts a grant and raises the active gauge; every call
// must be matched by exactly one SessionEnded with the same test type.
func (m *Metrics) SessionGranted(tt TestType) {
	if m == nil {
		return
	}
	t := norm(tt, testTypes)
	m.sessionsGranted.WithLabelValues(t).Inc()
	m.sessionsActive.WithLabelValues(t).Inc()
	m.active.Add(1)
}

// SessionDenied counts a session_deny.
func (m *Metrics) SessionDenied(reason SessionDenyReason, tt TestType) {
	if m == nil {
		return
	}
	m.sessionsDenied.WithLabelValues(norm(reason, sessionDenyReasons), norm(tt, testTypes)).Inc()
}

// SessionEnded counts the end of a granted session and lowers the active
// gauge. Call it once per SessionGranted, whatever ended the session.
func (m *Metrics) SessionEnded(tt TestType, how EndReason) {
	if m == nil {
		return
	}
	t := norm(tt, testTypes)
	m.sessionsCompleted.WithLabelValues(t, norm(how, endReasons)).Inc()
	m.sessionsActive.WithLabelValues(t).Dec()
	m.active.Add(-1)
}

// ActiveSessions returns the number of sessions granted and not yet ended,
// over all test types.
func (m *Metrics) ActiveSessions() int {
	if m == nil {
		return 0
	}
	return int(m.active.Load())
}

// BytesMoved adds n payload bytes in direction d for a test of type tt.
// Negative n is ignored.
func (m *Metrics) BytesMoved(d Direction, tt TestType, n int64) {
	if m == nil || n <= 0 {
		return
	}
	dir := norm(d, directions)
	if dir == LabelOther {
		return // only rx and tx exist; a wrong direction must not invent a series
	}
	m.bytes.WithLabelValues(dir, norm(tt, testTypes)).Add(float64(n))
}

// QuotaCutoff counts a session cut off at the peer's daily byte quota.
func (m *Metrics) QuotaCutoff() {
	if m == nil {
		return
	}
	m.quotaCutoffs.Inc()
}

// PairingEvent counts a pairing event.
func (m *Metrics) PairingEvent(kind PairingKind) {
	if m == nil {
		return
	}
	m.pairing.WithLabelValues(norm(kind, pairingKinds)).Inc()
}

// AuditWriteFailed counts an audit line that could not be written.
func (m *Metrics) AuditWriteFailed() {
	if m == nil {
		return
	}
	m.auditFailures.Inc()
}

// EchoPackets adds n reflected UDP echo packets. Negative n is ignored.
func (m *Metrics) EchoPackets(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.echoPackets.Add(float64(n))
}

// EchoRateDropped adds n UDP echo packets dropped by the rate clamp.
// Negative n is ignored.
func (m *Metrics) EchoRateDropped(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.echoDropped.Add(float64(n))
}

// TunnelAttachDenied counts a refused tunnel attach.
func (m *Metrics) TunnelAttachDenied(reason AttachDenyReason) {
	if m == nil {
		return
	}
	m.attachDenied.WithLabelValues(norm(reason, attachDenyReasons)).Inc()
}

// RateLimited counts a request refused by a rate limiter.
func (m *Metrics) RateLimited(kind RateLimitKind) {
	if m == nil {
		return
	}
	m.rateLimited.WithLabelValues(norm(kind, rateLimitKinds)).Inc()
}

// LegacyClientDenied counts a session request refused because the client
// did not announce the feature missing.
func (m *Metrics) LegacyClientDenied(missing ClientFeature) {
	if m == nil {
		return
	}
	m.legacyDenied.WithLabelValues(norm(missing, clientFeatures)).Inc()
}

// DataConnsRefused counts n connections to a data port refused for reason.
func (m *Metrics) DataConnsRefused(reason DataConnRefusal, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.dataRefused.WithLabelValues(norm(reason, dataConnRefusals)).Add(float64(n))
}

// QUICHandshake counts a QUIC handshake attempt's outcome.
func (m *Metrics) QUICHandshake(o QUICOutcome) {
	if m == nil {
		return
	}
	m.quicHandshakes.WithLabelValues(norm(o, quicOutcomes)).Inc()
}
