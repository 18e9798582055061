package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/pairing"
	"github.com/packetparamedic/reflector/controlplane/peers"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/buildinfo"
	"github.com/packetparamedic/reflector/internal/ratelimit"
)

// Audit reasons of connection_denied.
const (
	ReasonImpersonation  = "impersonation"
	ReasonNotAuthorized  = "not_authorized"
	ReasonBadCertificate = "bad_certificate"
)

// serverConn is one control connection after its handshake.
type serverConn struct {
	peer     PeerInfo
	raw      net.Conn // the TCP connection under TLS
	lc       *link.Conn
	log      zerolog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	pairing  atomic.Bool // allowed only to pair (not yet authorized)
	attached bool        // handed to Sessions.Attach: a tunnel, not a control connection
	frames   int
	bucket   *ratelimit.Bucket
	lifetime *time.Timer // ends a pairing-only connection; nil otherwise
	closeOne sync.Once
}

// close ends the connection at once. It closes the TCP connection, not the
// TLS one, so it never blocks on sending a close_notify to a peer that does
// not read.
func (c *serverConn) close() {
	c.closeOne.Do(func() {
		c.cancel()
		_ = c.raw.Close()
	})
}

// acceptLoop accepts until the listener closes.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: wait a little, bounded.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		addr := addrPort(nc.RemoteAddr())
		if !s.limiter.Allow(addr.Addr()) {
			s.stats.addrLimited.Add(1)
			s.metrics.ConnDenied(metrics.ConnAddrRateLimited)
			s.metrics.RateLimited(metrics.LimitNewConns)
			s.denials.drop(addr.Addr(), ReasonAddrRateLimited, s.now())
			_ = nc.Close()
			continue
		}
		if !s.admitConn(nc, addr) {
			_ = nc.Close()
		}
	}
}

// admitConn takes a connection and a handshake slot for a new connection
// and starts serving it, or counts the refusal and returns false.
func (s *Server) admitConn(nc net.Conn, addr netip.AddrPort) bool {
	now := s.now()
	known := s.admit.isKnown(addr.Addr(), now)
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		s.metrics.ConnDenied(metrics.ConnDraining)
		return false
	}
	if s.active >= s.limits.MaxControlConnections {
		s.mu.Unlock()
		s.stats.connLimit.Add(1)
		s.metrics.ConnDenied(metrics.ConnLimit)
		s.denials.drop(addr.Addr(), ReasonConnLimit, now)
		return false
	}
	reason, ok := s.admit.startHandshake(addr.Addr(), known)
	if !ok {
		s.mu.Unlock()
		s.stats.hsLimit.Add(1)
		s.metrics.ConnDenied(metrics.ConnDenyReason(reason))
		s.denials.drop(addr.Addr(), reason, now)
		return false
	}
	s.active++
	s.nextID++
	id := s.nextID
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serve(nc, id, addr, known)
	return true
}

