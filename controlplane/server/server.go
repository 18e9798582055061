// Package server joins the control-plane packages into the running
// reflector: the pp-link/1 listener (mutual TLS, peer identity from the
// certificate key, allowlist and pairing decisions, audit), the message
// dispatch to a Sessions implementation, and the local admin socket behind
// `reflector pair`, `reflector peers` and `reflector status`.
package server

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/hostinfo"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/pairing"
	"github.com/packetparamedic/reflector/controlplane/peers"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/buildinfo"
	"github.com/packetparamedic/reflector/internal/ratelimit"
)

// DefaultPairingTTL is how long the window opened by pairing_enabled = true
// at start-up stays open.
const DefaultPairingTTL = time.Hour

// writeTimeout bounds every frame the server writes.
const writeTimeout = 10 * time.Second

// ErrNotStarted is returned by methods that need a listening server.
var ErrNotStarted = errors.New("server is not started")

// Options adjust a Server; the zero value is valid.
type Options struct {
	// Logger receives the server's log; the zero value discards it.
	Logger zerolog.Logger
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
	// NewSessions builds the session manager once the identity and the
	// audit log are open; nil means NoSessions (every request denied).
	NewSessions func(Env) (Sessions, error)
	// Source says where the configuration came from (banner and status).
	Source config.Source
	// DenialAuditInterval is how often refused connections are summarized
	// in the audit log (one rate_limited line per source); zero means
	// DefaultDenialAuditInterval.
	DenialAuditInterval time.Duration
	// ClientHelloTimeout is how long a new connection may stay silent
	// before its ClientHello starts; zero means the fixed 3 s (tests
	// shorten it).
	ClientHelloTimeout time.Duration
	// Metrics receives the server's and the session manager's counters;
	// nil counts nothing. The [metrics] listener serves it when
	// configured.
	Metrics *metrics.Metrics
}

// Stats counts connection outcomes since the server started.
type Stats struct {
	Accepted          uint64 `json:"accepted"`
	Denied            uint64 `json:"denied"`
	ConnLimitRejected uint64 `json:"conn_limit_rejected"`
	HandshakeLimited  uint64 `json:"handshake_limit_rejected"`
	AddrRateLimited   uint64 `json:"addr_rate_limited"`
	HandshakeFailed   uint64 `json:"handshake_failed"`
	Malformed         uint64 `json:"malformed"`
	FrameRateExceeded uint64 `json:"frame_rate_exceeded"`
	IdleClosed        uint64 `json:"idle_closed"`
	// SourceCapRejected counts identified peers refused by the per-peer,
	// per-address or pairing connection caps.
	SourceCapRejected uint64 `json:"source_cap_rejected"`
	// QUIC handshakes on the tunnel's UDP port: completed, admitted but
	// not completed, refused by a limit, and answered with a Retry.
	QUICCompleted uint64 `json:"quic_completed"`
	QUICFailed    uint64 `json:"quic_failed"`
	QUICRefused   uint64 `json:"quic_refused"`
	QUICRetries   uint64 `json:"quic_retries"`
}

type counters struct {
	accepted, denied, connLimit, hsLimit, addrLimited atomic.Uint64
	hsFailed, malformed, frameRate, idle, sourceCap   atomic.Uint64
}

