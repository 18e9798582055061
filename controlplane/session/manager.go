// Package session decides and runs the reflector's tests: it validates a
// session_request against the configuration, applies the quotas
// (controlplane/quota), opens the test's data port (direct_ephemeral mode)
// only for the requesting peer's address and only while the session lives,
// meters every byte into the peer's daily budget, cuts a test off when it
// crosses that budget, and audits every decision.
//
// A session ends by itself when its test ends (iperf3 results exchanged,
// client gone, deadline; for udp_echo when its duration has passed), on
// session_close, or when the control connection that asked for it closes.
// Then its port is closed and released, its bytes are added to the quota,
// and session_completed is audited with bytes_transferred (every byte the
// reflector's data plane sent and received on the test's streams; for
// udp_echo the echoed bytes), duration_sec (grant to end) and a summary.
//
// Parameters: a duration above quotas.max_test_duration_sec, streams above
// iperf3.max_streams and an echo rate above quotas.echo_max_pps are lowered
// to the limit, and the grant says so (duration_sec, streams, clamped);
// absent streams mean iperf3.default_streams. The iperf3 server then refuses
// a client that asks for more than was granted.
//
// Tunneled mode (the default) runs every test through the control port:
// the grant says mode "tunneled" and names the control port, each TCP
// stream of the test is a fresh TLS connection that attaches to the
// session (tunnel_attach, Attach) and is handed to the test's in-process
// iperf3 server, and UDP streams and udp_echo ride the datagrams of one
// QUIC session on the same port number over UDP (AttachQUIC). Quotas,
// deadline and byte accounting are those of direct mode.
package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server"
)

// Tuning of the manager.
const (
	// meterInterval is how often a running test's bytes are metered into
	// the quota and checked against the daily budget.
	meterInterval = 200 * time.Millisecond
	// samePeerWait is how long a request waits for a slot held by a
	// session of the same peer that is about to end: the appliance asks
	// for its next test the moment its iperf3 client exits, which can be
	// a moment before the server has closed the previous session.
	samePeerWait = 2 * time.Second
	// closeWait bounds how long session_close waits for the port to close.
	closeWait = 5 * time.Second
	// keepResults is how many finished results are kept per peer.
	keepResults = 8
	// writeTimeout bounds answers written by Attach.
	writeTimeout = 5 * time.Second
)

// Ports lends data ports for direct_ephemeral sessions;
// dataplane/portpool implements it. Acquire calls try with free ports
// until one succeeds (try opens the listeners) and returns that port, or
// an error when none could be opened.
type Ports interface {
	Acquire(try func(port int) error) (int, error)
	Release(port int)
}

var _ server.Sessions = (*Manager)(nil)

// Options configure a Manager.
type Options struct {
	Config *config.Config
	// Audit receives every decision; a failed session_granted write
	// refuses the grant.
	Audit  audit.Writer
	Quota  *quota.Store
	Ports  Ports
	Logger zerolog.Logger
	// Metrics receives the session counters; nil counts nothing.
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// openUDP opens the UDP side of a throughput port; nil refuses
	// protocol udp throughput tests.
	openUDP openUDPFunc
}

// Manager runs the sessions of one reflector; it implements
// server.Sessions and is safe for concurrent use.
type Manager struct {
	cfg     *config.Config
	audit   audit.Writer
	quota   *quota.Store
	ports   Ports
	log     zerolog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	openUDP openUDPFunc
	host    string // the data plane binds here
	ctlPort atomic.Int64

	root       context.Context
	cancelRoot context.CancelCauseFunc

	mu      sync.Mutex
	active  map[string]*session
	results map[identity.EndpointID][]*link.TestResult
	changed chan struct{} // closed and replaced whenever a session ends
	closed  bool
	wg      sync.WaitGroup

	// onWait, when set (tests), is called when a request starts waiting
	// for a slot held by the same peer.
	onWait func()
}