func addrPort(a net.Addr) netip.AddrPort {
	switch ta := a.(type) {
	case *net.TCPAddr:
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// clientHelloArrived is the TLS configuration's GetConfigForClient: the
// ClientHello is in, so the short deadline set for it is lifted (the
// handshake's own timeout still bounds the rest).
func clientHelloArrived(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if hello.Conn != nil {
		_ = hello.Conn.SetReadDeadline(time.Time{})
	}
	return nil, nil
}

// serve runs one connection from the TLS handshake to its close.
func (s *Server) serve(nc net.Conn, connID uint64, addr netip.AddrPort, known bool) {
	hsOpen := true
	endHandshake := func(authorized bool) {
		if hsOpen {
			hsOpen = false
			s.admit.endHandshake(addr.Addr(), known, authorized, s.now())
		}
	}
	defer func() {
		_ = nc.Close()
		endHandshake(false)
		s.mu.Lock()
		s.active--
		delete(s.conns, connID)
		s.mu.Unlock()
		s.wg.Done()
	}()
	log := s.log.With().Uint64("conn", connID).Str("peer_addr", addr.String()).Logger()

	tc, err := s.handshake(nc)
	if err != nil {
		s.stats.hsFailed.Add(1)
		s.metrics.HandshakeFailed(metrics.ClassifyHandshake(err))
		s.metrics.ConnDenied(metrics.ConnHandshakeFailed)
		s.denials.drop(addr.Addr(), ReasonHandshakeFailed, s.now())
		log.Debug().Err(err).Msg("TLS handshake failed")
		return
	}
	id, pairingOnly, ok := s.admitPeer(tc, addr, &log, endHandshake)
	if !ok {
		return
	}
	c := s.newServerConn(tc, nc, connID, addr, id, log, pairingOnly)
	defer func() {
		s.admit.endConn(id, addr.Addr(), c.pairing.Load())
		if c.lifetime != nil {
			c.lifetime.Stop()
		}
	}()
	s.stats.accepted.Add(1)
	s.metrics.ConnAccepted()
	ev := audit.Event{EventType: audit.ConnectionAccepted, PeerID: id.String(), PeerAddr: addr.String(), Decision: "accepted"}
	if pairingOnly {
		ev.Decision, ev.Reason = "pairing_only", "pairing window open"
	}
	s.writeAudit(log, ev)
	defer c.close()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return
	}
	s.conns[connID] = c
	s.mu.Unlock()
	// A removal between Contains and the registration above, or the
	// pairing window closing, is caught here.
	if pairingOnly {
		if open, _ := s.pairing.Active(); !open {
			return
		}
	} else if !s.peers.Contains(id) {
		return
	}
	log.Debug().Bool("pairing_only", pairingOnly).Msg("connection accepted")
	s.loop(c)
	if !c.pairing.Load() && !c.attached {
		s.sessions.PeerGone(c.peer)
	}
}

// admitPeer identifies the peer of a completed handshake (adding its ID to
// log) and decides: authorized, allowed only to pair, or refused (audited,
// counted, told why; ok false). It ends the handshake's slot, marking the
// address known for an authorized peer, and takes a connection slot.
func (s *Server) admitPeer(tc *tls.Conn, addr netip.AddrPort, log *zerolog.Logger, endHandshake func(authorized bool)) (id identity.EndpointID, pairingOnly, ok bool) {
	peerCerts := tc.ConnectionState().PeerCertificates
	if len(peerCerts) == 0 {
		s.stats.hsFailed.Add(1)
		s.metrics.HandshakeFailed(metrics.HandshakeNoClientCert)
		s.metrics.ConnDenied(metrics.ConnHandshakeFailed)
		s.denials.drop(addr.Addr(), ReasonHandshakeFailed, s.now())
		return "", false, false
	}
	id, err := identity.PeerID(peerCerts[0])
	if err != nil {
		s.denyBadCert(*log, addr, err)
		return "", false, false
	}
	*log = log.With().Str("peer_id", id.String()).Logger()
	authorized := s.peers.Contains(id)
	endHandshake(authorized)
	if !authorized {
		if open, _ := s.pairing.Active(); !open {
			s.deny(*log, tc, addr, id, ReasonNotAuthorized, metrics.ConnNotAuthorized, s.notAuthorizedError())
			log.Info().Msg("connection denied: peer not authorized and no pairing window open")
			return "", false, false
		}
		pairingOnly = true
	}
	if reason, ok := s.admit.startConn(id, addr.Addr(), pairingOnly); !ok {
		s.stats.sourceCap.Add(1)
		s.deny(*log, tc, addr, id, reason, metrics.ConnDenyReason(reason), &link.Error{Code: link.CodeTooManyConnections, Message: "too many connections (" + reason + "): close some and retry"})
		return "", false, false
	}
	return id, pairingOnly, true
}

// handshake runs the server side of TLS on nc: the ClientHello must start
// within s.helloTimeout, the whole handshake within the handshake
// timeout.
func (s *Server) handshake(nc net.Conn) (*tls.Conn, error) {
	if err := nc.SetReadDeadline(time.Now().Add(s.helloTimeout)); err != nil {
		return nil, err
	}
	// BatchConn: an attached tunnel connection sends its TLS records in
	// large writes (see dataplane/tunnel).
	tc := tls.Server(tunnel.NewBatchConn(nc), s.tlsConf)
	hctx, hcancel := context.WithTimeout(s.ctx, s.handshakeTimeout)
	defer hcancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// newServerConn builds the state of an accepted connection. A pairing-only
// connection ends after pairingConnLifetime or when the window expires,
// whichever comes first.
func (s *Server) newServerConn(tc *tls.Conn, nc net.Conn, connID uint64, addr netip.AddrPort, id identity.EndpointID, log zerolog.Logger, pairingOnly bool) *serverConn {
	ctx, cancel := context.WithCancel(s.ctx)
	lc := link.NewConn(tc)
	lc.LimitReads(link.MaxRequestSize, frameTimeout)
	c := &serverConn{
		peer:   PeerInfo{ID: id, Addr: addr, ConnID: connID},
		raw:    nc,
		lc:     lc,
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		bucket: ratelimit.NewBucket(s.limits.MaxFramesPerSec, s.limits.MaxFramesPerSec, time.Now()),
	}
	if pairingOnly {
		c.pairing.Store(true)
		life := pairingConnLifetime
		if _, exp := s.pairing.Active(); !exp.IsZero() {
			life = min(life, exp.Sub(s.now()))
		}
		c.lifetime = time.AfterFunc(max(life, 0), c.close)
	}
	return c
}

// denyBadCert refuses a certificate that gives no Endpoint ID, auditing
// an impersonation (SAN naming an ID the key does not have) as such.
func (s *Server) denyBadCert(log zerolog.Logger, addr netip.AddrPort, err error) {
	s.stats.denied.Add(1)
	ev := audit.Event{EventType: audit.ConnectionDenied, PeerAddr: addr.String(), Decision: "denied", Reason: ReasonBadCertificate}
	var san *identity.SANMismatchError
	if errors.As(err, &san) {
		ev.Reason = ReasonImpersonation
		ev.PeerID = san.Actual.String()
		ev.Details = map[string]any{"claimed_id": san.Claimed, "key_id": san.Actual.String()}
	}
	s.metrics.ConnDenied(metrics.ConnDenyReason(ev.Reason))
	s.auditDenial(log, addr, ev)
	log.Warn().Err(err).Str("reason", ev.Reason).Msg("connection denied")
}

// deny refuses an identified peer: audited (aggregated per source),
// counted, and told why in one pp-link error frame before the close, so
// any client can show the reason.
func (s *Server) deny(log zerolog.Logger, tc *tls.Conn, addr netip.AddrPort, id identity.EndpointID, reason string, m metrics.ConnDenyReason, why *link.Error) {
	s.stats.denied.Add(1)
	s.metrics.ConnDenied(m)
	s.auditDenial(log, addr, audit.Event{EventType: audit.ConnectionDenied, PeerID: id.String(), PeerAddr: addr.String(), Decision: "denied", Reason: reason})
	// The frame carries request_id "init-0", the id of the appliance's
	// (and our client's) hello, so a client that matches replies to
	// requests takes it as the answer to its hello. It is sent at once,
	// then the connection is closed lingering, so the client reads it
	// instead of a reset.
	if err := link.NewConn(tc).WriteMessage("init-0", why, denyTimeout); err != nil {
		log.Debug().Err(err).Msg("could not send the refusal")
		return
	}
	lingerClose(tc.NetConn())
}

// denyTimeout bounds the error frame sent to a refused peer and the wait
// for its close.
const denyTimeout = time.Second

// lingerClose half-closes nc and discards what the peer still sends (its
// hello, typically) until it closes or denyTimeout passes: closing a
// socket with unread data would send a reset, which can destroy the
// refusal before the peer reads it.
func lingerClose(nc net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if bc, ok := nc.(*tunnel.BatchConn); ok {
		nc = bc.Conn
	}
	cw, ok := nc.(closeWriter)
	if !ok {
		return
	}
	_ = cw.CloseWrite()
	_ = nc.SetReadDeadline(time.Now().Add(denyTimeout))
	_, _ = io.CopyN(io.Discard, nc, 64<<10)
}

// notAuthorizedError tells an unknown key how to get authorized.
func (s *Server) notAuthorizedError() *link.Error {
	return &link.Error{
		Code:    link.CodePairingRequired,
		Message: "not authorized by " + s.id.String() + ": pair first with `reflector pair-with --peer HOST:PORT --token TOKEN` (no pairing window is open: the operator runs `reflector pair` for a token)",
	}
}

// loop reads and answers messages until the connection ends.
func (s *Server) loop(c *serverConn) {
	for {
		reqID, msg, err := c.lc.ReadMessage(s.idleTimeout)
		var unknown *link.UnknownTypeError
		switch {
		case err == nil:
		case errors.As(err, &unknown):
			if !s.countFrame(c) {
				return
			}
			s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: unknown.Error()})
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.stats.idle.Add(1)
			c.log.Debug().Msg("idle timeout")
			return
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			return
		default:
			s.stats.malformed.Add(1)
			c.log.Info().Err(err).Msg("closing connection after a malformed frame")
			return
		}
		if !s.countFrame(c) {
			return
		}
		if !s.dispatch(c, reqID, msg) {
			return
		}
	}
}

