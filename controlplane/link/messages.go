package link

import (
	"encoding/json"
	"strconv"
)

// ProtocolVersion is the version string both sides put in hello and
// server_hello.
const ProtocolVersion = "1.0"

// Feature names exchanged in hello / server_hello. The appliance sends
// throughput and udp_echo; the earlier Rust server answered with all four of
// the first group. The extension features announce our additions so our
// client can tell a reflector that supports them.
const (
	FeatureThroughput = "throughput"
	FeatureUDPEcho    = "udp_echo"
	FeaturePathMeta   = "path_meta"
	FeaturePairing    = "pairing"

	// FeatureTunnel announces the tunnel_attach extension.
	FeatureTunnel = "tunnel"
	// FeatureTestResult announces the get_test_result extension.
	FeatureTestResult = "test_result"

	// Client capabilities a client announces in hello (ours does; the
	// shipped appliance does not) and the reflector's grants depend on.
	// FeatureTunnel from a client means it can run a tunneled grant.

	// FeatureClamp: the client reads the grant's duration_sec and streams
	// and runs the lowered test, so a request above the limits may be
	// clamped; without it such a request is refused (invalid_params).
	FeatureClamp = "clamp"
	// FeatureLateStart: the client may hand the grant to a person who
	// starts the test by hand (`reflector tunnel`), so an unused grant is
	// kept until its deadline instead of ending at the claim deadline.
	FeatureLateStart = "late_start"
)

// Test types (session_request.test_type, active_test.test_type). The
// appliance's enum knows exactly these two; anything else fails to decode on
// its side.
const (
	TestThroughput = "throughput"
	TestUDPEcho    = "udp_echo"
)

// Session modes (session_grant.mode).
const (
	ModeTunneled        = "tunneled"
	ModeDirectEphemeral = "direct_ephemeral"
)

// Transport protocols (test_params.protocol, tunnel_attach.stream_kind).
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// NetworkPosition says where the reflector sits; the Rust type is an optional
// plain string, absent from the JSON when unknown to the sender. The empty
// value is omitted on the wire.
type NetworkPosition string

// Network positions the earlier server reported.
const (
	PositionWAN     NetworkPosition = "wan"
	PositionLAN     NetworkPosition = "lan"
	PositionHybrid  NetworkPosition = "hybrid"
	PositionUnknown NetworkPosition = "unknown"
)

// DenyReason is the machine-readable reason of a session_deny.
type DenyReason string

// Deny reasons, spelled as the Rust enum serialises them (snake_case).
const (
	DenyUnauthorized      DenyReason = "unauthorized"
	DenyRateLimited       DenyReason = "rate_limited"
	DenyBusy              DenyReason = "busy"
	DenyInvalidParams     DenyReason = "invalid_params"
	DenyQuotaExceeded     DenyReason = "quota_exceeded"
	DenyResourceExhausted DenyReason = "resource_exhausted"
)

// Known reports whether r is one of the six reasons of pp-link/1.
func (r DenyReason) Known() bool {
	switch r {
	case DenyUnauthorized, DenyRateLimited, DenyBusy, DenyInvalidParams,
		DenyQuotaExceeded, DenyResourceExhausted:
		return true
	}
	return false
}

// ForAppliance maps r to a reason the shipped appliance can decode. Its enum
// (src/reflector_proto/rpc.rs) lacks resource_exhausted, which the earlier
// server did send: the appliance then fails to parse the whole frame and
// reports a decode error instead of the denial. ForAppliance returns
// DenyBusy for resource_exhausted (and for unknown reasons) and r otherwise.
func (r DenyReason) ForAppliance() DenyReason {
	if r == DenyResourceExhausted || !r.Known() {
		return DenyBusy
	}
	return r
}

// Error codes used in error messages.
const (
	// CodeUnexpected answers a message the server does not accept here
	// (a response type, an unknown type, a message out of order).
	CodeUnexpected = 400
	// CodePairingRequired answers anything but hello and pair_request from a
	// peer that is allowed to pair but not yet paired.
	CodePairingRequired = 403
	// CodeTooManyConnections tells a peer, before the server closes, that
	// one of its connection caps (per peer key, per address, pairing) is
	// reached.
	CodeTooManyConnections = 429
)

// TestState is the state of a test in a test_result extension message.
type TestState string

// Test states.
const (
	StateRunning   TestState = "running"
	StateCompleted TestState = "completed"
	StateFailed    TestState = "failed"
)

// Message is implemented by every pp-link/1 payload type. MessageType is the
// payload's "type" tag. All message types implement it with value receivers,
// so both T and *T can be encoded; Decode always returns *T.
type Message interface {
	MessageType() string
}

// Hello is the client's first message (request_id "init-0" on the
// appliance). The appliance sends version "1.0" and features
// ["throughput", "udp_echo"].
type Hello struct {
	Version  string   `json:"version"`
	Features []string `json:"features"`
}