// Server is one reflector control plane. Create it with New, then Start;
// Shutdown stops it.
type Server struct {
	cfg      *config.Config
	log      zerolog.Logger
	now      func() time.Time
	source   config.Source
	key      ed25519.PrivateKey
	cert     tls.Certificate
	id       identity.EndpointID
	tlsConf  *tls.Config
	audit    *audit.Log
	peers    *peers.Store
	pairing  *pairing.Manager
	sessions Sessions
	sampler  *hostinfo.Sampler
	limiter  *ratelimit.Keyed
	admit    *admission
	limits   config.LimitsConfig // cfg.Limits with unset values from config.Default
	denials  *denialAggregator
	stats    counters
	metrics  *metrics.Metrics
	// health is the one definition of healthy (package health): /health,
	// `reflector status` and the session gate all read it.
	health *health.Checker
	// draining is set at the start of Shutdown: /health fails, session
	// requests are refused with a retry hint, running tests may finish.
	draining atomic.Bool
	// lameDuck is set by LameDuck: unready, still serving (see fleet.go).
	lameDuck atomic.Bool

	denialInterval time.Duration
	helloTimeout   time.Duration

	handshakeTimeout time.Duration
	idleTimeout      time.Duration

	mu        sync.Mutex
	ln        net.Listener
	admin     *admin.Server
	quic      *tunnel.QUICListener // tunneled UDP tests; nil when not listening
	httpAddr  net.Addr
	stopHTTP  context.CancelFunc
	started   time.Time
	conns     map[uint64]*serverConn
	nextID    uint64
	shutdown  bool
	drainEnd  time.Time // when the drain's grace period ends
	active    int
	quicGuard *quicGuard // admission of QUIC handshakes; nil without QUIC

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a server from cfg: it loads (or creates) the identity key,
// opens the audit log, the peer allowlist and the pairing manager, and
// builds the session manager. Nothing listens until Start.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("new server: nil config")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	limits := limitsWithDefaults(cfg.Limits)
	s := &Server{
		cfg:              cfg,
		log:              opts.Logger,
		now:              now,
		source:           opts.Source,
		pairing:          pairing.NewManager(now),
		sampler:          hostinfo.NewSampler(),
		conns:            map[uint64]*serverConn{},
		limits:           limits,
		handshakeTimeout: time.Duration(limits.HandshakeTimeoutSec) * time.Second,
		idleTimeout:      time.Duration(limits.IdleTimeoutSec) * time.Second,
		limiter:          ratelimit.NewKeyed(limits.NewConnsPerSecPerAddr, limits.NewConnsBurstPerAddr, maxTrackedAddrs, nil),
		admit:            newAdmission(limits),
		denialInterval:   opts.DenialAuditInterval,
		helloTimeout:     cmp.Or(opts.ClientHelloTimeout, clientHelloTimeout),
		metrics:          opts.Metrics,
	}
	s.pairing.OnClose(s.pairingClosed)
	if s.denialInterval <= 0 {
		s.denialInterval = DefaultDenialAuditInterval
	}
	if err := os.MkdirAll(cfg.State.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", cfg.State.Dir, err)
	}
	key, origin, err := identity.LoadServerKey(cfg.Identity.PrivateKeyPath)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	s.key = key
	s.id = identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	s.logKeyOrigin(origin)
	if s.cert, err = identity.NewCertificate(key); err != nil {
		return nil, err
	}
	alpn := cfg.Network.ALPN
	if alpn == "" {
		alpn = link.ALPN
	}
	s.tlsConf = identity.ServerTLSConfig(s.cert, alpn)
	s.tlsConf.GetConfigForClient = clientHelloArrived

	static, err := parseIDs(cfg.Access.AuthorizedPeers)
	if err != nil {
		return nil, err
	}
	if s.peers, err = peers.Open(cfg.PeersFile(), static); err != nil {
		return nil, fmt.Errorf("open peer allowlist: %w", err)
	}
	if s.audit, err = audit.Open(cfg.Logging.AuditLogPath, s.id.String()); err != nil {
		return nil, err
	}
	s.denials = newDenialAggregator(s.audit, maxDenialSources)
	if origin == identity.KeyAdopted {
		s.writeAudit(s.log, audit.Event{
			EventType: audit.IdentityAdopted, Decision: "adopted",
			Details: map[string]any{"from": identity.LegacyKeyPath(cfg.Identity.PrivateKeyPath), "to": cfg.Identity.PrivateKeyPath},
		})
	}
	s.health = s.newHealth()
	sessions := Sessions(NoSessions{})
	if opts.NewSessions != nil {
		sessions, err = opts.NewSessions(Env{
			Config:       cfg,
			EndpointID:   s.id,
			Certificate:  s.cert,
			Audit:        s.audit,
			AuditHealthy: s.AuditHealthy,
			Logger:       s.log,
			Now:          now,
			Metrics:      opts.Metrics,
		})
		if err != nil {
			_ = s.audit.Close()
			return nil, fmt.Errorf("start session manager: %w", err)
		}
	}
	s.sessions = sessions
	s.peers.OnRemove(s.dropPeer)
	s.metrics.ObserveFleet(s.id.String(), s.HealthChecks)
	return s, nil
}

