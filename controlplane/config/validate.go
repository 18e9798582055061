package config

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
)

// Bounds that are not a matter of taste.
const (
	maxSeconds      = 86400 // a day; also iperf3's longest test
	maxStreams      = 128   // iperf3's stream limit
	maxALPNLen      = 255   // TLS ALPN protocol name limit
	maxUnixSockPath = 107   // sun_path on Linux, without the NUL
)

// LogLevels are the accepted logging.level values.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// Validate checks every value and normalises access.authorized_peers to
// canonical Endpoint IDs (dropping duplicates). It returns nil or an *Error
// listing every problem. Parse calls it; callers that build a Config in
// code may too.
func (c *Config) Validate() error {
	if errs := c.validate(); len(errs) > 0 {
		return &Error{Name: "config", Errs: errs}
	}
	return nil
}

func (c *Config) validate() []error {
	var v validator

	v.absPath("identity.private_key_path", c.Identity.PrivateKeyPath)

	listenPort := v.hostPort("network.listen_address", c.Network.ListenAddress)
	if c.Network.ALPN == "" || len(c.Network.ALPN) > maxALPNLen {
		v.add("network.alpn", strconv.Quote(c.Network.ALPN), fmt.Sprintf("must be 1 to %d bytes (e.g. %q)", maxALPNLen, link.ALPN))
	}
	if c.Network.Mode != ModeTunneled && c.Network.Mode != ModeDirectEphemeral && c.Network.Mode != ModeAuto {
		v.add("network.mode", strconv.Quote(c.Network.Mode), "unknown mode; allowed: \""+ModeTunneled+"\", \""+ModeDirectEphemeral+"\", \""+ModeAuto+"\"")
	}
	start, end := c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd
	okStart := v.intRange("network.data_port_range_start", int64(start), 1, 65535)
	okEnd := v.intRange("network.data_port_range_end", int64(end), 1, 65535)
	switch {
	case okStart && okEnd && start > end:
		v.add("network.data_port_range_end", strconv.Itoa(end), fmt.Sprintf("the range %d-%d is empty; must be at least data_port_range_start (%d)", start, end, start))
	case okStart && okEnd && listenPort > 0 && listenPort >= start && listenPort <= end:
		v.add("network.data_port_range_start", strconv.Itoa(start), fmt.Sprintf("the range %d-%d contains the control port %d of network.listen_address; move one of them", start, end, listenPort))
	}

	peers := make([]string, 0, len(c.Access.AuthorizedPeers))
	for i, p := range c.Access.AuthorizedPeers {
		id, err := identity.ParseEndpointID(p)
		if err != nil {
			v.errs = append(v.errs, &FieldError{Key: fmt.Sprintf("access.authorized_peers[%d]", i), Problem: err.Error(), Err: err})
			continue
		}
		if !slices.Contains(peers, id.String()) {
			peers = append(peers, id.String())
		}
	}
	c.Access.AuthorizedPeers = peers

	v.intRange("quotas.max_test_duration_sec", int64(c.Quotas.MaxTestDurationSec), 1, maxSeconds)
	v.intRange("quotas.max_concurrent_tests", int64(c.Quotas.MaxConcurrentTests), 1, 65535)
	v.intRange("quotas.max_tests_per_hour_per_peer", int64(c.Quotas.MaxTestsPerHourPerPeer), 1, 1<<31-1)
	v.intRange("quotas.max_bytes_per_day_per_peer", c.Quotas.MaxBytesPerDayPerPeer, 1, 1<<63-1)
	v.intRange("quotas.cooldown_sec", int64(c.Quotas.CooldownSec), 0, maxSeconds)
	v.intRange("quotas.echo_max_pps", int64(c.Quotas.EchoMaxPPS), 1, 10_000_000)

	if v.intRange("iperf3.max_streams", int64(c.Iperf3.MaxStreams), 1, maxStreams) &&
		v.intRange("iperf3.default_streams", int64(c.Iperf3.DefaultStreams), 1, maxStreams) &&
		c.Iperf3.DefaultStreams > c.Iperf3.MaxStreams {
		v.add("iperf3.default_streams", strconv.Itoa(c.Iperf3.DefaultStreams), fmt.Sprintf("must not exceed iperf3.max_streams (%d)", c.Iperf3.MaxStreams))
	}

	if !slices.Contains(LogLevels, c.Logging.Level) {
		v.add("logging.level", strconv.Quote(c.Logging.Level), "unknown level; allowed: "+strings.Join(LogLevels, ", "))
	}
	v.absPath("logging.audit_log_path", c.Logging.AuditLogPath)

	if v.absPath("state.dir", c.State.Dir) && len(c.AdminSocket()) > maxUnixSockPath {
		v.add("state.dir", strconv.Quote(c.State.Dir), fmt.Sprintf("too long: the admin socket path %s must be at most %d bytes", adminSocketName, maxUnixSockPath))
	}

	if c.Metrics.ListenAddress != "" {
		v.hostPort("metrics.listen_address", c.Metrics.ListenAddress)
	}

	l := c.Limits
	v.intRange("limits.max_control_connections", int64(l.MaxControlConnections), 1, 1<<20)
	v.intRange("limits.max_handshakes", int64(l.MaxHandshakes), 1, 1<<20)
	v.intRange("limits.handshake_timeout_sec", int64(l.HandshakeTimeoutSec), 1, maxSeconds)
	v.intRange("limits.new_conns_per_sec_per_addr", int64(l.NewConnsPerSecPerAddr), 1, 1<<20)
	v.intRange("limits.new_conns_burst_per_addr", int64(l.NewConnsBurstPerAddr), 1, 1<<20)
	v.intRange("limits.idle_timeout_sec", int64(l.IdleTimeoutSec), 1, maxSeconds)
	v.intRange("limits.max_frames_per_sec", int64(l.MaxFramesPerSec), 1, 1<<20)
	v.intRange("limits.shutdown_grace_sec", int64(l.ShutdownGraceSec), 0, maxSeconds)
	v.intRange("limits.lame_duck_sec", int64(l.LameDuckSec), 0, maxSeconds)
	v.intRange("limits.max_conns_per_peer", int64(l.MaxConnsPerPeer), 1, 1<<20)
	v.intRange("limits.max_conns_per_addr", int64(l.MaxConnsPerAddr), 1, 1<<20)
	v.intRange("limits.max_pairing_connections", int64(l.MaxPairingConnections), 1, 1<<20)
	v.intRange("limits.max_handshakes_per_addr", int64(l.MaxHandshakesPerAddr), 1, 1<<20)
	return v.errs
}