// ServerHello answers Hello.
type ServerHello struct {
	Version         string          `json:"version"`
	Features        []string        `json:"features"`
	PolicySummary   PolicySummary   `json:"policy_summary"`
	NetworkPosition NetworkPosition `json:"network_position,omitempty"`
}

// PolicySummary tells the client the server's limits. The Rust types are
// u64 (duration) and u32 (counts): never encode negative values.
type PolicySummary struct {
	MaxTestDurationSec int      `json:"max_test_duration_sec"`
	MaxConcurrentTests int      `json:"max_concurrent_tests"`
	MaxTestsPerHour    int      `json:"max_tests_per_hour"`
	AllowedTestTypes   []string `json:"allowed_test_types"`
}

// SessionRequest asks for a test. TestType is TestThroughput or TestUDPEcho.
type SessionRequest struct {
	TestType string     `json:"test_type"`
	Params   TestParams `json:"params"`
}

// TestParams tunes a requested test. The first four fields are the
// appliance's (it always sends protocol "tcp", streams and reverse; the
// optional ones encode as null when nil, as serde does). The rest are our
// extensions, omitted when nil, which the appliance never sends.
type TestParams struct {
	DurationSec int     `json:"duration_sec"`
	Protocol    *string `json:"protocol"`
	Streams     *int    `json:"streams"`
	Reverse     *bool   `json:"reverse"`

	// Bidir asks for a bidirectional (iperf3 --bidir) test.
	Bidir *bool `json:"bidir,omitempty"`
	// BitrateBps is the target rate in bits per second (iperf3 -b).
	BitrateBps *int64 `json:"bitrate_bps,omitempty"`
	// PacketSize is the UDP payload / TCP write size in bytes (iperf3 -l).
	PacketSize *int `json:"packet_size,omitempty"`
	// RatePPS is the packet rate of a udp_echo test.
	RatePPS *int `json:"rate_pps,omitempty"`
	// Timestamped asks udp_echo to stamp server receive times into replies.
	Timestamped *bool `json:"timestamped,omitempty"`
}

// SessionGrant grants a test. ExpiresAt is RFC 3339. The appliance stores it
// as an opaque string (the earlier server sent chrono's
// "2025-06-15T12:00:00.123456789+00:00" form). Port is a u16 on the appliance.
// The last three fields are extensions, omitted when zero: the appliance
// ignores unknown fields.
type SessionGrant struct {
	TestID    string `json:"test_id"`
	Mode      string `json:"mode"`
	Port      int    `json:"port"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`

	// DurationSec is the effective duration after the server's clamping.
	DurationSec int `json:"duration_sec,omitempty"`
	// Streams is the effective number of parallel streams.
	Streams int `json:"streams,omitempty"`
	// Clamped is true when the server lowered a requested parameter.
	Clamped bool `json:"clamped,omitempty"`
}

// SessionDeny refuses a test. RetryAfterSec encodes as null when nil, as the
// Rust type (Option without skip) does. Send the appliance only reasons it
// knows: see DenyReason.ForAppliance.
type SessionDeny struct {
	Reason        DenyReason `json:"reason"`
	Message       string     `json:"message"`
	RetryAfterSec *int       `json:"retry_after_sec"`
}

// SessionClose ends a test early; answered with OK. The appliance never
// sends it.
type SessionClose struct {
	TestID string `json:"test_id"`
}

// OK is the empty success answer, {"type":"ok"}.
type OK struct{}

// GetStatus asks for a StatusSnapshot, {"type":"get_status"}.
type GetStatus struct{}

// StatusSnapshot describes the reflector's current state. ActiveTest encodes
// as null when nil (Option without skip in Rust); NetworkPosition is omitted
// when empty. The counters are u64/u32 on the Rust side.
type StatusSnapshot struct {
	EndpointID      string          `json:"endpoint_id"`
	UptimeSec       uint64          `json:"uptime_sec"`
	ActiveTest      *ActiveTest     `json:"active_test"`
	TestsToday      int             `json:"tests_today"`
	BytesToday      uint64          `json:"bytes_today"`
	NetworkPosition NetworkPosition `json:"network_position,omitempty"`
}

// ActiveTest describes a running test in a StatusSnapshot. TestType must be
// one the appliance knows (TestThroughput or TestUDPEcho); StartedAt is
// RFC 3339.
type ActiveTest struct {
	TestID       string `json:"test_id"`
	TestType     string `json:"test_type"`
	PeerID       string `json:"peer_id"`
	StartedAt    string `json:"started_at"`
	RemainingSec uint64 `json:"remaining_sec"`
}

// GetPathMeta asks for PathMeta, {"type":"get_path_meta"}.
type GetPathMeta struct{}

// PathMeta reports host metadata. CPULoad is a fraction (0.0-1.0, the Rust
// doc says "0.0 - 1.0+"), memory is in MiB, MTU encodes as null when
// unknown.
type PathMeta struct {
	CPULoad       float64    `json:"cpu_load"`
	MemoryUsedMB  uint64     `json:"memory_used_mb"`
	MemoryTotalMB uint64     `json:"memory_total_mb"`
	LoadAvg       [3]float64 `json:"load_avg"`
	MTU           *int       `json:"mtu"`
	TimeSynced    bool       `json:"time_synced"`
	BuildVersion  string     `json:"build_version"`
	BuildHash     string     `json:"build_hash"`
}

