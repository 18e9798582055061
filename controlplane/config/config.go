// Package config holds the reflector's configuration: the TOML schema with
// its defaults, strict parsing that reports every problem at once, and the
// lookup of the configuration file (flag, environment, system, user).
package config

import (
	"bytes"
	_ "embed"
	"path/filepath"

	"github.com/BurntSushi/toml"

	"github.com/packetparamedic/reflector/controlplane/link"
)

// Data plane modes (network.mode).
const (
	// ModeTunneled runs every test through the control port (only 4000
	// open); a client that does not announce the tunnel feature in hello
	// (the shipped appliance) is refused with invalid_params.
	ModeTunneled = "tunneled"
	// ModeDirectEphemeral grants a port of the data port range.
	ModeDirectEphemeral = "direct_ephemeral"
	// ModeAuto tunnels clients that announce the tunnel feature and grants
	// the others a port of the data port range (open both).
	ModeAuto = "auto"
)

// Tunnels reports whether the mode serves tunneled tests (tunneled, auto).
func (n NetworkConfig) Tunnels() bool { return n.Mode != ModeDirectEphemeral }

// DirectPorts reports whether the mode grants data ports (direct_ephemeral,
// auto).
func (n NetworkConfig) DirectPorts() bool { return n.Mode != ModeTunneled }

// Well-known locations.
const (
	// DefaultStateDir holds the key, audit log, peers, quotas and admin socket.
	DefaultStateDir = "/var/lib/reflector"
	// SystemConfigPath is the system-wide configuration file.
	SystemConfigPath = "/etc/reflector/reflector.toml"
	// EnvConfig names the environment variable holding a configuration path.
	EnvConfig = "REFLECTOR_CONFIG"
)

// File names inside the state directory.
const (
	keyFileName     = "identity.ed25519"
	auditFileName   = "audit.jsonl"
	peersFileName   = "peers.json"
	quotasFileName  = "quotas.json"
	adminSocketName = "admin.sock"
)

// Config is the whole reflector configuration. Every key is optional;
// Default shows the values used for missing keys.
type Config struct {
	Identity IdentityConfig `toml:"identity"`
	Network  NetworkConfig  `toml:"network"`
	Access   AccessConfig   `toml:"access"`
	Quotas   QuotasConfig   `toml:"quotas"`
	Iperf3   Iperf3Config   `toml:"iperf3"`
	Logging  LoggingConfig  `toml:"logging"`
	State    StateConfig    `toml:"state"`
	Metrics  MetricsConfig  `toml:"metrics"`
	Limits   LimitsConfig   `toml:"limits"`

	warnings []string // from Parse: accepted but ignored keys and the like
}

// IdentityConfig locates the Ed25519 key.
type IdentityConfig struct {
	// PrivateKeyPath is the raw 32-byte seed file; default <state dir>/identity.ed25519.
	PrivateKeyPath string `toml:"private_key_path"`
}

// NetworkConfig holds the control listener and the data plane mode.
type NetworkConfig struct {
	ListenAddress      string `toml:"listen_address"`        // host:port for pp-link/1 (TCP and QUIC)
	ALPN               string `toml:"alpn"`                  // TLS application protocol
	Mode               string `toml:"mode"`                  // ModeTunneled, ModeDirectEphemeral or ModeAuto
	DataPortRangeStart int    `toml:"data_port_range_start"` // first port for direct_ephemeral tests
	DataPortRangeEnd   int    `toml:"data_port_range_end"`   // last port (inclusive)
}

// AccessConfig decides who may run tests.
type AccessConfig struct {
	PairingEnabled  bool     `toml:"pairing_enabled"`
	AuthorizedPeers []string `toml:"authorized_peers"` // canonical Endpoint IDs after Parse
}

// QuotasConfig limits what peers may ask for.
type QuotasConfig struct {
	MaxTestDurationSec     int   `toml:"max_test_duration_sec"`
	MaxConcurrentTests     int   `toml:"max_concurrent_tests"`
	MaxTestsPerHourPerPeer int   `toml:"max_tests_per_hour_per_peer"`
	MaxBytesPerDayPerPeer  int64 `toml:"max_bytes_per_day_per_peer"`
	CooldownSec            int   `toml:"cooldown_sec"`
	AllowUDPEcho           bool  `toml:"allow_udp_echo"`
	AllowThroughput        bool  `toml:"allow_throughput"`
	EchoMaxPPS             int   `toml:"echo_max_pps"` // UDP echo packets per second per session
}

// Iperf3Config holds the throughput test stream limits. Path is accepted for
// compatibility with the earlier implementation and ignored: the iperf3
// server is built in.
type Iperf3Config struct {
	Path           string `toml:"path,omitempty"`
	DefaultStreams int    `toml:"default_streams"`
	MaxStreams     int    `toml:"max_streams"`
}

// LoggingConfig holds the log level and the audit log location.
type LoggingConfig struct {
	Level        string `toml:"level"`          // trace, debug, info, warn, error
	AuditLogPath string `toml:"audit_log_path"` // default <state dir>/audit.jsonl
}