// limitsWithDefaults fills the limits a caller left unset (zero or
// negative; a config built by hand rather than parsed) from
// config.Default, the one place defaults live. A shutdown grace of 0 is a
// valid setting and kept.
func limitsWithDefaults(l config.LimitsConfig) config.LimitsConfig {
	d := config.Default().Limits
	for _, f := range []struct{ v, def *int }{
		{&l.MaxControlConnections, &d.MaxControlConnections}, {&l.MaxHandshakes, &d.MaxHandshakes},
		{&l.HandshakeTimeoutSec, &d.HandshakeTimeoutSec}, {&l.NewConnsPerSecPerAddr, &d.NewConnsPerSecPerAddr},
		{&l.NewConnsBurstPerAddr, &d.NewConnsBurstPerAddr}, {&l.IdleTimeoutSec, &d.IdleTimeoutSec},
		{&l.MaxFramesPerSec, &d.MaxFramesPerSec}, {&l.MaxConnsPerPeer, &d.MaxConnsPerPeer},
		{&l.MaxConnsPerAddr, &d.MaxConnsPerAddr}, {&l.MaxPairingConnections, &d.MaxPairingConnections},
		{&l.MaxHandshakesPerAddr, &d.MaxHandshakesPerAddr},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	l.ShutdownGraceSec = max(l.ShutdownGraceSec, 0)
	return l
}

func parseIDs(list []string) ([]identity.EndpointID, error) {
	out := make([]identity.EndpointID, 0, len(list))
	for i, s := range list {
		id, err := identity.ParseEndpointID(s)
		if err != nil {
			return nil, fmt.Errorf("access.authorized_peers[%d]: %w", i, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// EndpointID returns the server's own Endpoint ID.
func (s *Server) EndpointID() identity.EndpointID { return s.id }

// Config returns the configuration the server runs with.
func (s *Server) Config() *config.Config { return s.cfg }

// AuditHealthy returns nil while the audit log can be written; otherwise
// the failure. A Sessions implementation refuses grants while it is not
// nil (fail closed), and `reflector status` reports it.
func (s *Server) AuditHealthy() error { return s.audit.Health() }

// Peers returns the allowlist.
func (s *Server) Peers() *peers.Store { return s.peers }

// Stats returns the connection counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		Accepted: c.accepted.Load(), Denied: c.denied.Load(),
		ConnLimitRejected: c.connLimit.Load(), HandshakeLimited: c.hsLimit.Load(),
		AddrRateLimited: c.addrLimited.Load(), HandshakeFailed: c.hsFailed.Load(),
		Malformed: c.malformed.Load(), FrameRateExceeded: c.frameRate.Load(),
		IdleClosed: c.idle.Load(), SourceCapRejected: c.sourceCap.Load(),
	}
	s.mu.Lock()
	g := s.quicGuard
	s.mu.Unlock()
	if g != nil {
		st.QUICCompleted, st.QUICFailed = g.completed.Load(), g.failed.Load()
		st.QUICRefused, st.QUICRetries = g.refused.Load(), g.retries.Load()
	}
	return st
}

// Addr returns the bound control listener address, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Start binds the pp-link/1 listener and the admin socket, opens the
// start-up pairing window when the config asks for it, logs the banner and
// returns; connections are served in the background until Shutdown.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.ln != nil || s.shutdown {
		s.mu.Unlock()
		return errors.New("start server: already started")
	}
	s.mu.Unlock()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Network.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Network.ListenAddress, err)
	}
	adm, err := admin.Listen(s.cfg.AdminSocket(), admin.HandlerFunc(s.handleAdmin))
	if err != nil {
		_ = ln.Close()
		return err
	}
	// The /metrics and /health listener outlives the drain (it reports
	// it) and stops last in Shutdown.
	httpCtx, cancelHTTP := context.WithCancel(context.Background())
	stopHTTP := cancelHTTP
	var httpAddr net.Addr
	if addr := s.cfg.Metrics.ListenAddress; addr != "" {
		var stopped <-chan struct{}
		if httpAddr, stopped, err = metrics.Serve(httpCtx, addr, metrics.NewHandler(s.metrics, s.Health)); err != nil {
			cancelHTTP()
			_ = ln.Close()
			_ = adm.Close()
			return err
		}
		// Shutdown returns only once /metrics and /health stopped answering.
		stopHTTP = func() { cancelHTTP(); <-stopped }
	}
	s.mu.Lock()
	s.ln, s.admin, s.started = ln, adm, s.now()
	s.httpAddr, s.stopHTTP = httpAddr, stopHTTP
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.Unlock()

	s.banner(ln.Addr())
	quic := s.startQUIC(ln.Addr())
	s.mu.Lock()
	s.quic = quic
	s.mu.Unlock()
	if httpAddr != nil {
		s.log.Info().Str("listen", httpAddr.String()).Msg("serving /metrics and /health")
	}
	if s.cfg.Access.PairingEnabled {
		if _, err := s.openPairing(DefaultPairingTTL, pairingByConfig); err != nil {
			s.log.Error().Err(err).Msg("could not open the start-up pairing window")
		}
	}
	s.wg.Add(2)
	go s.acceptLoop(ln)
	go s.runDenialFlusher(s.denialInterval)
	return nil
}

