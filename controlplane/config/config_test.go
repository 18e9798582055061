package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

const (
	peerA      = "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"
	peerB      = "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66W0-A"
	peerBBadCk = "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66W0-B"
)

func TestDefault(t *testing.T) {
	c := Default()
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"identity.private_key_path", c.Identity.PrivateKeyPath, "/var/lib/reflector/identity.ed25519"},
		{"network.listen_address", c.Network.ListenAddress, "0.0.0.0:4000"},
		{"network.alpn", c.Network.ALPN, "pp-link/1"},
		{"network.mode", c.Network.Mode, "tunneled"},
		{"network.data_port_range_start", c.Network.DataPortRangeStart, 5201},
		{"network.data_port_range_end", c.Network.DataPortRangeEnd, 5210},
		{"access.pairing_enabled", c.Access.PairingEnabled, false},
		{"access.authorized_peers", len(c.Access.AuthorizedPeers), 0},
		{"quotas.max_test_duration_sec", c.Quotas.MaxTestDurationSec, 60},
		{"quotas.max_concurrent_tests", c.Quotas.MaxConcurrentTests, 1},
		{"quotas.max_tests_per_hour_per_peer", c.Quotas.MaxTestsPerHourPerPeer, 10},
		{"quotas.max_bytes_per_day_per_peer", c.Quotas.MaxBytesPerDayPerPeer, int64(5_000_000_000)},
		{"quotas.cooldown_sec", c.Quotas.CooldownSec, 5},
		{"quotas.allow_udp_echo", c.Quotas.AllowUDPEcho, true},
		{"quotas.allow_throughput", c.Quotas.AllowThroughput, true},
		{"quotas.echo_max_pps", c.Quotas.EchoMaxPPS, 20000},
		{"iperf3.path", c.Iperf3.Path, "iperf3"},
		{"iperf3.default_streams", c.Iperf3.DefaultStreams, 4},
		{"iperf3.max_streams", c.Iperf3.MaxStreams, 8},
		{"logging.level", c.Logging.Level, "info"},
		{"logging.audit_log_path", c.Logging.AuditLogPath, "/var/lib/reflector/audit.jsonl"},
		{"state.dir", c.State.Dir, "/var/lib/reflector"},
		{"metrics.listen_address", c.Metrics.ListenAddress, ""},
		{"limits.max_control_connections", c.Limits.MaxControlConnections, 2048},
		{"limits.max_handshakes", c.Limits.MaxHandshakes, 256},
		{"limits.handshake_timeout_sec", c.Limits.HandshakeTimeoutSec, 10},
		{"limits.new_conns_per_sec_per_addr", c.Limits.NewConnsPerSecPerAddr, 20},
		{"limits.new_conns_burst_per_addr", c.Limits.NewConnsBurstPerAddr, 40},
		{"limits.idle_timeout_sec", c.Limits.IdleTimeoutSec, 300},
		{"limits.max_frames_per_sec", c.Limits.MaxFramesPerSec, 50},
		{"limits.shutdown_grace_sec", c.Limits.ShutdownGraceSec, 5},
		{"limits.lame_duck_sec", c.Limits.LameDuckSec, 0},
		{"PeersFile", c.PeersFile(), "/var/lib/reflector/peers.json"},
		{"QuotaFile", c.QuotaFile(), "/var/lib/reflector/quotas.json"},
		{"AdminSocket", c.AdminSocket(), "/var/lib/reflector/admin.sock"},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default() does not validate: %v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Default() has warnings %v", w)
	}
}

func TestDefaultTOML(t *testing.T) {
	c, err := Parse([]byte(DefaultTOML()), "default.toml")
	if err != nil {
		t.Fatalf("Parse(default.toml): %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("default.toml parses to\n%+v\nwant Default()\n%+v", c, Default())
	}
	// Every key is shown, set or (for derived and ignored ones) commented out.
	for sec, keys := range sectionFields(Default()) {
		if !strings.Contains(DefaultTOML(), "\n["+sec+"]\n") {
			t.Errorf("default.toml lacks section [%s]", sec)
		}
		for k := range keys {
			if !regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(k) + ` = `).MatchString(DefaultTOML()) {
				t.Errorf("default.toml does not show %s.%s", sec, k)
			}
		}
	}
}