// PairRequest presents a pairing code.
type PairRequest struct {
	Token string `json:"token"`
}

// PairResponse answers PairRequest; EndpointID (the reflector's) is omitted
// when nil, as in Rust.
type PairResponse struct {
	Success    bool    `json:"success"`
	Message    string  `json:"message"`
	EndpointID *string `json:"endpoint_id,omitempty"`
}

// Error is the generic error answer. It implements the error interface so a
// client can return it; Code is CodeUnexpected, CodePairingRequired, ...
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Error implements the error interface.
func (e Error) Error() string {
	return "pp-link error " + strconv.Itoa(e.Code) + ": " + e.Message
}

// TestResultRequest (extension, type "get_test_result") asks the server for
// its own view of a test the peer owns; answered with TestResult or Error.
type TestResultRequest struct {
	TestID string `json:"test_id"`
}

// TestResult (extension, type "test_result") is the server-side outcome of a
// test. Summary carries a test-type specific JSON object when present.
type TestResult struct {
	TestID        string          `json:"test_id"`
	TestType      string          `json:"test_type"`
	State         TestState       `json:"state"`
	BytesSent     int64           `json:"bytes_sent"`
	BytesReceived int64           `json:"bytes_received"`
	DurationSec   float64         `json:"duration_sec"`
	EndReason     string          `json:"end_reason,omitempty"`
	Summary       json.RawMessage `json:"summary,omitempty"`
}

// TunnelAttach (extension, type "tunnel_attach") is the first and only frame
// on a fresh connection that carries one stream of a tunneled test.
// StreamKind is ProtocolTCP (the default when empty) or ProtocolUDP.
type TunnelAttach struct {
	TestID     string `json:"test_id"`
	Token      string `json:"token"`
	StreamKind string `json:"stream_kind,omitempty"`
}

// TunnelAttachResult (extension, type "tunnel_attached") answers
// TunnelAttach. When OK is true the connection is a raw byte pipe from the
// next byte on.
type TunnelAttachResult struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// MessageType implements Message.
func (Hello) MessageType() string { return "hello" }

// MessageType implements Message.
func (ServerHello) MessageType() string { return "server_hello" }

// MessageType implements Message.
func (SessionRequest) MessageType() string { return "session_request" }

// MessageType implements Message.
func (SessionGrant) MessageType() string { return "session_grant" }

// MessageType implements Message.
func (SessionDeny) MessageType() string { return "session_deny" }

// MessageType implements Message.
func (SessionClose) MessageType() string { return "session_close" }

// MessageType implements Message.
func (OK) MessageType() string { return "ok" }

// MessageType implements Message.
func (GetStatus) MessageType() string { return "get_status" }

// MessageType implements Message.
func (StatusSnapshot) MessageType() string { return "status_snapshot" }

// MessageType implements Message.
func (GetPathMeta) MessageType() string { return "get_path_meta" }

// MessageType implements Message.
func (PathMeta) MessageType() string { return "path_meta" }

// MessageType implements Message.
func (PairRequest) MessageType() string { return "pair_request" }

// MessageType implements Message.
func (PairResponse) MessageType() string { return "pair_response" }

// MessageType implements Message.
func (Error) MessageType() string { return "error" }

// MessageType implements Message.
func (TestResultRequest) MessageType() string { return "get_test_result" }

// MessageType implements Message.
func (TestResult) MessageType() string { return "test_result" }

// MessageType implements Message.
func (TunnelAttach) MessageType() string { return "tunnel_attach" }

// MessageType implements Message.
func (TunnelAttachResult) MessageType() string { return "tunnel_attached" }

// registry maps every type tag to a constructor of a zero *T.
var registry = map[string]func() Message{
	"hello":           func() Message { return new(Hello) },
	"server_hello":    func() Message { return new(ServerHello) },
	"session_request": func() Message { return new(SessionRequest) },
	"session_grant":   func() Message { return new(SessionGrant) },
	"session_deny":    func() Message { return new(SessionDeny) },
	"session_close":   func() Message { return new(SessionClose) },
	"ok":              func() Message { return new(OK) },
	"get_status":      func() Message { return new(GetStatus) },
	"status_snapshot": func() Message { return new(StatusSnapshot) },
	"get_path_meta":   func() Message { return new(GetPathMeta) },
	"path_meta":       func() Message { return new(PathMeta) },
	"pair_request":    func() Message { return new(PairRequest) },
	"pair_response":   func() Message { return new(PairResponse) },
	"error":           func() Message { return new(Error) },
	"get_test_result": func() Message { return new(TestResultRequest) },
	"test_result":     func() Message { return new(TestResult) },
	"tunnel_attach":   func() Message { return new(TunnelAttach) },
	"tunnel_attached": func() Message { return new(TunnelAttachResult) },
}
