package metrics

// Every label value comes from one of the closed sets below. A value outside
// its set is counted as LabelOther, so no input (a peer's ID, an address, an
// error text) can grow the number of series.

// LabelOther replaces any label value outside its enumeration.
const LabelOther = "other"

// TestType labels sessions and bytes by the kind of test.
type TestType string

// Test types, spelled as pp-link/1 session_request.test_type.
const (
	TestThroughput TestType = "throughput"
	TestUDPEcho    TestType = "udp_echo"
)

var testTypes = []TestType{TestThroughput, TestUDPEcho}

// ConnDenyReason says why a control connection was refused, spelled as
// the audit connection_denied reason of controlplane/server, so
// ConnDenied(ConnDenyReason(reason)) needs no mapping.
type ConnDenyReason string

// Connection deny reasons.
const (
	// ConnNotAuthorized: a valid certificate whose Endpoint ID is neither
	// authorized nor paired, and no pairing window open.
	ConnNotAuthorized ConnDenyReason = "not_authorized"
	// ConnImpersonation: the certificate's SAN names an ID its key does not
	// have.
	ConnImpersonation ConnDenyReason = "impersonation"
	// ConnBadCertificate: the certificate could not be turned into an ID.
	ConnBadCertificate ConnDenyReason = "bad_certificate"
	// ConnAddrRateLimited: too many new connections from one address.
	ConnAddrRateLimited ConnDenyReason = "addr_rate_limited"
	// ConnLimit: max_control_connections reached.
	ConnLimit ConnDenyReason = "conn_limit"
	// ConnHandshakeLimit: max_handshakes in progress reached.
	ConnHandshakeLimit ConnDenyReason = "handshake_limit"
	// ConnHandshakeFailed: the TLS handshake failed (kind in
	// reflector_tls_handshake_failures_total).
	ConnHandshakeFailed ConnDenyReason = "handshake_failed"
	// ConnDraining: the server is shutting down.
	ConnDraining ConnDenyReason = "draining"
	// ConnHandshakeAddrLimit: max_handshakes_per_addr in flight from the
	// address.
	ConnHandshakeAddrLimit ConnDenyReason = "handshake_addr_limit"
	// ConnHandshakePrefixLimit: handshakes in flight from the /24 or /64.
	ConnHandshakePrefixLimit ConnDenyReason = "handshake_prefix_limit"
	// ConnHandshakeEarlyDrop: random early drop of an unknown address's
	// handshake as the slots fill.
	ConnHandshakeEarlyDrop ConnDenyReason = "handshake_early_drop"
	// ConnPeerConnLimit: max_conns_per_peer open for the key.
	ConnPeerConnLimit ConnDenyReason = "peer_conn_limit"
	// ConnAddrConnLimit: max_conns_per_addr open from the address.
	ConnAddrConnLimit ConnDenyReason = "addr_conn_limit"
	// ConnPairingConnLimit: max_pairing_connections open.
	ConnPairingConnLimit ConnDenyReason = "pairing_conn_limit"
)

var connDenyReasons = []ConnDenyReason{ConnNotAuthorized, ConnImpersonation, ConnBadCertificate, ConnAddrRateLimited,
	ConnLimit, ConnHandshakeLimit, ConnHandshakeFailed, ConnDraining,
	ConnHandshakeAddrLimit, ConnHandshakePrefixLimit, ConnHandshakeEarlyDrop, ConnPeerConnLimit, ConnAddrConnLimit, ConnPairingConnLimit}

// HandshakeFailure classifies a failed TLS handshake.
type HandshakeFailure string