func TestTOMLRoundTrip(t *testing.T) {
	c := Default()
	c.Network.ListenAddress = "[::1]:4100"
	c.Network.Mode = ModeDirectEphemeral
	c.Access.PairingEnabled = true
	c.Access.AuthorizedPeers = []string{peerA, peerB}
	c.Quotas.MaxBytesPerDayPerPeer = 1 << 40
	c.Quotas.AllowUDPEcho = false
	c.Logging.Level = "debug"
	c.State.Dir = "/srv/reflector"
	c.Identity.PrivateKeyPath = "/etc/reflector/key"
	c.Logging.AuditLogPath = "/srv/reflector/audit.jsonl"
	c.Metrics.ListenAddress = "127.0.0.1:9100"
	out := c.TOML()
	if strings.Contains(out, "path = \"iperf3\"") {
		t.Errorf("TOML() shows the ignored iperf3 path:\n%s", out)
	}
	back, err := Parse([]byte(out), "rendered")
	if err != nil {
		t.Fatalf("Parse(TOML()): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip changed the config:\n%s\ngot  %+v\nwant %+v", out, back, c)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name     string
		toml     string
		check    func(t *testing.T, c *Config)
		warnings []string // substrings, one per expected warning
	}{
		{
			name:  "empty file is the defaults",
			toml:  "",
			check: func(t *testing.T, c *Config) { eq(t, c, Default()) },
		},
		{
			name: "dotted keys and inline tables",
			toml: "network.mode = \"direct_ephemeral\"\nlogging = {level = \"error\"}\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Network.Mode, ModeDirectEphemeral)
				eq(t, c.Logging.Level, "error")
			},
		},
		{
			name: "state dir moves key and audit log",
			toml: "[state]\ndir = \"/x\"\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Identity.PrivateKeyPath, "/x/identity.ed25519")
				eq(t, c.Logging.AuditLogPath, "/x/audit.jsonl")
				eq(t, c.PeersFile(), "/x/peers.json")
				eq(t, c.QuotaFile(), "/x/quotas.json")
				eq(t, c.AdminSocket(), "/x/admin.sock")
			},
		},
		{
			name: "explicit paths stay put when the state dir moves",
			toml: "[state]\ndir = \"/x\"\n[identity]\nprivate_key_path = \"/keys/id\"\n[logging]\naudit_log_path = \"/log/a.jsonl\"\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Identity.PrivateKeyPath, "/keys/id")
				eq(t, c.Logging.AuditLogPath, "/log/a.jsonl")
			},
		},
		{
			name: "peers normalised and deduplicated",
			toml: "[access]\nauthorized_peers = [\"" + strings.ToLower(peerA) + "\", \" " + strings.ReplaceAll(peerB, "-", "") + "\", \"" + peerA + "\"]\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Access.AuthorizedPeers, []string{peerA, peerB})
			},
		},
		{
			name: "the appliance-side Rust example file loads",
			toml: `[identity]
private_key_path = "/var/lib/reflector/identity.key"

[network]
listen_address = "0.0.0.0:4000"
listen_address_health = "0.0.0.0:7301"
mode = "direct_ephemeral"
data_port_range_start = 5201
data_port_range_end = 5210

[access]
authorized_peers = ["` + peerB + `"]
pairing_enabled = true

[iperf3]
path = "/usr/bin/iperf3"
default_streams = 4
max_streams = 8

[logging]
level = "debug"
audit_log_path = "/var/lib/reflector/audit.jsonl"

[quotas]
max_concurrent_tests = 4
`,
			check: func(t *testing.T, c *Config) {
				eq(t, c.Identity.PrivateKeyPath, "/var/lib/reflector/identity.key")
				eq(t, c.Network.Mode, ModeDirectEphemeral)
				eq(t, c.Access.PairingEnabled, true)
				eq(t, c.Quotas.MaxConcurrentTests, 4)
				eq(t, c.Logging.Level, "debug")
			},
			warnings: []string{`network.listen_address_health = "0.0.0.0:7301" is ignored`, `iperf3.path = "/usr/bin/iperf3" is ignored`},
		},
		{
			name:     "no test type allowed",
			toml:     "[quotas]\nallow_udp_echo = false\nallow_throughput = false\n",
			warnings: []string{"every test request will be denied"},
		},
		{
			name:     "more concurrent direct tests than ports",
			toml:     "[network]\nmode = \"direct_ephemeral\"\ndata_port_range_start = 6000\ndata_port_range_end = 6001\n[quotas]\nmax_concurrent_tests = 3\n",
			warnings: []string{"data port range has 2 ports"},
		},
		{
			name:     "auto mode grants data ports too",
			toml:     "[network]\nmode = \"auto\"\ndata_port_range_start = 6000\ndata_port_range_end = 6001\n[quotas]\nmax_concurrent_tests = 3\n",
			warnings: []string{"data port range has 2 ports"},
			check: func(t *testing.T, c *Config) {
				eq(t, c.Network.Mode, ModeAuto)
				eq(t, c.Network.Tunnels(), true)
				eq(t, c.Network.DirectPorts(), true)
			},
		},
		{
			name: "edge values",
			toml: "[network]\nlisten_address = \":0\"\ndata_port_range_start = 1\ndata_port_range_end = 1\n[quotas]\ncooldown_sec = 0\n[iperf3]\ndefault_streams = 128\nmax_streams = 128\n[limits]\nshutdown_grace_sec = 0\n[metrics]\nlisten_address = \"localhost:9100\"\n",
			check: func(t *testing.T, c *Config) {
				eq(t, c.Network.DataPortRangeEnd, 1)
				eq(t, c.Iperf3.MaxStreams, 128)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			w := c.Warnings()
			if len(w) != len(tc.warnings) {
				t.Fatalf("warnings %q, want %d", w, len(tc.warnings))
			}
			for i, want := range tc.warnings {
				if !strings.Contains(w[i], want) {
					t.Errorf("warning %q does not contain %q", w[i], want)
				}
			}
		})
	}
}