// session is one granted test.
type session struct {
	id, token string
	peer      server.PeerInfo
	sp        *spec
	port      int
	granted   time.Time
	expires   time.Time
	eng       engine
	tun       *tunnelPlane    // tunneled mode; nil in direct mode
	ctx       context.Context // ends when the manager ends the session
	cancel    context.CancelCauseFunc
	done      chan struct{}

	// counted is the bytes already added to the quota; sentSeen and
	// recvSeen the engine's meter already reported to the metrics (run
	// goroutine only).
	counted, sentSeen, recvSeen int64
}

// New returns a Manager. Options.Config, Audit, Quota and Ports are
// required.
func New(o Options) (*Manager, error) {
	if o.Config == nil || o.Audit == nil || o.Quota == nil || o.Ports == nil {
		return nil, errors.New("session manager: config, audit, quota and ports are required")
	}
	host, _, err := net.SplitHostPort(o.Config.Network.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("session manager: listen address %q: %w", o.Config.Network.ListenAddress, err)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	root, cancel := context.WithCancelCause(context.Background())
	return &Manager{
		cfg: o.Config, audit: meteredAudit{o.Audit, o.Metrics}, metrics: o.Metrics, quota: o.Quota, ports: o.Ports,
		log: o.Logger, now: now, openUDP: o.openUDP, host: host,
		root: root, cancelRoot: cancel,
		active:  map[string]*session{},
		results: map[identity.EndpointID][]*link.TestResult{},
		changed: make(chan struct{}),
	}, nil
}

// retrySeconds rounds d up to whole seconds, at least one.
func retrySeconds(d time.Duration) *int {
	s := max(int(math.Ceil(d.Seconds())), 1)
	return &s
}

// wireReason is the deny reason as peer can decode it: the real one for a
// client that announced server.FeatureDenyReasonsV2, otherwise mapped
// through link.DenyReason.ForAppliance (the shipped appliance cannot decode
// resource_exhausted, see there).
func wireReason(peer server.PeerInfo, r link.DenyReason) link.DenyReason {
	if peer.Announced(server.FeatureDenyReasonsV2) && r.Known() {
		return r
	}
	return r.ForAppliance()
}

// deny audits and builds a session_deny with the reason peer can decode
// (wireReason); the message keeps the details.
func (m *Manager) deny(peer server.PeerInfo, req link.SessionRequest, reason link.DenyReason, msg string, retry *int) link.Message {
	ev := audit.Event{
		EventType: audit.SessionDenied, PeerID: peer.ID.String(), PeerAddr: peer.Addr.String(),
		TestType: req.TestType, Params: req.Params, Decision: "denied", Reason: string(reason),
		Details: map[string]any{"message": msg},
	}
	if retry != nil {
		ev.Details["retry_after_sec"] = *retry
	}
	if err := m.audit.Write(ev); err != nil {
		m.log.Error().Err(err).Msg("session: audit session_denied")
	}
	m.metrics.SessionDenied(metrics.SessionDenyReason(reason), metrics.TestType(req.TestType))
	m.log.Info().Str("peer", peer.ID.String()).Str("reason", string(reason)).Str("message", msg).Msg("session denied")
	return &link.SessionDeny{Reason: wireReason(peer, reason), Message: msg, RetryAfterSec: retry}
}

// ownsActiveLocked reports whether peer has a running session.
func (m *Manager) ownsActiveLocked(peer identity.EndpointID) bool {
	for _, s := range m.active {
		if s.peer.ID == peer {
			return true
		}
	}
	return false
}

// soonestEndLocked is the earliest deadline of the running sessions.
func (m *Manager) soonestEndLocked() time.Time {
	var t time.Time
	for _, s := range m.active {
		if t.IsZero() || s.expires.Before(t) {
			t = s.expires
		}
	}
	return t
}

// Request answers a session_request with a *link.SessionGrant or a
// *link.SessionDeny. The grant is sent only once the data port listens.
func (m *Manager) Request(ctx context.Context, peer server.PeerInfo, req link.SessionRequest) link.Message {
	sp, err := validate(m.cfg, req, m.openUDP != nil || m.tunneled())
	if err != nil {
		return m.deny(peer, req, link.DenyInvalidParams, err.Error(), nil)
	}
	waitUntil := time.Now().Add(samePeerWait)
	m.mu.Lock()
	for {
		if m.closed {
			m.mu.Unlock()
			return m.deny(peer, req, link.DenyBusy, "the reflector is shutting down", nil)
		}
		if len(m.active) < m.cfg.Quotas.MaxConcurrentTests {
			break
		}
		left := time.Until(waitUntil)
		if !m.ownsActiveLocked(peer.ID) || left <= 0 {
			retry := retrySeconds(m.soonestEndLocked().Sub(m.now()))
			n := len(m.active)
			m.mu.Unlock()
			return m.deny(peer, req, link.DenyBusy, fmt.Sprintf("%d of %d concurrent tests running", n, m.cfg.Quotas.MaxConcurrentTests), retry)
		}
		changed := m.changed
		m.mu.Unlock()
		if m.onWait != nil {
			m.onWait()
		}
		t := time.NewTimer(left)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return m.deny(peer, req, link.DenyBusy, "the control connection closed", nil)
		}
		t.Stop()
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	return m.grantLocked(peer, req, sp)
}

// grantLocked runs the quota check, opens the data port and grants; m.mu
// is held.
func (m *Manager) grantLocked(peer server.PeerInfo, req link.SessionRequest, sp *spec) link.Message {
	now := m.now()
	if d := m.quota.Check(peer.ID.String(), now); !d.OK {
		if d.Reason == link.DenyRateLimited {
			m.metrics.RateLimited(m.rateLimitKind(peer.ID.String(), now))
		}
		return m.deny(peer, req, d.Reason, d.Message, retrySeconds(d.RetryAfter))
	}
	s := &session{peer: peer, sp: sp, granted: now, expires: now.Add(sp.duration() + sp.grace()), done: make(chan struct{})}
	var err error
	if s.id, err = randomHex(16); err == nil {
		s.token, err = randomToken()
	}
	if err != nil {
		return m.deny(peer, req, link.DenyResourceExhausted, "no randomness for the session token", nil)
	}

	allowed := peer.Addr.Addr().Unmap()
	open := func(port int) error {
		var e engine
		var err error
		if sp.TestType == link.TestUDPEcho {
			e, err = openEcho(m.root, m.host, port, allowed, sp, s.expires)
		} else {
			e, err = openThroughput(m.root, m.openUDP, m.host, port, allowed, sp, s.expires,
				m.log.With().Str("test_id", s.id).Logger())
		}
		if err != nil {
			return err
		}
		s.eng = e
		return nil
	}
	mode := link.ModeDirectEphemeral
	if m.tunneled() {
		mode, s.port = link.ModeTunneled, m.controlPort()
		m.openTunneled(s, allowed)
	} else if s.port, err = m.ports.Acquire(open); err != nil {
		return m.deny(peer, req, link.DenyResourceExhausted, "no data port free: "+err.Error(), nil)
	}
	abort := func() {
		s.eng.close()
		m.release(s)
	}
	if err := m.quota.Begin(peer.ID.String(), now); err != nil {
		abort()
		m.log.Error().Err(err).Msg("session: record test start")
		return m.deny(peer, req, link.DenyResourceExhausted, "quota accounting cannot be saved", nil)
	}
	ev := audit.Event{
		EventType: audit.SessionGranted, PeerID: peer.ID.String(), PeerAddr: peer.Addr.String(),
		TestType: sp.TestType, TestID: s.id, Params: sp, Decision: "granted",
		Details: map[string]any{"mode": mode, "port": s.port, "expires_at": s.expires.UTC().Format(time.RFC3339Nano)},
	}
	if err := m.audit.Write(ev); err != nil {
		// Fail closed: nothing is granted that is not on record. The start
		// stays counted in the hour; the cooldown is released, the refusal
		// being the reflector's fault.
		abort()
		_ = m.quota.End(peer.ID.String(), true, now)
		m.log.Error().Err(err).Msg("session: audit session_granted failed: refusing")
		m.metrics.SessionDenied(metrics.DenyResourceExhausted, metrics.TestType(sp.TestType))
		return &link.SessionDeny{Reason: wireReason(peer, link.DenyResourceExhausted), Message: "audit log unavailable"}
	}

	m.metrics.SessionGranted(metrics.TestType(sp.TestType))
	ctx, cancel := context.WithCancelCause(m.root)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, s.expires, endCause(EndDeadline))
	s.ctx, s.cancel = ctx, func(c error) { cancel(c); cancelDeadline() }
	m.active[s.id] = s
	m.wg.Add(1)
	go m.run(ctx, s)

	m.log.Info().Str("peer", peer.ID.String()).Str("test_id", s.id).Str("test_type", sp.TestType).
		Int("port", s.port).Int("duration_sec", sp.DurationSec).Msg("session granted")
	return &link.SessionGrant{
		TestID: s.id, Mode: mode, Port: s.port, Token: s.token,
		ExpiresAt:   s.expires.UTC().Format(time.RFC3339Nano),
		DurationSec: sp.DurationSec, Streams: sp.Streams, Clamped: len(sp.Clamped) > 0,
	}
}

