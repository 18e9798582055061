package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/packetparamedic/reflector/bench/internal/iperfrun"
	"github.com/packetparamedic/reflector/internal/freeport"
)

// dataPorts is the size of our server's data port range.
const dataPorts = 10

// runGrace is how long a client may run past its test duration (connect,
// session setup, result exchange) before it is killed.
const runGrace = 30 * time.Second

// attempts is how often one run is tried before the tool gives up; our
// server may still be closing the previous session's port.
const attempts = 3

// exitDenied is the exit status of `reflector test` for a refused session.
const exitDenied = 3

// oursServer is `reflector serve` in a temporary state directory, with a
// client identity of its own on its allowlist.
type oursServer struct {
	exe, keyPath, addr string
	portLo, portHi     int
	seconds, size      int
	timestamped        bool
	spin               time.Duration
	proc               *iperfrun.Process
}

func (*oursServer) name() string { return "ours" }

func (s *oursServer) stop() { s.proc.Stop() }

// startOurs writes the configuration (direct_ephemeral, free ports on
// 127.0.0.1, quotas that a comparison cannot hit) and starts the server.
func startOurs(ctx context.Context, o options, dir string) (*oursServer, error) {
	s := &oursServer{exe: o.reflector, keyPath: filepath.Join(dir, "client.ed25519"), seconds: o.seconds, size: o.size, timestamped: o.timestamped, spin: o.spin}
	idCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	out, err := exec.CommandContext(idCtx, s.exe, "show-id", "--identity", s.keyPath).Output()
	cancel()
	if err != nil {
		return nil, fmt.Errorf("reflector show-id --identity %s: %w", s.keyPath, err)
	}
	clientID := strings.TrimSpace(string(out))
	port, err := freeport.Port(true)
	if err != nil {
		return nil, err
	}
	s.addr = "127.0.0.1:" + strconv.Itoa(port)
	if s.portLo, err = freeport.Range(dataPorts, port); err != nil {
		return nil, err
	}
	s.portHi = s.portLo + dataPorts - 1
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	cfg := fmt.Sprintf(`[network]
listen_address = %q
mode = "direct_ephemeral"
data_port_range_start = %d
data_port_range_end = %d

[access]
authorized_peers = [%q]

[quotas]
max_test_duration_sec = %d
max_concurrent_tests = 4
max_tests_per_hour_per_peer = 1000
max_bytes_per_day_per_peer = 1000000000000
cooldown_sec = 0
allow_udp_echo = true
echo_max_pps = %d

[logging]
level = "warn"

[state]
dir = %q
`, s.addr, s.portLo, s.portHi, clientID, runSeconds(o.seconds, slices.Min(o.rates))+5, maxRate, state)
	cfgPath := filepath.Join(dir, "reflector.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	p, err := iperfrun.Start(s.exe, "serve", "-c", cfgPath)
	if err != nil {
		return nil, fmt.Errorf("ours: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := iperfrun.WaitTCP(wctx, p, s.addr); err != nil {
		p.Stop()
		return nil, fmt.Errorf("reflector serve not ready: %w", err)
	}
	s.proc = p
	return s, nil
}

// testDoc is the part of `reflector test --json` this tool reads.
type testDoc struct {
	Denied *struct {
		Reason        string `json:"reason"`
		Message       string `json:"message"`
		RetryAfterSec *int   `json:"retry_after_sec"`
	} `json:"denied"`
	Error string `json:"error"`
	Echo  *struct {
		Sent     uint64  `json:"sent"`
		Received uint64  `json:"received"`
		P50ms    float64 `json:"rtt_p50_ms"`
		P99ms    float64 `json:"rtt_p99_ms"`
		ServerMs float64 `json:"server_time_ms"`
	} `json:"echo"`
}

// errDenied is a refused session; the run is retried.
var errDenied = errors.New("session denied")

// parseTestDoc reads the JSON document of `reflector test --json udp-echo`.
func parseTestDoc(b []byte) (rtt, error) {
	var d testDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return rtt{}, fmt.Errorf("reflector test output is not its JSON document: %w", err)
	}
	switch {
	case d.Denied != nil:
		retry := ""
		if d.Denied.RetryAfterSec != nil {
			retry = fmt.Sprintf(" (retry after %d s)", *d.Denied.RetryAfterSec)
		}
		return rtt{}, fmt.Errorf("%w: %s: %s%s", errDenied, d.Denied.Reason, d.Denied.Message, retry)
	case d.Error != "":
		return rtt{}, fmt.Errorf("reflector test: %s", d.Error)
	case d.Echo == nil:
		return rtt{}, errors.New("reflector test: no echo results")
	case d.Echo.Received == 0:
		return rtt{}, fmt.Errorf("reflector test: none of %d probes came back", d.Echo.Sent)
	}
	return rtt{P50us: d.Echo.P50ms * 1000, P99us: d.Echo.P99ms * 1000, ServerUs: d.Echo.ServerMs * 1000,
		Sent: d.Echo.Sent, Received: d.Echo.Received}, nil
}

// measure runs `reflector test udp-echo` once at rate, retrying a denied
// or failed run while the server is up.
func (s *oursServer) measure(ctx context.Context, rate int) (rtt, error) {
	var last error
	for attempt := range attempts {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 500 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return rtt{}, errors.Join(last, ctx.Err())
			case <-s.proc.Exited():
				t.Stop()
				return rtt{}, fmt.Errorf("%w; reflector serve exited: %s", last, s.proc.Output())
			case <-t.C:
			}
		}
		var m rtt
		if m, last = s.once(ctx, rate); last == nil {
			return m, nil
		}
	}
	return rtt{}, fmt.Errorf("%d attempts failed, last: %w", attempts, last)
}

func (s *oursServer) once(ctx context.Context, rate int) (rtt, error) {
	secs := runSeconds(s.seconds, rate)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+runGrace)
	defer cancel()
	args := []string{"test", "--peer", s.addr, "--identity", s.keyPath, "--json", "udp-echo",
		"-t", strconv.Itoa(secs), "--rate", strconv.Itoa(rate), "--size", strconv.Itoa(s.size)}
	if s.timestamped {
		args = append(args, "--timestamped")
	}
	if s.spin > 0 {
		args = append(args, "--spin", s.spin.String())
	}
	cmd := exec.CommandContext(ctx, s.exe, args...)
	cmd.WaitDelay = 5 * time.Second
	stdout := &iperfrun.TailBuffer{Max: 1 << 20}
	stderr := &iperfrun.TailBuffer{Max: 4096}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	runErr := cmd.Run()
	m, err := parseTestDoc(stdout.Bytes())
	var exit *exec.ExitError
	switch {
	case err != nil && runErr != nil && !(errors.As(runErr, &exit) && exit.ExitCode() == exitDenied):
		return rtt{}, fmt.Errorf("reflector %s: %w (%v): %s", strings.Join(args, " "), runErr, err, strings.TrimSpace(string(stderr.Bytes())))
	case err != nil:
		return rtt{}, err
	case runErr != nil:
		return rtt{}, fmt.Errorf("reflector %s: %w: %s", strings.Join(args, " "), runErr, strings.TrimSpace(string(stderr.Bytes())))
	}
	return m, nil
}
