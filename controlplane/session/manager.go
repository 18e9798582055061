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
	"maps"
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
	"github.com/packetparamedic/reflector/iperf3proto"
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
	// claimDeadline is how long a grant waits for its first connection (a
	// data port connection from the peer's address, or a tunnel attach)
	// before it ends itself (no_client), giving back the test slot and the
	// cooldown: the appliance starts iperf3 about 500 ms after the grant, a
	// slow appliance within a second or two. Clients that announce
	// link.FeatureLateStart keep their grant until its deadline.
	claimDeadline = 5 * time.Second
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
	pending int // slots reserved by grants being prepared
	budgets map[identity.EndpointID]*peerBudget
	results map[identity.EndpointID][]*link.TestResult
	changed chan struct{} // closed and replaced whenever a slot frees
	closed  bool
	wg      sync.WaitGroup // reservations and running sessions

	// legacyDenied counts requests refused for a missing client feature.
	legacyDenied atomic.Int64

	// onWait, when set (tests), is called when a request starts waiting
	// for a slot held by the same peer.
	onWait func()
	// claimAfter is the claim deadline (claimDeadline; tests shorten it).
	claimAfter time.Duration
	// echoGraceAfter is the grace of udp_echo sessions (echoGrace; tests
	// shorten it).
	echoGraceAfter time.Duration
}