// release gives a direct session's data port back to the pool; a
// tunneled session's attach targets are closed with its engine.
func (m *Manager) release(s *session) {
	if s.tun != nil {
		if s.tun.conns != nil {
			_ = s.tun.conns.Close()
		}
		if s.tun.flows != nil {
			_ = s.tun.flows.Close()
		}
		return
	}
	m.ports.Release(s.port)
}

// mode is the session's link mode.
func (s *session) mode() string {
	if s.tun != nil {
		return link.ModeTunneled
	}
	return link.ModeDirectEphemeral
}

// randomHex returns n random bytes in hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// randomToken returns 256 random bits, base64url without padding.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// run serves s until it ends, metering it, then closes it down.
func (m *Manager) run(ctx context.Context, s *session) {
	defer m.wg.Done()
	outc := make(chan outcome, 1)
	go func() { outc <- s.eng.run(ctx) }()
	tick := time.NewTicker(meterInterval)
	var o outcome
	cut := false
loop:
	for {
		select {
		case o = <-outc:
			break loop
		case <-tick.C:
			if !cut && m.account(s) {
				cut = true
				m.cutOff(s)
				s.cancel(endCause(EndQuotaExceeded))
			}
		}
	}
	tick.Stop()
	s.eng.close()
	m.release(s)
	// The final count; a budget crossed only now is refused at the next
	// request (quota_exceeded) rather than reported as a cut-off.
	m.account(s)
	m.finish(s, o)
}