// StateConfig locates the state directory.
type StateConfig struct {
	Dir string `toml:"dir"`
}

// MetricsConfig holds the /metrics and /health listener; empty means off.
type MetricsConfig struct {
	ListenAddress string `toml:"listen_address"`
}

// LimitsConfig bounds the control plane's resources.
type LimitsConfig struct {
	MaxControlConnections int `toml:"max_control_connections"`
	MaxHandshakes         int `toml:"max_handshakes"`
	HandshakeTimeoutSec   int `toml:"handshake_timeout_sec"`
	NewConnsPerSecPerAddr int `toml:"new_conns_per_sec_per_addr"`
	NewConnsBurstPerAddr  int `toml:"new_conns_burst_per_addr"`
	IdleTimeoutSec        int `toml:"idle_timeout_sec"`
	MaxFramesPerSec       int `toml:"max_frames_per_sec"`
	ShutdownGraceSec      int `toml:"shutdown_grace_sec"`
	// LameDuckSec is how long the server reports unready after SIGTERM
	// while still serving, before the listener closes (0: close at once).
	LameDuckSec int `toml:"lame_duck_sec"`
	// Per-source caps (issue 11): established connections per peer key and
	// per source address, connections of not-yet-paired keys while a
	// pairing window is open, TLS handshakes in flight per address.
	MaxConnsPerPeer       int `toml:"max_conns_per_peer"`
	MaxConnsPerAddr       int `toml:"max_conns_per_addr"`
	MaxPairingConnections int `toml:"max_pairing_connections"`
	MaxHandshakesPerAddr  int `toml:"max_handshakes_per_addr"`
}

// Default returns the built-in configuration.
func Default() *Config {
	c := &Config{
		Network: NetworkConfig{
			ListenAddress:      "0.0.0.0:4000",
			ALPN:               link.ALPN,
			Mode:               ModeTunneled,
			DataPortRangeStart: 5201,
			DataPortRangeEnd:   5210,
		},
		Access: AccessConfig{AuthorizedPeers: []string{}},
		Quotas: QuotasConfig{
			MaxTestDurationSec:     60,
			MaxConcurrentTests:     1,
			MaxTestsPerHourPerPeer: 10,
			MaxBytesPerDayPerPeer:  5_000_000_000,
			CooldownSec:            5,
			AllowUDPEcho:           true,
			AllowThroughput:        true,
			EchoMaxPPS:             20000,
		},
		Iperf3:  Iperf3Config{Path: "iperf3", DefaultStreams: 4, MaxStreams: 8},
		Logging: LoggingConfig{Level: "info"},
		State:   StateConfig{Dir: DefaultStateDir},
		Limits: LimitsConfig{
			MaxControlConnections: 2048,
			MaxHandshakes:         256,
			HandshakeTimeoutSec:   10,
			NewConnsPerSecPerAddr: 20,
			NewConnsBurstPerAddr:  40,
			IdleTimeoutSec:        300,
			MaxFramesPerSec:       50,
			ShutdownGraceSec:      5,
			MaxConnsPerPeer:       32,
			MaxConnsPerAddr:       64,
			MaxPairingConnections: 8,
			MaxHandshakesPerAddr:  16,
		},
	}
	c.deriveStatePaths(true, true)
	return c
}

// deriveStatePaths points the key and/or the audit log into the state dir.
func (c *Config) deriveStatePaths(key, audit bool) {
	if key {
		c.Identity.PrivateKeyPath = filepath.Join(c.State.Dir, keyFileName)
	}
	if audit {
		c.Logging.AuditLogPath = filepath.Join(c.State.Dir, auditFileName)
	}
}

// PeersFile is the persisted peer allowlist grown by pairing.
func (c *Config) PeersFile() string { return filepath.Join(c.State.Dir, peersFileName) }

// QuotaFile is the persisted per-peer quota accounting.
func (c *Config) QuotaFile() string { return filepath.Join(c.State.Dir, quotasFileName) }

// AdminSocket is the Unix socket of the admin interface.
func (c *Config) AdminSocket() string { return filepath.Join(c.State.Dir, adminSocketName) }

// Warnings returns what Parse accepted but wants the operator to know (keys
// that are ignored, settings that make little sense), for logging once.
func (c *Config) Warnings() []string { return append([]string(nil), c.warnings...) }

// TOML renders the effective configuration as TOML that Parse reads back to
// the same values. The ignored iperf3 path is left out.
func (c *Config) TOML() string {
	shown := *c
	shown.Iperf3.Path = ""
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(shown); err != nil {
		// Only strings, integers, booleans and string slices: cannot fail.
		panic("config: encode TOML: " + err.Error())
	}
	return buf.String()
}

//go:embed default.toml
var defaultTOML string

// DefaultTOML returns a commented configuration file listing every key with
// its default value.
func DefaultTOML() string { return defaultTOML }
