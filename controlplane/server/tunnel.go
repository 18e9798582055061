package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
)

// TunnelSessions is implemented by a Sessions that runs tunneled tests. In
// tunneled mode the Server then tells it the bound control port and
// listens for QUIC (UDP tests) on the same port number over UDP, with the
// control listener's TLS configuration, handing it every attach of an
// authorized peer.
type TunnelSessions interface {
	Sessions
	// SetControlPort reports the bound control port, which tunneled
	// grants name.
	SetControlPort(port int)
	// AttachQUIC decides on the attach of a QUIC session: the reply, and
	// when accepting the function that serves the session until the
	// session or its test ends (nil when refusing).
	AttachQUIC(ctx context.Context, peer PeerInfo, req link.TunnelAttach) (*link.TunnelAttachResult, func(*tunnel.QUICSession))
}

// errAttachRefused is returned to the QUIC listener for a refused attach.
var errAttachRefused = errors.New("tunnel attach refused")

// startQUIC listens for tunneled UDP tests on addr's port over UDP when
// the reflector is tunneled and its Sessions can serve them. A failure is
// logged, not fatal: TCP tests still work, and clients are told which UDP
// port to open.
func (s *Server) startQUIC(addr net.Addr) *tunnel.QUICListener {
	ts, ok := s.sessions.(TunnelSessions)
	if !ok || !s.cfg.Network.Tunnels() {
		return nil
	}
	ta, _ := addr.(*net.TCPAddr)
	if ta != nil {
		ts.SetControlPort(ta.Port)
	}
	guard := newQUICGuard(s)
	ql, err := tunnel.ListenQUICGuarded(context.Background(), addr.String(), s.tlsConf, func(ctx context.Context, cert *x509.Certificate, remote net.Addr, req []byte) ([]byte, func(*tunnel.QUICSession), error) {
		return s.attachQUIC(ctx, ts, cert, remote, req)
	}, guard)
	if err != nil {
		s.log.Error().Err(err).Msg("tunneled UDP tests unavailable: cannot listen for QUIC")
		return nil
	}
	s.mu.Lock()
	s.quicGuard = guard
	s.mu.Unlock()
	s.log.Info().Str("listen", ql.Addr().String()).Msg("listening for tunneled UDP tests (QUIC)")
	return ql
}

// attachQUIC authorizes a QUIC session's peer (the allowlist, as for a
// control connection), decodes its tunnel_attach and asks ts.
func (s *Server) attachQUIC(ctx context.Context, ts TunnelSessions, cert *x509.Certificate, remote net.Addr, req []byte) ([]byte, func(*tunnel.QUICSession), error) {
	addr := addrPort(remote)
	log := s.log.With().Str("peer_addr", addr.String()).Str("transport", "quic").Logger()
	id, err := identity.PeerID(cert)
	if err != nil {
		s.auditDenial(log, addr, audit.Event{EventType: audit.ConnectionDenied, PeerAddr: addr.String(), Decision: "denied", Reason: ReasonBadCertificate})
		return nil, nil, err
	}
	if !s.peers.Contains(id) {
		s.auditDenial(log, addr, audit.Event{EventType: audit.ConnectionDenied, PeerID: id.String(), PeerAddr: addr.String(), Decision: "denied", Reason: ReasonNotAuthorized})
		return nil, nil, errAttachRefused
	}
	reqID, msg, err := link.Decode(req)
	if err != nil {
		return nil, nil, err
	}
	ta, ok := msg.(*link.TunnelAttach)
	if !ok {
		reply, _ := link.Encode(reqID, &link.Error{Code: link.CodeUnexpected, Message: "a QUIC session must start with tunnel_attach"})
		return reply, nil, errAttachRefused
	}
	res, serve := ts.AttachQUIC(ctx, PeerInfo{ID: id, Addr: addr}, *ta)
	reply, err := link.Encode(reqID, res)
	if err != nil {
		return nil, nil, err
	}
	if !res.OK || serve == nil {
		return reply, nil, errAttachRefused
	}
	return reply, serve, nil
}