func (s *Server) banner(addr net.Addr) {
	src := s.source.Origin
	if s.source.Path != "" {
		src = s.source.Path + " (" + s.source.Origin + ")"
	}
	if src == "" {
		src = "caller"
	}
	s.log.Info().
		Str("endpoint_id", s.id.String()).
		Str("listen", addr.String()).
		Str("mode", s.cfg.Network.Mode).
		Str("state_dir", s.cfg.State.Dir).
		Str("config", src).
		Int("authorized_peers", len(s.peers.List())).
		Msg("reflector serving pp-link/1, Endpoint ID " + s.id.String())
}

// MetricsAddr returns the bound address of the /metrics and /health
// listener, or nil when [metrics] listen_address is empty or before Start.
func (s *Server) MetricsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// Draining reports whether Shutdown or the lame-duck delay has started.
func (s *Server) Draining() bool { return s.draining.Load() || s.lameDuck.Load() }

// Health is the body of GET /health: the health definition's checks
// (package health), with audit, identity and drain state broken out, the
// uptime and load averages.
func (s *Server) Health() metrics.Health {
	checks := s.HealthChecks()
	h := metrics.Health{
		Version:    buildinfo.Version,
		EndpointID: s.id.String(),
		UptimeSec:  int64(s.Uptime() / time.Second),
		AuditOK:    true,
		IdentityOK: true,
		Draining:   s.Draining(),
		Checks:     checks,
	}
	for _, ch := range checks {
		if ch.OK {
			continue
		}
		switch ch.Name {
		case health.Audit:
			h.AuditOK = false
		case health.Identity:
			h.IdentityOK = false
		}
		h.Problems = append(h.Problems, ch.Name+": "+ch.Problem)
	}
	if err := s.identityHealth(); err != nil {
		h.IdentityOK = false
		h.Problems = append(h.Problems, "identity: "+err.Error())
	}
	// Snapshot returns what it could read; a missing load average is 0.
	snap, _ := s.sampler.Snapshot()
	h.Load = snap.LoadAvg
	return h
}