// countFrame applies the per-connection frame rate; false means close.
func (s *Server) countFrame(c *serverConn) bool {
	c.frames++
	if !c.bucket.Allow(time.Now()) {
		s.stats.frameRate.Add(1)
		s.metrics.RateLimited(metrics.LimitFrames)
		c.log.Warn().Int("max_frames_per_sec", s.limits.MaxFramesPerSec).Msg("closing connection: frame rate exceeded")
		return false
	}
	return true
}

func (s *Server) reply(c *serverConn, reqID string, m link.Message) bool {
	if err := c.lc.WriteMessage(reqID, m, writeTimeout); err != nil {
		c.log.Debug().Err(err).Str("type", m.MessageType()).Msg("write failed")
		return false
	}
	return true
}

// dispatch answers one message; false means close the connection.
func (s *Server) dispatch(c *serverConn, reqID string, msg link.Message) bool {
	switch m := msg.(type) {
	case *link.Hello:
		c.peer.Features = m.Features
		return s.reply(c, reqID, s.serverHello())
	case *link.PairRequest:
		return s.reply(c, reqID, s.pair(c, m.Token))
	}
	if c.pairing.Load() {
		return s.reply(c, reqID, &link.Error{Code: link.CodePairingRequired, Message: "pairing required"})
	}
	switch m := msg.(type) {
	case *link.GetStatus:
		return s.reply(c, reqID, s.statusSnapshot(c.peer))
	case *link.GetPathMeta:
		return s.reply(c, reqID, s.pathMeta())
	case *link.SessionRequest:
		if s.draining.Load() {
			return s.reply(c, reqID, s.denyDraining(c, *m))
		}
		if err := s.grantHealthErr(); err != nil {
			return s.reply(c, reqID, s.denyUnhealthy(c, *m, err))
		}
		return s.reply(c, reqID, s.sessions.Request(c.ctx, c.peer, *m))
	case *link.SessionClose:
		return s.reply(c, reqID, s.sessions.Close(c.peer, m.TestID))
	case *link.TestResultRequest:
		return s.reply(c, reqID, s.sessions.Result(c.peer, m.TestID))
	case *link.TunnelAttach:
		if c.frames != 1 {
			return s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: "tunnel_attach must be the first message of a connection"})
		}
		c.attached = true
		s.sessions.Attach(c.ctx, c.peer, reqID, *m, c.lc)
		return false
	}
	return s.reply(c, reqID, &link.Error{Code: link.CodeUnexpected, Message: "unexpected message " + msg.MessageType()})
}

