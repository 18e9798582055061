package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/packetparamedic/reflector/bench/internal/iperfrun"
	"github.com/packetparamedic/reflector/internal/freeport"
)

// sockperfServer is `sockperf server` on a free UDP port of 127.0.0.1.
type sockperfServer struct {
	exe           string
	port          int
	seconds, size int
	proc          *iperfrun.Process
}

func (*sockperfServer) name() string { return "sockperf" }

func (s *sockperfServer) stop() { s.proc.Stop() }

// sockperfReady is what `sockperf server` prints once its socket is bound
// and it waits for messages ("using recvfrom() to block on socket(s)").
const sockperfReady = "to block on socket"

func startSockperf(ctx context.Context, o options, exe string) (*sockperfServer, error) {
	port, err := freeport.Port(false)
	if err != nil {
		return nil, err
	}
	p, err := iperfrun.Start(exe, "server", "-i", "127.0.0.1", "-p", strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("sockperf server: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for wait := time.Millisecond; !strings.Contains(p.Output(), sockperfReady); wait = min(2*wait, 50*time.Millisecond) {
		t := time.NewTimer(wait)
		select {
		case <-p.Exited():
			t.Stop()
			return nil, fmt.Errorf("sockperf server exited: %s", strings.TrimSpace(p.Output()))
		case <-wctx.Done():
			t.Stop()
			p.Stop()
			return nil, fmt.Errorf("sockperf server not ready: %w: %s", wctx.Err(), strings.TrimSpace(p.Output()))
		case <-t.C:
		}
	}
	return &sockperfServer{exe: exe, port: port, seconds: o.seconds, size: o.size, proc: p}, nil
}

// measure runs `sockperf ping-pong` once at rate (--mps).
func (s *sockperfServer) measure(ctx context.Context, rate int) (rtt, error) {
	secs := runSeconds(s.seconds, rate)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+runGrace)
	defer cancel()
	args := []string{"ping-pong", "-i", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-t", strconv.Itoa(secs), "-m", strconv.Itoa(s.size), "--mps", strconv.Itoa(rate)}
	cmd := exec.CommandContext(ctx, s.exe, args...)
	cmd.WaitDelay = 5 * time.Second
	out := &iperfrun.TailBuffer{Max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	m, err := parseSockperf(out.Bytes())
	if runErr != nil || err != nil {
		return rtt{}, fmt.Errorf("sockperf %s: %w", strings.Join(args, " "), errors.Join(runErr, err))
	}
	return m, nil
}

// ansi matches the colour escapes sockperf puts around some lines.
var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

var (
	summaryRe    = regexp.MustCompile(`Summary: (Latency|Round trip) is\s+[0-9.]+\s+(\S+)`)
	percentileRe = regexp.MustCompile(`---> percentile\s+([0-9.]+)\s*=\s*([0-9.]+)`)
	validRe      = regexp.MustCompile(`\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)`)
)

// errSockperfOutput is returned for ping-pong output without the figures.
var errSockperfOutput = errors.New("sockperf output without its latency summary")

// parseSockperf reads the p50 and p99 of a `sockperf ping-pong` run, in
// microseconds of round trip: sockperf prints one-way latency (half the
// measured round trip) unless run with --full-rtt, so "Latency" figures are
// doubled and "Round trip" figures taken as they are.
func parseSockperf(out []byte) (rtt, error) {
	out = ansi.ReplaceAll(out, nil)
	var m rtt
	var factor float64
	var have50, have99 bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if g := summaryRe.FindStringSubmatch(line); g != nil {
			if g[2] != "usec" {
				return rtt{}, fmt.Errorf("%w: unit %q, want usec", errSockperfOutput, g[2])
			}
			factor = 2
			if g[1] == "Round trip" {
				factor = 1
			}
		}
		if g := validRe.FindStringSubmatch(line); g != nil {
			m.Sent, _ = strconv.ParseUint(g[1], 10, 64)
			m.Received, _ = strconv.ParseUint(g[2], 10, 64)
		}
		if g := percentileRe.FindStringSubmatch(line); g != nil {
			v, err := strconv.ParseFloat(g[2], 64)
			if err != nil {
				return rtt{}, fmt.Errorf("%w: %q: %v", errSockperfOutput, line, err)
			}
			switch g[1] {
			case "50.000":
				m.P50us, have50 = v, true
			case "99.000":
				m.P99us, have99 = v, true
			}
		}
	}
	if factor == 0 || !have50 || !have99 {
		return rtt{}, fmt.Errorf("%w: %s", errSockperfOutput, lastLines(out, 5))
	}
	m.P50us *= factor
	m.P99us *= factor
	return m, nil
}

// lastLines returns the last n lines of b, for an error message.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