func eq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // every substring must appear in the message of one error
		is   error    // extra errors.Is target
	}{
		{name: "unknown key", toml: "[network]\nlisten_adress = \"0.0.0.0:1\"\n", want: []string{"network.listen_adress: unknown key", "listen_address"}},
		{name: "unknown section", toml: "[netwrk]\nmode = \"tunneled\"\n", want: []string{"netwrk: unknown section", "network"}},
		{name: "top-level key", toml: "level = \"info\"\n", want: []string{"level: unknown section or key"}},
		{name: "section not a table", toml: "network = 5\n", want: []string{"network = 5: must be a table [network]"}},
		{name: "array of tables", toml: "[[network]]\nmode = \"tunneled\"\n", want: []string{"network = [[array of tables]]: must be a table [network]"}},
		{name: "sub-table", toml: "[network.tls]\nx = 1\n", want: []string{"network.tls: unknown key; [network] takes: alpn, data_port_range_end"}},
		{name: "dotted key too deep", toml: "[network]\nmode.x = 1\n", want: []string{"network.mode = {table}: wrong type, expected a string"}},
		{name: "string for int", toml: "[network]\ndata_port_range_start = \"5201\"\n", want: []string{`network.data_port_range_start = "5201": wrong type, expected an integer`}},
		{name: "float for int", toml: "[quotas]\nmax_bytes_per_day_per_peer = 5e9\n", want: []string{"quotas.max_bytes_per_day_per_peer = 5e+09: wrong type, expected an integer"}},
		{name: "string for bool", toml: "[access]\npairing_enabled = \"yes\"\n", want: []string{`access.pairing_enabled = "yes": wrong type, expected true or false`}},
		{name: "int for string", toml: "[logging]\nlevel = 3\n", want: []string{"logging.level = 3: wrong type, expected a string"}},
		{name: "string for array", toml: "[access]\nauthorized_peers = \"" + peerA + "\"\n", want: []string{"access.authorized_peers = \"PP-7DN2", "expected an array of strings"}},
		{name: "mixed array", toml: "[access]\nauthorized_peers = [\"" + peerA + "\", 5]\n", want: []string{"access.authorized_peers = [", ", 5]: wrong type"}},
		{name: "legacy key of wrong type", toml: "[network]\ndeployment_mode = 1\n", want: []string{"network.deployment_mode = 1: wrong type, expected a string"}},
		{name: "ports reversed", toml: "[network]\ndata_port_range_start = 5210\ndata_port_range_end = 5201\n", want: []string{"network.data_port_range_end = 5201", "5210-5201 is empty"}},
		{name: "port zero", toml: "[network]\ndata_port_range_start = 0\n", want: []string{"network.data_port_range_start = 0: out of range; allowed: 1 to 65535"}},
		{name: "port too high", toml: "[network]\ndata_port_range_end = 70000\n", want: []string{"network.data_port_range_end = 70000: out of range; allowed: 1 to 65535"}},
		{name: "range holds control port", toml: "[network]\nlisten_address = \":5205\"\n", want: []string{"network.data_port_range_start = 5201", "control port 5205"}},
		{name: "unknown mode", toml: "[network]\nmode = \"direct\"\n", want: []string{`network.mode = "direct": unknown mode; allowed: "tunneled", "direct_ephemeral", "auto"`}},
		{name: "empty alpn", toml: "[network]\nalpn = \"\"\n", want: []string{`network.alpn = "": must be 1 to 255 bytes`}},
		{name: "listen address without port", toml: "[network]\nlisten_address = \"0.0.0.0\"\n", want: []string{`network.listen_address = "0.0.0.0": not host:port`}},
		{name: "listen address bad port", toml: "[network]\nlisten_address = \"0.0.0.0:http\"\n", want: []string{`network.listen_address = "0.0.0.0:http": port "http" must be a number from 0 to 65535`}},
		{name: "listen address port too high", toml: "[network]\nlisten_address = \"0.0.0.0:65536\"\n", want: []string{`port "65536"`}},
		{name: "metrics address", toml: "[metrics]\nlisten_address = \"9100\"\n", want: []string{`metrics.listen_address = "9100": not host:port`}},
		{name: "metrics host with space", toml: "[metrics]\nlisten_address = \"a b:9100\"\n", want: []string{`metrics.listen_address = "a b:9100": host "a b"`}},
		{name: "peer bad checksum", toml: "[access]\nauthorized_peers = [\"" + peerA + "\", \"" + peerBBadCk + "\"]\n", want: []string{"access.authorized_peers[1]", peerBBadCk, "check character"}, is: identity.ErrBadChecksum},
		{name: "peer malformed", toml: "[access]\nauthorized_peers = [\"PP-1234\"]\n", want: []string{"access.authorized_peers[0]", `"PP-1234"`, "expected 53"}, is: identity.ErrInvalidID},
		{name: "zero duration", toml: "[quotas]\nmax_test_duration_sec = 0\n", want: []string{"quotas.max_test_duration_sec = 0: out of range; allowed: 1 to 86400"}},
		{name: "duration over a day", toml: "[quotas]\nmax_test_duration_sec = 86401\n", want: []string{"quotas.max_test_duration_sec = 86401"}},
		{name: "zero concurrent tests", toml: "[quotas]\nmax_concurrent_tests = 0\n", want: []string{"quotas.max_concurrent_tests = 0"}},
		{name: "negative tests per hour", toml: "[quotas]\nmax_tests_per_hour_per_peer = -1\n", want: []string{"quotas.max_tests_per_hour_per_peer = -1: must be at least 1"}},
		{name: "zero bytes per day", toml: "[quotas]\nmax_bytes_per_day_per_peer = 0\n", want: []string{"quotas.max_bytes_per_day_per_peer = 0: must be at least 1"}},
		{name: "negative cooldown", toml: "[quotas]\ncooldown_sec = -5\n", want: []string{"quotas.cooldown_sec = -5: must not be negative"}},
		{name: "zero echo pps", toml: "[quotas]\necho_max_pps = 0\n", want: []string{"quotas.echo_max_pps = 0"}},
		{name: "default over max streams", toml: "[iperf3]\ndefault_streams = 9\n", want: []string{"iperf3.default_streams = 9: must not exceed iperf3.max_streams (8)"}},
		{name: "zero streams", toml: "[iperf3]\nmax_streams = 0\n", want: []string{"iperf3.max_streams = 0: out of range; allowed: 1 to 128"}},
		{name: "too many streams", toml: "[iperf3]\nmax_streams = 129\n", want: []string{"iperf3.max_streams = 129"}},
		{name: "unknown level", toml: "[logging]\nlevel = \"verbose\"\n", want: []string{`logging.level = "verbose": unknown level; allowed: trace, debug, info, warn, error`}},
		{name: "relative key path", toml: "[identity]\nprivate_key_path = \"key\"\n", want: []string{`identity.private_key_path = "key": must be an absolute path`}},
		{name: "empty audit path", toml: "[logging]\naudit_log_path = \"\"\n", want: []string{`logging.audit_log_path = "": must be an absolute path`}},
		{name: "relative state dir", toml: "[state]\ndir = \"state\"\n", want: []string{`state.dir = "state": must be an absolute path`}},
		{name: "state dir too long for socket", toml: "[state]\ndir = \"/" + strings.Repeat("d", 100) + "\"\n", want: []string{"state.dir = \"/ddd", "admin socket"}},
		{name: "zero max connections", toml: "[limits]\nmax_control_connections = 0\n", want: []string{"limits.max_control_connections = 0"}},
		{name: "zero handshakes", toml: "[limits]\nmax_handshakes = 0\n", want: []string{"limits.max_handshakes = 0"}},
		{name: "zero handshake timeout", toml: "[limits]\nhandshake_timeout_sec = 0\n", want: []string{"limits.handshake_timeout_sec = 0"}},
		{name: "zero conn rate", toml: "[limits]\nnew_conns_per_sec_per_addr = 0\n", want: []string{"limits.new_conns_per_sec_per_addr = 0"}},
		{name: "zero burst", toml: "[limits]\nnew_conns_burst_per_addr = 0\n", want: []string{"limits.new_conns_burst_per_addr = 0"}},
		{name: "zero idle timeout", toml: "[limits]\nidle_timeout_sec = 0\n", want: []string{"limits.idle_timeout_sec = 0"}},
		{name: "zero frame rate", toml: "[limits]\nmax_frames_per_sec = 0\n", want: []string{"limits.max_frames_per_sec = 0"}},
		{name: "negative grace", toml: "[limits]\nshutdown_grace_sec = -1\n", want: []string{"limits.shutdown_grace_sec = -1: must not be negative"}},
		{name: "negative lame duck", toml: "[limits]\nlame_duck_sec = -1\n", want: []string{"limits.lame_duck_sec = -1: must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.toml), "bad.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error does not wrap %v: %v", tc.is, err)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Name != "bad.toml" || len(ce.Errs) != 1 {
				t.Fatalf("want one error in a *Error named bad.toml, got %v", err)
			}
			msg := ce.Errs[0].Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "bad.toml: 1 configuration error:\n  ") {
				t.Errorf("message %q does not start with the file name and count", err)
			}
		})
	}
}