// drainRetryMargin is added to the rest of the grace period in the retry
// hint of a request refused while draining: roughly a restart.
const drainRetryMargin = 10 * time.Second

// denyDraining refuses a session request while the server drains: busy,
// with a retry hint past the end of the grace period.
func (s *Server) denyDraining(c *serverConn, req link.SessionRequest) *link.SessionDeny {
	s.mu.Lock()
	left := s.drainEnd.Sub(s.now())
	s.mu.Unlock()
	retry := int((max(left, 0) + drainRetryMargin + time.Second - 1) / time.Second)
	const msg = "the reflector is shutting down"
	s.metrics.SessionDenied(metrics.DenyBusy, metrics.TestType(req.TestType))
	s.writeAudit(c.log, audit.Event{
		EventType: audit.SessionDenied, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(),
		TestType: req.TestType, Params: req.Params, Decision: "denied", Reason: string(link.DenyBusy),
		Details: map[string]any{"message": msg, "retry_after_sec": retry},
	})
	c.log.Info().Int("retry_after_sec", retry).Msg("session denied: draining")
	return &link.SessionDeny{Reason: link.DenyBusy.ForAppliance(), Message: msg, RetryAfterSec: &retry}
}

// auditDenial writes a connection_denied event in full when it is the
// first of its source in the current interval, and otherwise only counts
// it for the source's rate_limited summary.
func (s *Server) auditDenial(log zerolog.Logger, addr netip.AddrPort, ev audit.Event) {
	if s.denials.deny(addr.Addr(), ev.Reason, s.now()) {
		s.writeAudit(log, ev)
	}
}