// identityHealth checks that the server's certificate is valid now.
func (s *Server) identityHealth() error {
	leaf := s.cert.Leaf
	now := s.now()
	switch {
	case leaf == nil || s.key == nil:
		return errors.New("no certificate loaded")
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certificate not valid before %s (check the clock)", leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Uptime is the time since Start.
func (s *Server) Uptime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started.IsZero() {
		return 0
	}
	return s.now().Sub(s.started)
}

// Reload applies a re-read configuration (SIGHUP): the audit log is
// reopened (after logrotate) and the config file's authorized peers
// replace the previous ones; peers that lose access are disconnected.
// Other settings need a restart.
func (s *Server) Reload(cfg *config.Config) error {
	var errs []error
	if err := s.audit.Reopen(); err != nil {
		errs = append(errs, err)
	}
	if cfg != nil {
		ids, err := parseIDs(cfg.Access.AuthorizedPeers)
		if err == nil {
			err = s.peers.SetStatic(ids)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reload authorized peers: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown drains and stops the server. It marks the server draining
// (/health answers 503 from now on), closes the pp-link/1 listener (no new
// connections) and refuses new session requests with busy and a retry
// hint; running tests get up to [limits] shutdown_grace_sec to finish.
// Then it closes the admin socket, ends the remaining sessions (which
// persists the quota accounting), closes every connection, waits for the
// connection goroutines until ctx is done, stops the /metrics listener
// and closes the audit log last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.shutdown = true
	s.draining.Store(true)
	grace := time.Duration(s.limits.ShutdownGraceSec) * time.Second
	s.drainEnd = s.now().Add(grace)
	ln, adm, cancel, stopHTTP, quic := s.ln, s.admin, s.cancel, s.stopHTTP, s.quic
	s.mu.Unlock()

	var errs []error
	if ln != nil {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close listener: %w", err))
		}
	}
	if n := s.drain(ctx, grace); n > 0 {
		s.log.Warn().Int("sessions", n).Dur("grace", grace).Msg("grace period over: ending the running tests")
	}
	if adm != nil {
		if err := adm.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close admin socket: %w", err))
		}
	}
	if err := s.sessions.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("end sessions: %w", err))
	}
	if quic != nil {
		if err := quic.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if cancel != nil {
		cancel()
	}
	for _, c := range s.connsOf(func(*serverConn) bool { return true }) {
		c.close()
	}

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("wait for connections: %w", ctx.Err()))
	}
	if stopHTTP != nil {
		stopHTTP()
	}
	// An open pairing window closes with the server (audited while the
	// log is open; its expiry timer stops).
	s.pairing.Close()
	if err := s.audit.Close(); err != nil {
		errs = append(errs, err)
	}
	s.log.Info().Msg("reflector stopped")
	return errors.Join(errs...)
}

// drainPoll is how often a drain checks whether the running tests have
// ended; it runs only during a shutdown.
const drainPoll = 50 * time.Millisecond

// drain waits until no session runs, grace has passed or ctx is done, and
// returns the number of sessions still running.
func (s *Server) drain(ctx context.Context, grace time.Duration) int {
	n := len(s.sessions.Status().Active)
	if n == 0 || grace <= 0 {
		return n
	}
	s.log.Info().Int("sessions", n).Dur("grace", grace).Msg("draining: waiting for running tests")
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			return len(s.sessions.Status().Active)
		case <-ctx.Done():
			return len(s.sessions.Status().Active)
		case <-tick.C:
			if n = len(s.sessions.Status().Active); n == 0 {
				return 0
			}
		}
	}
}

// dropPeer closes every open connection of a peer that lost access.
func (s *Server) dropPeer(id identity.EndpointID) {
	conns := s.connsOf(func(c *serverConn) bool { return c.peer.ID == id })
	for _, c := range conns {
		c.close()
	}
	if len(conns) > 0 {
		s.log.Info().Str("peer_id", id.String()).Int("connections", len(conns)).Msg("peer lost access: closed its connections")
	}
}

// connsOf returns the registered connections that match.
func (s *Server) connsOf(match func(*serverConn) bool) []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*serverConn
	for _, c := range s.conns {
		if match(c) {
			out = append(out, c)
		}
	}
	return out
}

// pairingByConfig opens the start-up window of pairing_enabled = true.
const pairingByConfig = "config"

// openPairing opens a pairing window and audits it.
func (s *Server) openPairing(ttl time.Duration, by string) (admin.PairResult, error) {
	token, expires, err := s.pairing.Open(ttl)
	if err != nil {
		return admin.PairResult{}, err
	}
	if err := s.audit.Write(audit.Event{
		EventType: audit.PairingEnabled,
		Decision:  "open",
		Reason:    by,
		Details:   map[string]any{"expires_at": expires.UTC().Format(time.RFC3339)},
	}); err != nil {
		s.metrics.AuditWriteFailed()
		s.log.Error().Err(err).Msg("audit pairing_enabled")
	}
	s.metrics.PairingEvent(metrics.PairingEnabled)
	ev := s.log.Info().Str("endpoint_id", s.id.String()).Time("expires_at", expires).Str("opened_by", by)
	if by == pairingByConfig {
		// The start-up window of pairing_enabled = true has no admin
		// client to hand its token to: the log shows it, once. Every
		// other token goes only to the admin client that asked.
		ev = ev.Str("token", token)
	}
	ev.Msg("pairing window open")
	return admin.PairResult{EndpointID: s.id.String(), Token: token, ExpiresAt: expires.UTC()}, nil
}
