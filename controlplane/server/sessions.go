package server

import (
	"context"
	"crypto/tls"
	"net/netip"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
)

// PeerInfo identifies the authorized peer behind one control connection.
type PeerInfo struct {
	// ID is derived from the key of the peer's certificate.
	ID identity.EndpointID
	// Addr is the peer's address as the listener saw it.
	Addr netip.AddrPort
	// ConnID numbers the control connection, unique within a Server.
	ConnID uint64
	// Features are those of the last hello on this connection (nil before
	// one), as the peer sent them.
	Features []string
}

// FeatureDenyReasonsV2 is announced in hello by clients that decode every
// deny reason of pp-link/1, resource_exhausted included; the shipped
// appliance does not (see link.DenyReason.ForAppliance).
const FeatureDenyReasonsV2 = "deny_reasons_v2"

// Announced reports whether the peer's hello listed feature f.
func (p PeerInfo) Announced(f string) bool { return slices.Contains(p.Features, f) }

// ActiveSession describes a running test, for status_snapshot and the
// admin status.
type ActiveSession struct {
	TestID    string              `json:"test_id"`
	TestType  string              `json:"test_type"`
	Mode      string              `json:"mode"`
	PeerID    identity.EndpointID `json:"peer_id"`
	PeerAddr  string              `json:"peer_addr"`
	Port      int                 `json:"port,omitempty"`
	StartedAt time.Time           `json:"started_at"`
	ExpiresAt time.Time           `json:"expires_at"`
}

// PeerUsage is one peer's accounting for the current UTC day.
type PeerUsage struct {
	PeerID     identity.EndpointID `json:"peer_id"`
	TestsToday int                 `json:"tests_today"`
	BytesToday uint64              `json:"bytes_today"`
}

// SessionStatus is what a Sessions implementation reports.
type SessionStatus struct {
	Active []ActiveSession `json:"active"`
	Usage  []PeerUsage     `json:"usage"`
	// LegacyClientDenials counts the session requests refused since the
	// start because the client did not announce a capability its grant
	// needs (the shipped appliance against a tunneled-only reflector, or
	// asking above the limits): why appliances fail, at a glance.
	LegacyClientDenials int64 `json:"legacy_client_denials"`
}

// Sessions decides and runs tests. The Server hands it every session
// message of an authorized peer; everything else (authentication, pairing,
// framing, limits) stays in the Server. Implementations must be safe for
// concurrent use; their methods are called from connection goroutines and
// must not block for long, except Attach.
type Sessions interface {
	// Request answers a session_request with a *link.SessionGrant or a
	// *link.SessionDeny. ctx ends when the peer's connection closes. A
	// grant must not be given unless its session_granted audit line was
	// written (fail closed); the write itself is the check, so a log that
	// failed before and works again grants at once.
	Request(ctx context.Context, peer PeerInfo, req link.SessionRequest) link.Message
	// Close answers a session_close (normally with link.OK or link.Error).
	Close(peer PeerInfo, testID string) link.Message
	// Result answers a get_test_result (link.TestResult or link.Error).
	Result(peer PeerInfo, testID string) link.Message
	// Attach handles a tunnel_attach, the first frame of a fresh
	// connection: it writes the answer itself (with reqID) and, on success,
	// uses c.NetConn() as a raw byte pipe until the stream ends. The Server
	// closes c when Attach returns; ctx ends at shutdown.
	Attach(ctx context.Context, peer PeerInfo, reqID string, req link.TunnelAttach, c *link.Conn)
	// PeerGone reports that a control connection of an authorized peer has
	// closed.
	PeerGone(peer PeerInfo)
	// Status reports running tests and today's usage.
	Status() SessionStatus
	// Shutdown ends every session, waiting at most until ctx is done.
	Shutdown(ctx context.Context) error
}

// Env is what a Sessions implementation gets from the Server that runs it.
type Env struct {
	Config     *config.Config
	EndpointID identity.EndpointID
	// Certificate is the server's own TLS certificate (for a QUIC listener).
	Certificate tls.Certificate
	Audit       *audit.Log
	// AuditHealthy returns nil while the audit log can be written.
	AuditHealthy func() error
	Logger       zerolog.Logger
	Now          func() time.Time
	// Metrics receives the session counters; nil counts nothing (every
	// *metrics.Metrics method is safe on nil).
	Metrics *metrics.Metrics
}

// NoSessions is the Sessions used when none is configured: every request
// is denied with resource_exhausted.
type NoSessions struct{}

var _ Sessions = NoSessions{}

// noSessionsMessage is the deny message of NoSessions.
const noSessionsMessage = "sessions are not enabled in this build"

// Request implements Sessions.
func (NoSessions) Request(context.Context, PeerInfo, link.SessionRequest) link.Message {
	return &link.SessionDeny{Reason: link.DenyResourceExhausted, Message: noSessionsMessage}
}

// Close implements Sessions.
func (NoSessions) Close(PeerInfo, string) link.Message {
	return &link.Error{Code: link.CodeUnexpected, Message: "no such session"}
}

// Result implements Sessions.
func (NoSessions) Result(PeerInfo, string) link.Message {
	return &link.Error{Code: link.CodeUnexpected, Message: "no such session"}
}

// Attach implements Sessions: it refuses.
func (NoSessions) Attach(_ context.Context, _ PeerInfo, reqID string, _ link.TunnelAttach, c *link.Conn) {
	_ = c.WriteMessage(reqID, &link.TunnelAttachResult{OK: false, Message: noSessionsMessage}, writeTimeout)
}

// PeerGone implements Sessions.
func (NoSessions) PeerGone(PeerInfo) {}

// Status implements Sessions.
func (NoSessions) Status() SessionStatus { return SessionStatus{} }

// Shutdown implements Sessions.
func (NoSessions) Shutdown(context.Context) error { return nil }