func (s *Server) writeAudit(log zerolog.Logger, ev audit.Event) {
	if err := s.audit.Write(ev); err != nil {
		s.metrics.AuditWriteFailed()
		log.Error().Err(err).Str("event", string(ev.EventType)).Msg("audit log write failed")
	}
}

// policySummary is the server_hello policy from [quotas].
func (s *Server) policySummary() link.PolicySummary {
	q := s.cfg.Quotas
	types := []string{}
	if q.AllowThroughput {
		types = append(types, link.TestThroughput)
	}
	if q.AllowUDPEcho {
		types = append(types, link.TestUDPEcho)
	}
	return link.PolicySummary{
		MaxTestDurationSec: q.MaxTestDurationSec,
		MaxConcurrentTests: q.MaxConcurrentTests,
		MaxTestsPerHour:    q.MaxTestsPerHourPerPeer,
		AllowedTestTypes:   types,
	}
}

// features lists what this server offers in server_hello.
func (s *Server) features() []string {
	f := []string{link.FeatureThroughput, link.FeatureUDPEcho, link.FeaturePathMeta, link.FeaturePairing}
	if _, none := s.sessions.(NoSessions); !none {
		f = append(f, link.FeatureTunnel, link.FeatureTestResult)
	}
	return f
}

func (s *Server) serverHello() *link.ServerHello {
	return &link.ServerHello{
		Version:       link.ProtocolVersion,
		Features:      s.features(),
		PolicySummary: s.policySummary(),
	}
}

// statusSnapshot reports the peer's own running test (or, without naming
// the other peer, someone else's) and the peer's usage today.
func (s *Server) statusSnapshot(peer PeerInfo) *link.StatusSnapshot {
	st := s.sessions.Status()
	snap := &link.StatusSnapshot{EndpointID: s.id.String(), UptimeSec: uint64(s.Uptime() / time.Second)}
	var pick *ActiveSession
	for i := range st.Active {
		a := &st.Active[i]
		if a.PeerID == peer.ID {
			pick = a
			break
		}
		if pick == nil {
			pick = a
		}
	}
	if pick != nil {
		at := &link.ActiveTest{TestID: pick.TestID, TestType: pick.TestType, StartedAt: pick.StartedAt.UTC().Format(time.RFC3339)}
		if pick.PeerID == peer.ID {
			at.PeerID = pick.PeerID.String()
		} else {
			at.TestID = ""
		}
		if left := pick.ExpiresAt.Sub(s.now()); left > 0 {
			at.RemainingSec = uint64((left + time.Second - 1) / time.Second)
		}
		snap.ActiveTest = at
	}
	for _, u := range st.Usage {
		if u.PeerID == peer.ID {
			snap.TestsToday, snap.BytesToday = u.TestsToday, u.BytesToday
		}
	}
	return snap
}

func (s *Server) pathMeta() *link.PathMeta {
	snap, err := s.sampler.Snapshot()
	if err != nil {
		s.log.Debug().Err(err).Msg("host metadata incomplete")
	}
	pm := &link.PathMeta{
		CPULoad:       snap.CPULoad,
		MemoryUsedMB:  snap.MemoryUsedMB,
		MemoryTotalMB: snap.MemoryTotalMB,
		LoadAvg:       snap.LoadAvg,
		TimeSynced:    snap.TimeSynced,
		BuildVersion:  buildinfo.Version,
		BuildHash:     buildinfo.CommitHash(),
	}
	if snap.MTU > 0 {
		mtu := snap.MTU
		pm.MTU = &mtu
	}
	return pm
}