// account adds the bytes s moved since the last call to the peer's quota
// and reports whether the peer's daily budget is now used up.
func (m *Manager) account(s *session) bool {
	sent, recv := s.eng.meter()
	now := m.now()
	tt := metrics.TestType(s.sp.TestType)
	m.metrics.BytesMoved(metrics.TX, tt, sent-s.sentSeen)
	m.metrics.BytesMoved(metrics.RX, tt, recv-s.recvSeen)
	s.sentSeen, s.recvSeen = max(s.sentSeen, sent), max(s.recvSeen, recv)
	total := sent + recv
	if d := total - s.counted; d > 0 {
		if err := m.quota.AddBytes(s.peer.ID.String(), d, now); err != nil {
			m.log.Error().Err(err).Msg("session: persist quota")
		}
		s.counted = total
	}
	return m.quota.Remaining(s.peer.ID.String(), now) <= 0
}

// cutOff audits that s crossed its peer's daily byte budget.
func (m *Manager) cutOff(s *session) {
	m.metrics.QuotaCutoff()
	bytes := s.counted
	err := m.audit.Write(audit.Event{
		EventType: audit.QuotaExceeded, PeerID: s.peer.ID.String(), PeerAddr: s.peer.Addr.String(),
		TestType: s.sp.TestType, TestID: s.id, Decision: "cut_off", Reason: "max_bytes_per_day_per_peer",
		BytesTransferred: &bytes,
		Details:          map[string]any{"max_bytes_per_day_per_peer": m.cfg.Quotas.MaxBytesPerDayPerPeer},
	})
	if err != nil {
		m.log.Error().Err(err).Msg("session: audit quota_exceeded")
	}
	m.log.Warn().Str("peer", s.peer.ID.String()).Str("test_id", s.id).Int64("bytes", bytes).Msg("session cut off at the daily byte budget")
}