func TestParseCollectsAllErrors(t *testing.T) {
	in := `
bogus = 1
[network]
mode = "fast"
data_port_range_start = "x"
[quotas]
max_concurrent_tests = 0
[logging]
level = "loud"
`
	_, err := Parse([]byte(in), "many.toml")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse error = %v, want *Error", err)
	}
	keys := make([]string, 0, len(ce.Errs))
	for _, e := range ce.Errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		keys = append(keys, fe.Key)
	}
	eq(t, keys, []string{"bogus", "network.data_port_range_start", "network.mode", "quotas.max_concurrent_tests", "logging.level"})
	if !strings.HasPrefix(err.Error(), "many.toml: 5 configuration errors:") || strings.Count(err.Error(), "\n  ") != 5 {
		t.Errorf("message:\n%v", err)
	}
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse([]byte("[network]\nmode = tunneled\n"), "syntax.toml")
	if err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), "syntax.toml") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %q does not name the file and line", err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("[logging]\nlevel = \"warn\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(good)
	if err != nil || c.Logging.Level != "warn" {
		t.Fatalf("LoadFile = %+v, %v", c, err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte("#"+strings.Repeat("x", maxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[logging]\nlevel = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(bad); err == nil || !strings.Contains(err.Error(), bad+": 1 configuration error") {
		t.Errorf("invalid file: %v", err)
	}
}

func TestValidateNormalises(t *testing.T) {
	c := Default()
	c.Access.AuthorizedPeers = []string{strings.ToLower(peerB)}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	eq(t, c.Access.AuthorizedPeers, []string{peerB})
	c.Network.Mode = "other"
	if err := c.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate = %v, want ErrInvalid", err)
	}
}