// pair redeems a pairing token for the connection's peer. Failures are
// audited as pairing_failed, aggregated per source like connection
// denials; a source that sent too many wrong tokens is refused for the
// rest of the window without closing it for others.
func (s *Server) pair(c *serverConn, token string) *link.PairResponse {
	ours := s.id.String()
	if !c.pairing.Load() {
		return &link.PairResponse{Success: true, Message: "already authorized", EndpointID: &ours}
	}
	src := pairing.Source{Addr: c.peer.Addr.Addr(), Key: c.peer.ID.String()}
	err := s.pairing.RedeemWith(token, src, func() error {
		if _, err := s.peers.Add(c.peer.ID, peers.SourcePaired, "paired from "+c.peer.Addr.Addr().String()); err != nil {
			return err
		}
		// Promoted before the window's close closes pairing-only
		// connections.
		c.pairing.Store(false)
		return nil
	})
	if err != nil {
		s.metrics.PairingEvent(metrics.PairingRejected)
		s.auditDenial(c.log, c.peer.Addr, audit.Event{
			EventType: audit.PairingFailed, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(),
			Decision: "denied", Reason: pairFailureReason(err),
		})
		c.log.Warn().Err(err).Msg("pairing failed")
		return &link.PairResponse{Success: false, Message: pairFailure(err)}
	}
	if c.lifetime != nil {
		c.lifetime.Stop()
	}
	s.admit.paired()
	s.metrics.PairingEvent(metrics.PairingPaired)
	s.writeAudit(c.log, audit.Event{EventType: audit.PeerPaired, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(), Decision: "accepted"})
	c.log.Info().Msg("peer paired")
	return &link.PairResponse{Success: true, Message: "paired", EndpointID: &ours}
}

// pairFailureReason is the audit reason of a failed redemption.
func pairFailureReason(err error) string {
	switch {
	case errors.Is(err, pairing.ErrBadToken):
		return "bad_token"
	case errors.Is(err, pairing.ErrSourceLimited):
		return "source_limited"
	case errors.Is(err, pairing.ErrTooManyFailures):
		return "too_many_failures"
	case errors.Is(err, pairing.ErrExpired), errors.Is(err, pairing.ErrNoWindow):
		return "no_window"
	default:
		return "error"
	}
}

// pairFailure is the pair_response message for a failed redemption. It
// does not tell a wrong token from a closed window beyond what the
// operator can see anyway.
func pairFailure(err error) string {
	switch {
	case errors.Is(err, pairing.ErrBadToken):
		return "wrong pairing token"
	case errors.Is(err, pairing.ErrSourceLimited):
		return "too many wrong tokens from this address or key: ask the operator for a new pairing window"
	case errors.Is(err, pairing.ErrTooManyFailures):
		return "too many wrong tokens: pairing window closed"
	case errors.Is(err, pairing.ErrExpired), errors.Is(err, pairing.ErrNoWindow):
		return "no pairing window is open"
	default:
		return "pairing failed on the server"
	}
}

// pairingClosed runs when the pairing window closes: it audits why and
// closes every connection that was only allowed to pair.
func (s *Server) pairingClosed(reason error) {
	why := map[error]string{
		pairing.ErrExpired:         "expired",
		pairing.ErrTooManyFailures: "too_many_failures",
		pairing.ErrConsumed:        "consumed",
		pairing.ErrNoWindow:        "closed",
	}[reason]
	s.metrics.PairingEvent(metrics.PairingClosed)
	s.writeAudit(s.log, audit.Event{EventType: audit.PairingClosed, Decision: "closed", Reason: why})
	conns := s.connsOf(func(c *serverConn) bool { return c.pairing.Load() })
	for _, c := range conns {
		c.close()
	}
	s.log.Info().Str("reason", why).Int("pairing_connections_closed", len(conns)).Msg("pairing window closed")
}
