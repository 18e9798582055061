package server

import (
	"crypto/ed25519"
	"errors"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
)

// errListenerDown is the listener check's problem before Start and after
// Shutdown began.
var errListenerDown = errors.New("the pp-link/1 listener is not accepting connections")

// newHealth wires the health definition to this server.
func (s *Server) newHealth() *health.Checker {
	return health.New(health.Sources{
		AuditProbe:  s.audit.Probe,
		AuditPath:   s.audit.Path(),
		KeyPath:     s.cfg.Identity.PrivateKeyPath,
		Key:         s.key.Public().(ed25519.PublicKey),
		ListenerErr: s.listenerErr,
		Draining:    s.Draining,
	})
}

// HealthChecks runs the health definition's named checks (see package
// health); the server is healthy when every one passes.
func (s *Server) HealthChecks() []health.Check { return s.health.Checks() }

// listenerErr returns nil while the pp-link/1 listener accepts: the accept
// loop retries every error but a closed listener, which only Shutdown
// causes.
func (s *Server) listenerErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil || s.shutdown {
		return errListenerDown
	}
	return nil
}

// denyUnhealthy refuses a session request while a health check fails (no
// grant while unhealthy): resource_exhausted, which the shipped appliance
// receives as busy.
func (s *Server) denyUnhealthy(c *serverConn, req link.SessionRequest, cause error) *link.SessionDeny {
	const msg = "the reflector is unhealthy and grants no tests; the operator sees why in 'reflector status'"
	reason := link.DenyResourceExhausted
	s.metrics.SessionDenied(metrics.SessionDenyReason(reason), metrics.TestType(req.TestType))
	s.writeAudit(c.log, audit.Event{
		EventType: audit.SessionDenied, PeerID: c.peer.ID.String(), PeerAddr: c.peer.Addr.String(),
		TestType: req.TestType, Params: req.Params, Decision: "denied", Reason: string(reason),
		Details: map[string]any{"message": msg, "health": cause.Error()},
	})
	c.log.Warn().Err(cause).Msg("session denied: unhealthy")
	if !c.peer.Announced(FeatureDenyReasonsV2) {
		reason = reason.ForAppliance()
	}
	return &link.SessionDeny{Reason: reason, Message: msg}
}