// advice lists valid settings that are probably not what was meant.
func (c *Config) advice() []string {
	var w []string
	if !c.Quotas.AllowUDPEcho && !c.Quotas.AllowThroughput {
		w = append(w, "config: quotas.allow_udp_echo and quotas.allow_throughput are both false: every test request will be denied")
	}
	if n := c.Network.DataPortRangeEnd - c.Network.DataPortRangeStart + 1; c.Network.DirectPorts() && c.Quotas.MaxConcurrentTests > n {
		w = append(w, fmt.Sprintf("config: quotas.max_concurrent_tests = %d but the data port range has %d ports: direct_ephemeral tests beyond %d are refused", c.Quotas.MaxConcurrentTests, n, n))
	}
	return w
}

// validator collects FieldErrors.
type validator struct{ errs []error }

func (v *validator) add(key, value, problem string) {
	v.errs = append(v.errs, &FieldError{Key: key, Value: value, Problem: problem})
}

func (v *validator) intRange(key string, n, lo, hi int64) bool {
	if n >= lo && n <= hi {
		return true
	}
	switch {
	case lo == 1 && hi >= 1<<31-1:
		v.add(key, strconv.FormatInt(n, 10), "must be at least 1")
	case lo == 0 && n < 0:
		v.add(key, strconv.FormatInt(n, 10), fmt.Sprintf("must not be negative (allowed: 0 to %d)", hi))
	default:
		v.add(key, strconv.FormatInt(n, 10), fmt.Sprintf("out of range; allowed: %d to %d", lo, hi))
	}
	return false
}

func (v *validator) absPath(key, p string) bool {
	if !filepath.IsAbs(p) {
		v.add(key, strconv.Quote(p), "must be an absolute path")
		return false
	}
	return true
}

// hostPort checks a listen address and returns its port, or -1.
func (v *validator) hostPort(key, addr string) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errs = append(v.errs, &FieldError{Key: key, Value: strconv.Quote(addr), Problem: "not host:port (e.g. \"0.0.0.0:4000\", \"[::]:4000\", \":4000\")", Err: err})
		return -1
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		v.add(key, strconv.Quote(addr), fmt.Sprintf("port %q must be a number from 0 to 65535", port))
		return -1
	}
	if host != "" && strings.ContainsAny(host, " \t/") {
		v.add(key, strconv.Quote(addr), fmt.Sprintf("host %q must be an IP address or a host name", host))
		return -1
	}
	return n
}