// rateLimitKind names the limiter behind a rate_limited quota decision:
// the hourly limit when the peer has used it up, else the cooldown.
func (m *Manager) rateLimitKind(peer string, now time.Time) metrics.RateLimitKind {
	if m.quota.Peer(peer, now).TestsLastHour >= m.cfg.Quotas.MaxTestsPerHourPerPeer {
		return metrics.LimitTestsPerHour
	}
	return metrics.LimitCooldown
}

// meteredAudit counts the audit lines that could not be written.
type meteredAudit struct {
	w audit.Writer
	m *metrics.Metrics
}

// Write implements audit.Writer.
func (a meteredAudit) Write(e audit.Event) error {
	err := a.w.Write(e)
	if err != nil {
		a.m.AuditWriteFailed()
	}
	return err
}

// finish records the end of s: quota, audit, result, slot.
func (m *Manager) finish(s *session, o outcome) {
	now := m.now()
	elapsed := now.Sub(s.granted)
	completed := o.completed
	if es, ok := o.summary.(*echoSummary); ok && o.reason == EndClosed && es.Echoed > 0 {
		// An echo client that probed and then closed its session ended it
		// normally (its prober stops after its last probe's reply, a
		// little before the granted duration has passed since the grant).
		completed = true
	}
	if err := m.quota.End(s.peer.ID.String(), completed, now); err != nil {
		m.log.Error().Err(err).Msg("session: persist quota at session end")
	}
	bytes := s.counted
	secs := elapsed.Seconds()
	summary, _ := json.Marshal(o.summary)
	ev := audit.Event{
		EventType: audit.SessionCompleted, PeerID: s.peer.ID.String(), PeerAddr: s.peer.Addr.String(),
		TestType: s.sp.TestType, TestID: s.id, Params: s.sp, Decision: "completed", Reason: o.reason,
		BytesTransferred: &bytes, DurationSec: &secs,
		Details: map[string]any{"port": s.port, "mode": s.mode(), "summary": json.RawMessage(summary)},
	}
	if err := m.audit.Write(ev); err != nil {
		m.log.Error().Err(err).Msg("session: audit session_completed")
	}
	m.metrics.SessionEnded(metrics.TestType(s.sp.TestType), metrics.EndReason(o.reason))
	m.metrics.SessionDuration(metrics.TestType(s.sp.TestType), elapsed)
	if es, ok := o.summary.(*echoSummary); ok {
		m.metrics.EchoPackets(int64(es.Echoed))
		m.metrics.EchoRateDropped(int64(es.DroppedRate))
		if es.DroppedRate > 0 {
			err := m.audit.Write(audit.Event{
				EventType: audit.RateLimited, PeerID: s.peer.ID.String(), PeerAddr: s.peer.Addr.String(),
				TestType: s.sp.TestType, TestID: s.id, Decision: "dropped", Reason: "echo_max_pps",
				Details: map[string]any{"dropped": es.DroppedRate, "rate_pps": es.RatePPS},
			})
			if err != nil {
				m.log.Error().Err(err).Msg("session: audit echo rate clamp")
			}
		}
	}
	sent, recv := s.eng.meter()
	res := &link.TestResult{
		TestID: s.id, TestType: s.sp.TestType, State: link.StateCompleted,
		BytesSent: sent, BytesReceived: recv, DurationSec: secs, EndReason: o.reason, Summary: summary,
	}
	if !completed {
		res.State = link.StateFailed
	}
	m.log.Info().Str("peer", s.peer.ID.String()).Str("test_id", s.id).Str("reason", o.reason).
		Int64("bytes", bytes).Float64("duration_sec", secs).AnErr("test_error", o.err).Msg("session completed")

	m.mu.Lock()
	delete(m.active, s.id)
	kept := append(m.results[s.peer.ID], res)
	if len(kept) > keepResults {
		kept = kept[len(kept)-keepResults:]
	}
	m.results[s.peer.ID] = kept
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	close(s.done)
}