// peerBudget is a peer's byte budget and how many sessions (running or
// being prepared) draw from it.
type peerBudget struct {
	b     *iperf3proto.ByteBudget
	users int
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
	// budget is the peer's byte budget the engine draws from.
	budget *iperf3proto.ByteBudget
	// attached is set by the first accepted tunnel attach (a claim).
	attached atomic.Bool

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
		active:         map[string]*session{},
		budgets:        map[identity.EndpointID]*peerBudget{},
		results:        map[identity.EndpointID][]*link.TestResult{},
		changed:        make(chan struct{}),
		claimAfter:     claimDeadline,
		echoGraceAfter: echoGrace,
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
// (wireReason); the message keeps the details, extra is added to the
// audit line's details.
func (m *Manager) deny(peer server.PeerInfo, req link.SessionRequest, reason link.DenyReason, msg string, retry *int, extra map[string]any) link.Message {
	ev := audit.Event{
		EventType: audit.SessionDenied, PeerID: peer.ID.String(), PeerAddr: peer.Addr.String(),
		TestType: req.TestType, Params: req.Params, Decision: "denied", Reason: string(reason),
		Details: map[string]any{"message": msg},
	}
	maps.Copy(ev.Details, extra)
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
//
// Locking: a slot (and the peer's byte budget) is reserved under m.mu; the
// quota check, the data port's bind, quota.Begin (a file write) and the
// session_granted audit line run without it; the session is published
// under m.mu again. Status, Close, Result, PeerGone and Shutdown therefore
// never wait for a disk or a socket, and nothing is granted that is not in
// the audit log.
func (m *Manager) Request(ctx context.Context, peer server.PeerInfo, req link.SessionRequest) link.Message {
	mode, msg := m.grantMode(peer)
	if msg != "" {
		return m.denyLegacy(peer, req, metrics.MissingTunnel, msg)
	}
	sp, err := validate(m.cfg, req, m.openUDP != nil || mode == link.ModeTunneled, peer.Announced(link.FeatureClamp))
	var le *limitError
	switch {
	case errors.As(err, &le):
		return m.denyLegacy(peer, req, metrics.MissingClamp, err.Error())
	case err != nil:
		return m.deny(peer, req, link.DenyInvalidParams, err.Error(), nil, nil)
	}
	budget, deny := m.reserve(ctx, peer, req)
	if deny != nil {
		return deny
	}
	return m.grant(ctx, peer, req, sp, mode, budget)
}

// grantMode decides how peer's tests run from [network] mode and what its
// hello announced; msg is the refusal for a client that cannot run the
// only mode on offer.
func (m *Manager) grantMode(peer server.PeerInfo) (mode, msg string) {
	tunnels := peer.Announced(link.FeatureTunnel)
	switch m.cfg.Network.Mode {
	case config.ModeDirectEphemeral:
		return link.ModeDirectEphemeral, ""
	case config.ModeAuto:
		if tunnels {
			return link.ModeTunneled, ""
		}
		return link.ModeDirectEphemeral, ""
	}
	if tunnels {
		return link.ModeTunneled, ""
	}
	return "", fmt.Sprintf("this reflector serves tunneled tests only (through port %d) and this client did not announce the %q feature; "+
		"use a client that tunnels (reflector tunnel), or the operator sets [network] mode = %q (or %q) and opens the data ports %d-%d (TCP and UDP)",
		m.controlPort(), link.FeatureTunnel, config.ModeAuto, config.ModeDirectEphemeral,
		m.cfg.Network.DataPortRangeStart, m.cfg.Network.DataPortRangeEnd)
}

// denyLegacy refuses a request that needs a capability the client did not
// announce (invalid_params, which the shipped appliance decodes), counted
// apart so the operator sees why appliances fail.
func (m *Manager) denyLegacy(peer server.PeerInfo, req link.SessionRequest, missing metrics.ClientFeature, msg string) link.Message {
	m.legacyDenied.Add(1)
	m.metrics.LegacyClientDenied(missing)
	return m.deny(peer, req, link.DenyInvalidParams, msg, nil, map[string]any{"missing_feature": string(missing)})
}

// inUseLocked is the number of test slots taken: running sessions and
// grants being prepared.
func (m *Manager) inUseLocked() int { return len(m.active) + m.pending }

// reserve waits for a test slot (a while, when the peer's own session is
// about to end) and reserves it with the peer's byte budget, or returns
// the busy refusal. A reservation is ended by publish or unreserve.
func (m *Manager) reserve(ctx context.Context, peer server.PeerInfo, req link.SessionRequest) (*iperf3proto.ByteBudget, link.Message) {
	waitUntil := time.Now().Add(samePeerWait)
	m.mu.Lock()
	for {
		if m.closed {
			m.mu.Unlock()
			return nil, m.deny(peer, req, link.DenyBusy, "the reflector is shutting down", nil, nil)
		}
		if m.inUseLocked() < m.cfg.Quotas.MaxConcurrentTests {
			break
		}
		left := time.Until(waitUntil)
		if !m.ownsActiveLocked(peer.ID) || left <= 0 {
			retry := retrySeconds(m.soonestEndLocked().Sub(m.now()))
			n := m.inUseLocked()
			m.mu.Unlock()
			return nil, m.deny(peer, req, link.DenyBusy, fmt.Sprintf("%d of %d concurrent tests running", n, m.cfg.Quotas.MaxConcurrentTests), retry, nil)
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
			return nil, m.deny(peer, req, link.DenyBusy, "the control connection closed", nil, nil)
		}
		t.Stop()
		m.mu.Lock()
	}
	defer m.mu.Unlock()
	m.pending++
	m.wg.Add(1)
	return m.budgetLocked(peer.ID), nil
}

// unreserve gives back a reservation that did not become a session.
func (m *Manager) unreserve(peer identity.EndpointID) {
	m.mu.Lock()
	m.pending--
	m.releaseBudgetLocked(peer)
	m.signalLocked()
	m.mu.Unlock()
	m.wg.Done()
}

// signalLocked wakes the requests waiting for a slot.
func (m *Manager) signalLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// budgetLocked returns peer's byte budget, shared by all its running and
// prepared sessions: what is left of its daily quota when the first of
// them was reserved, so concurrent tests of one peer cannot each spend it.
func (m *Manager) budgetLocked(peer identity.EndpointID) *iperf3proto.ByteBudget {
	pb := m.budgets[peer]
	if pb == nil {
		pb = &peerBudget{b: iperf3proto.NewByteBudget(m.quota.Remaining(peer.String(), m.now()))}
		m.budgets[peer] = pb
	}
	pb.users++
	return pb.b
}

// releaseBudgetLocked drops one user of peer's byte budget.
func (m *Manager) releaseBudgetLocked(peer identity.EndpointID) {
	if pb := m.budgets[peer]; pb != nil {
		if pb.users--; pb.users <= 0 {
			delete(m.budgets, peer)
		}
	}
}

// grant prepares the session of a reserved slot without holding m.mu:
// quota check, data port (or tunnel targets), quota start, audit; then
// publishes it. Any refusal gives the reservation back.
func (m *Manager) grant(ctx context.Context, peer server.PeerInfo, req link.SessionRequest, sp *spec, mode string, budget *iperf3proto.ByteBudget) link.Message {
	now := m.now()
	refuse := func(reason link.DenyReason, msg string, retry *int) link.Message {
		m.unreserve(peer.ID)
		return m.deny(peer, req, reason, msg, retry, nil)
	}
	if d := m.quota.Check(peer.ID.String(), now); !d.OK {
		if d.Reason == link.DenyRateLimited {
			m.metrics.RateLimited(m.rateLimitKind(peer.ID.String(), now))
		}
		return refuse(d.Reason, d.Message, retrySeconds(d.RetryAfter))
	}
	s := &session{peer: peer, sp: sp, granted: now, expires: now.Add(sp.duration() + sp.grace(m.echoGraceAfter)), done: make(chan struct{}), budget: budget}
	var err error
	if s.id, err = randomHex(16); err == nil {
		s.token, err = randomToken()
	}
	if err != nil {
		return refuse(link.DenyResourceExhausted, "no randomness for the session token", nil)
	}
	if err := m.open(s, mode); err != nil {
		return refuse(link.DenyResourceExhausted, "no data port free: "+err.Error(), nil)
	}
	abort := func() {
		s.eng.close()
		m.release(s)
		m.unreserve(peer.ID)
	}
	if err := m.quota.Begin(peer.ID.String(), now); err != nil {
		abort()
		m.log.Error().Err(err).Msg("session: record test start")
		return m.deny(peer, req, link.DenyResourceExhausted, "quota accounting cannot be saved", nil, nil)
	}
	ev := audit.Event{
		EventType: audit.SessionGranted, PeerID: peer.ID.String(), PeerAddr: peer.Addr.String(),
		TestType: sp.TestType, TestID: s.id, Params: sp, Decision: "granted",
		Details: map[string]any{"mode": mode, "port": s.port, "expires_at": s.expires.UTC().Format(time.RFC3339Nano)},
	}
	if err := m.audit.Write(ev); err != nil {
		// Fail closed: nothing is granted that is not on record. The
		// refusal is the reflector's fault: the start is taken back.
		abort()
		if werr := m.quota.Withdraw(peer.ID.String(), now, m.now()); werr != nil {
			m.log.Error().Err(werr).Msg("session: persist quota")
		}
		m.log.Error().Err(err).Msg("session: audit session_granted failed: refusing")
		m.metrics.SessionDenied(metrics.DenyResourceExhausted, metrics.TestType(sp.TestType))
		return &link.SessionDeny{Reason: wireReason(peer, link.DenyResourceExhausted), Message: "audit log unavailable"}
	}
	m.metrics.SessionGranted(metrics.TestType(sp.TestType))
	m.publish(s)
	if ctx.Err() != nil {
		// The control connection closed while the grant was prepared:
		// PeerGone did not see the session yet.
		s.cancel(endCause(EndPeerGone))
	}
	m.log.Info().Str("peer", peer.ID.String()).Str("test_id", s.id).Str("test_type", sp.TestType).Str("mode", mode).
		Int("port", s.port).Int("duration_sec", sp.DurationSec).Msg("session granted")
	return &link.SessionGrant{
		TestID: s.id, Mode: mode, Port: s.port, Token: s.token,
		ExpiresAt:   s.expires.UTC().Format(time.RFC3339Nano),
		DurationSec: sp.DurationSec, Streams: sp.Streams, Clamped: len(sp.Clamped) > 0,
	}
}

// open builds s's data plane: the tunnel targets, or a data port from the
// pool with its listeners (the bind runs without m.mu).
func (m *Manager) open(s *session, mode string) error {
	allowed := s.peer.Addr.Addr().Unmap()
	if mode == link.ModeTunneled {
		s.port = m.controlPort()
		m.openTunneled(s, allowed)
		return nil
	}
	var err error
	s.port, err = m.ports.Acquire(func(port int) error {
		var e engine
		var err error
		if s.sp.TestType == link.TestUDPEcho {
			e, err = openEcho(m.root, m.host, port, allowed, s.sp, s.expires)
		} else {
			e, err = openThroughput(m.root, m.openUDP, m.host, port, allowed, s.sp, s.expires, s.budget,
				m.log.With().Str("test_id", s.id).Logger())
		}
		if err != nil {
			return err
		}
		s.eng = e
		return nil
	})
	return err
}

// publish makes a prepared session live: it turns its reservation into a
// running session and starts it.
func (m *Manager) publish(s *session) {
	ctx, cancel := context.WithCancelCause(m.root)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, s.expires, endCause(EndDeadline))
	s.ctx, s.cancel = ctx, func(c error) { cancel(c); cancelDeadline() }
	m.mu.Lock()
	m.pending--
	m.active[s.id] = s
	m.mu.Unlock()
	go m.run(ctx, s) // the reservation's m.wg count is the session's now
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

// run serves s until it ends, metering it, then closes it down. The
// engine stops at the peer's byte budget by itself; the meter ticks keep
// the quota file current and catch what the engine does not budget (echo).
func (m *Manager) run(ctx context.Context, s *session) {
	defer m.wg.Done()
	outc := make(chan outcome, 1)
	go func() { outc <- s.eng.run(ctx) }()
	tick := time.NewTicker(meterInterval)
	var claimC <-chan time.Time
	if !s.peer.Announced(link.FeatureLateStart) {
		claim := time.NewTimer(m.claimAfter)
		defer claim.Stop()
		claimC = claim.C
	}
	spent := s.budget.Exhausted()
	var o outcome
	cut := false
	cutOff := func() {
		cut, spent = true, nil
		m.cutOff(s)
		s.cancel(endCause(EndQuotaExceeded))
	}
loop:
	for {
		select {
		case o = <-outc:
			break loop
		case <-tick.C:
			if m.account(s) && !cut {
				cutOff()
			}
		case <-spent:
			m.account(s)
			cutOff()
		case <-claimC:
			if !s.claimed() {
				s.cancel(endCause(EndNoClient))
			}
		}
	}
	tick.Stop()
	s.eng.close()
	m.release(s)
	// The final count. A test that did not end normally and used up the
	// budget was cut by it: its streams stopped at the budget and the
	// client, seeing them cut, left before the loop saw Exhausted. A test
	// that completed normally keeps its reason; the next request is refused
	// quota_exceeded either way.
	if m.account(s) && !cut && !o.completed {
		m.cutOff(s)
		o.reason = EndQuotaExceeded
	}
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

// refusedConns counts and audits the connections s's data port refused:
// from other addresses, and from the peer's address beyond the test's own
// (a second iperf3 control connection: only the first one per grant runs).
func (m *Manager) refusedConns(s *session, ts *throughputSummary) {
	m.metrics.DataConnsRefused(metrics.DataForeignSource, ts.ForeignRefused)
	m.metrics.DataConnsRefused(metrics.DataAlreadyClaimed, ts.ExtraRefused)
	if ts.ExtraRefused == 0 {
		return
	}
	err := m.audit.Write(audit.Event{
		EventType: audit.ConnectionDenied, PeerID: s.peer.ID.String(), PeerAddr: s.peer.Addr.String(),
		TestType: s.sp.TestType, TestID: s.id, Decision: "denied", Reason: "grant_already_claimed",
		Details: map[string]any{"port": s.port, "mode": s.mode(), "refused": ts.ExtraRefused},
	})
	if err != nil {
		m.log.Error().Err(err).Msg("session: audit refused data connections")
	}
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

// claimed reports whether anyone came for s's test: a connection from the
// peer's address to its data port, or a tunnel attach.
func (s *session) claimed() bool { return s.attached.Load() || s.eng.claimed() }

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
	// A grant nobody came for by its claim deadline (or, late_start, its
	// deadline) releases the cooldown as a completed test does: the client
	// could not use it (e.g. a firewalled data port). Its start stays in
	// the hour (it held the slot, and a peer must not hold it over and
	// over with grants it never uses). A grant closed unused by its client
	// keeps the cooldown, as any aborted test.
	unclaimed := o.reason == EndNoClient && !s.claimed()
	if err := m.quota.End(s.peer.ID.String(), completed || unclaimed, now); err != nil {
		m.log.Error().Err(err).Msg("session: persist quota at session end")
	}
	bytes := s.counted
	secs := elapsed.Seconds()
	summary, _ := json.Marshal(o.summary)
	ev := audit.Event{
		EventType: audit.SessionCompleted, PeerID: s.peer.ID.String(), PeerAddr: s.peer.Addr.String(),
		TestType: s.sp.TestType, TestID: s.id, Params: s.sp, Decision: "completed", Reason: o.reason,
		BytesTransferred: &bytes, DurationSec: &secs,
		Details: map[string]any{"port": s.port, "mode": s.mode(), "claimed": !unclaimed, "summary": json.RawMessage(summary)},
	}
	if err := m.audit.Write(ev); err != nil {
		m.log.Error().Err(err).Msg("session: audit session_completed")
	}
	if ts, ok := o.summary.(*throughputSummary); ok {
		m.refusedConns(s, ts)
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
	m.releaseBudgetLocked(s.peer.ID)
	kept := append(m.results[s.peer.ID], res)
	if len(kept) > keepResults {
		kept = kept[len(kept)-keepResults:]
	}
	m.results[s.peer.ID] = kept
	m.signalLocked()
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
	return server.SessionStatus{Active: act, Usage: use, LegacyClientDenials: m.legacyDenied.Load()}
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