// Handshake failure kinds.
const (
	// HandshakeTimeout: the handshake did not finish in handshake_timeout_sec.
	HandshakeTimeout HandshakeFailure = "timeout"
	// HandshakeNoClientCert: the client sent no certificate.
	HandshakeNoClientCert HandshakeFailure = "no_client_cert"
	// HandshakeBadCert: the client certificate is malformed, expired or not Ed25519.
	HandshakeBadCert HandshakeFailure = "bad_certificate"
	// HandshakeProtocol: TLS version, ALPN or other protocol mismatch.
	HandshakeProtocol HandshakeFailure = "protocol"
	// HandshakeEOF: the peer closed or reset the connection mid-handshake.
	HandshakeEOF HandshakeFailure = "eof"
)

var handshakeFailures = []HandshakeFailure{HandshakeTimeout, HandshakeNoClientCert, HandshakeBadCert, HandshakeProtocol, HandshakeEOF}

// SessionDenyReason is the reason of a session_deny, spelled as on the wire
// (link.DenyReason converts with SessionDenyReason(r)).
type SessionDenyReason string

// Session deny reasons.
const (
	DenyUnauthorized      SessionDenyReason = "unauthorized"
	DenyRateLimited       SessionDenyReason = "rate_limited"
	DenyBusy              SessionDenyReason = "busy"
	DenyInvalidParams     SessionDenyReason = "invalid_params"
	DenyQuotaExceeded     SessionDenyReason = "quota_exceeded"
	DenyResourceExhausted SessionDenyReason = "resource_exhausted"
)

var sessionDenyReasons = []SessionDenyReason{DenyUnauthorized, DenyRateLimited, DenyBusy, DenyInvalidParams, DenyQuotaExceeded, DenyResourceExhausted}

// EndReason says how a granted session ended.
type EndReason string

// Session end reasons, spelled as controlplane/session reports them (the
// audit session_completed reason), so SessionEnded(tt, EndReason(reason))
// needs no mapping.
const (
	EndDone          EndReason = "done"           // the test ran to its end
	EndClientGone    EndReason = "client_gone"    // the iperf3 client disconnected or terminated
	EndDeadline      EndReason = "deadline"       // the hard deadline cut it
	EndError         EndReason = "error"          // protocol error or refused parameters
	EndNoClient      EndReason = "no_client"      // nobody ran the test before the deadline
	EndClosed        EndReason = "closed"         // session_close from the peer
	EndPeerGone      EndReason = "peer_gone"      // the control connection closed
	EndQuotaExceeded EndReason = "quota_exceeded" // cut off at the peer's daily byte quota
	EndShutdown      EndReason = "shutdown"       // the server drained
)

var endReasons = []EndReason{EndDone, EndClientGone, EndDeadline, EndError, EndNoClient, EndClosed, EndPeerGone, EndQuotaExceeded, EndShutdown}

// Direction is the way bytes moved, seen from the reflector.
type Direction string

// Directions.
const (
	RX Direction = "rx" // received from the client (upload test)
	TX Direction = "tx" // sent to the client (reverse / download test)
)

var directions = []Direction{RX, TX}

// PairingKind is a pairing event.
type PairingKind string

// Pairing events, matching the audit events where they exist.
const (
	PairingEnabled  PairingKind = "enabled"  // a pairing token was issued
	PairingPaired   PairingKind = "paired"   // a peer paired with a valid token
	PairingRejected PairingKind = "rejected" // a pair_request with a wrong or expired token
	PairingRemoved  PairingKind = "removed"  // a peer was removed
	PairingClosed   PairingKind = "closed"   // the pairing window closed (expired, consumed, too many failures, closed)
	PairingAdded    PairingKind = "added"    // a peer was added by the operator
)

var pairingKinds = []PairingKind{PairingEnabled, PairingPaired, PairingRejected, PairingRemoved, PairingClosed, PairingAdded}

// AttachDenyReason says why a tunnel attach was refused.
type AttachDenyReason string