// Close ends the peer's session testID (session_close) and answers once
// its port is closed. Closing a session that already ended is not an error.
func (m *Manager) Close(peer server.PeerInfo, testID string) link.Message {
	m.mu.Lock()
	s := m.active[testID]
	if s == nil || s.peer.ID != peer.ID {
		found := m.findResultLocked(peer.ID, testID) != nil
		m.mu.Unlock()
		if found {
			return &link.OK{}
		}
		return &link.Error{Code: link.CodeUnexpected, Message: "no such test: " + testID}
	}
	m.mu.Unlock()
	s.cancel(endCause(EndClosed))
	select {
	case <-s.done:
	case <-time.After(closeWait):
		return &link.Error{Code: link.CodeUnexpected, Message: "the test is still shutting down"}
	}
	return &link.OK{}
}

func (m *Manager) findResultLocked(peer identity.EndpointID, testID string) *link.TestResult {
	for _, r := range m.results[peer] {
		if r.TestID == testID {
			return r
		}
	}
	return nil
}

// Result answers a get_test_result: the live meter of a running test, or
// the kept result of a finished one, for tests the peer owns.
func (m *Manager) Result(peer server.PeerInfo, testID string) link.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.active[testID]; s != nil && s.peer.ID == peer.ID {
		sent, recv := s.eng.meter()
		return &link.TestResult{
			TestID: s.id, TestType: s.sp.TestType, State: link.StateRunning,
			BytesSent: sent, BytesReceived: recv, DurationSec: m.now().Sub(s.granted).Seconds(),
		}
	}
	if r := m.findResultLocked(peer.ID, testID); r != nil {
		c := *r
		return &c
	}
	return &link.Error{Code: link.CodeUnexpected, Message: "no such test: " + testID}
}

// PeerGone ends the sessions requested over the closed control connection.
func (m *Manager) PeerGone(peer server.PeerInfo) {
	m.mu.Lock()
	var gone []*session
	for _, s := range m.active {
		if s.peer.ID == peer.ID && s.peer.ConnID == peer.ConnID {
			gone = append(gone, s)
		}
	}
	m.mu.Unlock()
	for _, s := range gone {
		s.cancel(endCause(EndPeerGone))
	}
}

// Status lists the running sessions (oldest first) and today's usage per
// peer (by peer ID).
func (m *Manager) Status() server.SessionStatus {
	m.mu.Lock()
	act := make([]server.ActiveSession, 0, len(m.active))
	for _, s := range m.active {
		act = append(act, server.ActiveSession{
			TestID: s.id, TestType: s.sp.TestType, Mode: s.mode(),
			PeerID: s.peer.ID, PeerAddr: s.peer.Addr.String(),
			Port: s.port, StartedAt: s.granted, ExpiresAt: s.expires,
		})
	}
	m.mu.Unlock()
	sort.Slice(act, func(i, j int) bool { return act[i].StartedAt.Before(act[j].StartedAt) })
	var use []server.PeerUsage
	for id, u := range m.quota.Usages(m.now()) {
		if u.TestsToday > 0 || u.BytesToday > 0 {
			use = append(use, server.PeerUsage{PeerID: identity.EndpointID(id), TestsToday: u.TestsToday, BytesToday: uint64(u.BytesToday)})
		}
	}
	sort.Slice(use, func(i, j int) bool { return use[i].PeerID < use[j].PeerID })
	return server.SessionStatus{Active: act, Usage: use}
}

// Shutdown refuses new sessions, ends the running ones and waits for them
// until ctx is done.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancelRoot(endCause(EndShutdown))
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("session shutdown: %w", ctx.Err())
	}
	if err := m.quota.Flush(m.now()); err != nil {
		return fmt.Errorf("session shutdown: %w", err)
	}
	return nil
}