// Tunnel attach deny reasons.
const (
	AttachUnknownTest AttachDenyReason = "unknown_test" // no such test_id (or already over)
	AttachWrongPeer   AttachDenyReason = "wrong_peer"   // the session belongs to another peer
	AttachBadToken    AttachDenyReason = "bad_token"    // the token does not match
	AttachExpired     AttachDenyReason = "expired"      // the grant expired
	AttachTooMany     AttachDenyReason = "too_many"     // more streams than the session allows
	AttachWrongMode   AttachDenyReason = "wrong_mode"   // the session is not tunneled
)

var attachDenyReasons = []AttachDenyReason{AttachUnknownTest, AttachWrongPeer, AttachBadToken, AttachExpired, AttachTooMany, AttachWrongMode}

// RateLimitKind names the limiter that refused something.
type RateLimitKind string

// Rate limiters.
const (
	LimitNewConns     RateLimitKind = "new_connections" // new connections per address
	LimitFrames       RateLimitKind = "frames"          // frames per second on one control connection
	LimitTestsPerHour RateLimitKind = "tests_per_hour"  // tests per peer per hour
	LimitCooldown     RateLimitKind = "cooldown"        // pause between two tests of one peer
)

var rateLimitKinds = []RateLimitKind{LimitNewConns, LimitFrames, LimitTestsPerHour, LimitCooldown}

// ClientFeature names a capability a client did not announce in hello
// although its request needed it (a legacy client, e.g. the shipped
// appliance, refused rather than granted a test it cannot run).
type ClientFeature string

// Missing client features.
const (
	MissingTunnel ClientFeature = "tunnel" // a tunneled-only reflector
	MissingClamp  ClientFeature = "clamp"  // a request above the limits
)

var clientFeatures = []ClientFeature{MissingTunnel, MissingClamp}

// DataConnRefusal says why a connection to a granted direct-mode data port
// was refused (iperf3 ACCESS_DENIED).
type DataConnRefusal string

// Data port refusals.
const (
	DataForeignSource  DataConnRefusal = "foreign_source"  // not from the grant holder's address
	DataAlreadyClaimed DataConnRefusal = "already_claimed" // the holder's address, after the test's own connections
)

var dataConnRefusals = []DataConnRefusal{DataForeignSource, DataAlreadyClaimed}

// QUICOutcome is what became of a QUIC handshake attempt. The refusal
// outcomes are spelled as the server's refusal reasons, so
// QUICHandshake(QUICOutcome(reason)) needs no mapping.
type QUICOutcome string

// QUIC handshake outcomes.
const (
	QUICCompleted            QUICOutcome = "completed"              // the handshake completed
	QUICFailed               QUICOutcome = "failed"                 // admitted, did not complete (timeout, spoofed source)
	QUICRetry                QUICOutcome = "retry"                  // answered with a Retry (source address validation under load)
	QUICAddrRateLimited      QUICOutcome = "addr_rate_limited"      // new attempts per address
	QUICHandshakeLimit       QUICOutcome = "handshake_limit"        // handshakes in flight overall
	QUICHandshakeAddrLimit   QUICOutcome = "handshake_addr_limit"   // in flight from the address
	QUICHandshakePrefixLimit QUICOutcome = "handshake_prefix_limit" // in flight from the /24 or /64
	QUICHandshakeEarlyDrop   QUICOutcome = "handshake_early_drop"   // random early drop
)

var quicOutcomes = []QUICOutcome{QUICCompleted, QUICFailed, QUICRetry, QUICAddrRateLimited, QUICHandshakeLimit,
	QUICHandshakeAddrLimit, QUICHandshakePrefixLimit, QUICHandshakeEarlyDrop}

// norm returns v when it is in set, LabelOther otherwise.
func norm[T ~string](v T, set []T) string {
	for _, s := range set {
		if v == s {
			return string(v)
		}
	}
	return LabelOther
}

// withOther returns the set's values as strings plus LabelOther.
func withOther[T ~string](set []T) []string {
	out := make([]string, 0, len(set)+1)
	for _, s := range set {
		out = append(out, string(s))
	}
	return append(out, LabelOther)
}
