package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// tunneledHarness starts a tunneled reflector without cooldown (tests
// follow each other) and an authorized client key file.
func tunneledHarness(t *testing.T) (*servertest.Harness, string) {
	t.Helper()
	return modeHarness(t, config.ModeTunneled)
}

// modeHarness is tunneledHarness with the network mode given.
func modeHarness(t *testing.T, mode string) (*servertest.Harness, string) {
	t.Helper()
	// `reflector tunnel` watches signals: start the process-wide signal
	// loop before the harness counts goroutines.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	signal.Stop(sig)
	h := servertest.Start(t, func(c *config.Config) {
		c.Network.Mode = mode
		c.Quotas.CooldownSec = 0
		c.Quotas.MaxTestsPerHourPerPeer = 100
		c.Quotas.MaxBytesPerDayPerPeer = 1 << 50 // loopback tests move gigabytes
	}, server.Options{NewSessions: session.NewSessions})
	keyPath := filepath.Join(t.TempDir(), "client.ed25519")
	key, _, err := identity.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	h.Authorize(key)
	return h, keyPath
}

// auditCompleted waits for testID's session_completed and returns it.
func auditCompleted(t *testing.T, h *servertest.Harness, testID string) audit.Event {
	t.Helper()
	var ev audit.Event
	testutil.Eventually(t, 15*time.Second, "session_completed audited", func() bool {
		for _, e := range servertest.FindAudit(h.AuditEvents(), audit.SessionCompleted) {
			if e.TestID == testID {
				ev = e
				return true
			}
		}
		return false
	})
	return ev
}

func within2(t *testing.T, what string, got, want int64) {
	t.Helper()
	diff := float64(got-want) / float64(max(want, 1))
	t.Logf("%s: audit bytes %d, client %d, diff %.3f%%", what, got, want, diff*100)
	if want <= 0 || diff > 0.02 || diff < -0.02 {
		t.Fatalf("%s: audit bytes %d vs client %d", what, got, want)
	}
}

// iperf3Sum is the part of stock iperf3's -J output the test checks.
type iperf3Sum struct {
	Bytes       int64   `json:"bytes"`
	BitsPerSec  float64 `json:"bits_per_second"`
	LostPackets int64   `json:"lost_packets"`
	Packets     int64   `json:"packets"`
}

type iperf3Out struct {
	Error string `json:"error"`
	Start struct {
		Test struct {
			Protocol string `json:"protocol"`
			BlkSize  int64  `json:"blksize"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent            iperf3Sum `json:"sum_sent"`
		SumReceived        iperf3Sum `json:"sum_received"`
		Sum                iperf3Sum `json:"sum"`
		SumSentBidirRev    iperf3Sum `json:"sum_sent_bidir_reverse"`
		SumReceivedBidirRe iperf3Sum `json:"sum_received_bidir_reverse"`
	} `json:"end"`
}

// udp reports whether o is a UDP test's output.
func (o *iperf3Out) udp() bool { return o.Start.Test.Protocol == "UDP" }

// checkUDPAccounting asserts what holds whatever the loss (a loaded host
// loses datagrams on loopback too): the receiver counted whole datagrams
// only, no more than were sent and not counted lost (a lost tail is not
// reported as lost: the receiver cannot see it).
func checkUDPAccounting(t *testing.T, o *iperf3Out) {
	t.Helper()
	s, blk, got := o.End.Sum, o.Start.Test.BlkSize, o.End.SumReceived.Bytes
	t.Logf("UDP -l %d: %d packets, %d lost, %d bytes received", blk, s.Packets, s.LostPackets, got)
	if s.Packets <= 0 || s.LostPackets < 0 || s.LostPackets >= s.Packets || blk <= 0 {
		t.Fatalf("UDP -l %d: packets %d lost %d: want some sent and not all lost", blk, s.Packets, s.LostPackets)
	}
	if got%blk != 0 || got > (s.Packets-s.LostPackets)*blk {
		t.Fatalf("UDP receiver counted %d bytes: want whole %d-byte datagrams, at most (packets %d - lost %d)", got, blk, s.Packets, s.LostPackets)
	}
}

var (
	runLine    = regexp.MustCompile(`(?m)^Run: (iperf3 .*)$`)
	testIDLine = regexp.MustCompile(`(?:Tunneled|Direct \(forwarded\)) test ([0-9a-f]+) `)
)

// TestTunnelStockIperf3 runs stock iperf3 through `reflector tunnel` for
// default TCP, -P 4, -R, --bidir, UDP and reverse UDP, checking iperf3's
// JSON and that the audited bytes are within 2% of what it reports.
func TestTunnelStockIperf3(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	h, keyPath := tunneledHarness(t)
	cases := []struct {
		name  string
		flags []string
		// server bytes from iperf3's output
		want func(o *iperf3Out) int64
	}{
		{"tcp", nil, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }},
		{"tcp-P4", []string{"-P", "4"}, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }},
		{"tcp-R", []string{"-R"}, func(o *iperf3Out) int64 { return o.End.SumSent.Bytes }},
		{"tcp-bidir", []string{"--bidir"}, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes + o.End.SumSentBidirRev.Bytes }},
		{"udp", []string{"-u", "-b", "100M"}, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }},
		{"udp-R", []string{"-u", "-R", "-b", "100M"}, func(o *iperf3Out) int64 { return o.End.SumSent.Bytes }},
		// Two streams' fragments interleave in one QUIC session.
		{"udp-P2", []string{"-u", "-P", "2", "-b", "50M"}, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runTunnelIperf3(t, h, keyPath, bin, tc.flags, tc.want, link.ModeTunneled, nil)
		})
	}
}

// TestTunnelIgnoresSilentConnections: local connections that send nothing
// (a port probe that closes at once, one that stays open) reach neither
// the reflector nor the session, and the test after them completes.
func TestTunnelIgnoresSilentConnections(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	h, keyPath := tunneledHarness(t)
	probe := func(local string) {
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		held, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = held.Close() })
	}
	runTunnelIperf3(t, h, keyPath, bin, nil, func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }, link.ModeTunneled, probe)
}

// TestTunnelDirectGrant: against a reflector that grants direct mode,
// `reflector tunnel` forwards the local streams to the granted port and
// the test completes (TCP and UDP with iperf3's default length).
func TestTunnelDirectGrant(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	h, keyPath := modeHarness(t, config.ModeDirectEphemeral)
	received := func(o *iperf3Out) int64 { return o.End.SumReceived.Bytes }
	t.Run("tcp", func(t *testing.T) {
		runTunnelIperf3(t, h, keyPath, bin, nil, received, link.ModeDirectEphemeral, nil)
	})
	t.Run("udp", func(t *testing.T) {
		runTunnelIperf3(t, h, keyPath, bin, []string{"-u", "-b", "50M"}, received, link.ModeDirectEphemeral, nil)
	})
}

// runTunnelIperf3 runs `reflector tunnel` with flags, then stock iperf3
// with the command it prints (after before, when set, is called with the
// local address), and checks the session: completed in mode, audited
// bytes within 2% of want.
func runTunnelIperf3(t *testing.T, h *servertest.Harness, keyPath, bin string, flags []string, want func(*iperf3Out) int64, mode string, before func(local string)) {
	t.Helper()
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	e := &env{stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}
	args := append([]string{"tunnel", "--peer", h.Addr, "--identity", keyPath, "--listen", "127.0.0.1:0", "-t", "2"}, flags...)
	done := make(chan int, 1)
	go func() { done <- run(e, args) }()
	var cmdLine string
	testutil.Eventually(t, 10*time.Second, "tunnel prints the iperf3 command", func() bool {
		m := runLine.FindStringSubmatch(stdout.String())
		if m != nil {
			cmdLine = m[1]
		}
		return m != nil
	})
	testID := testIDLine.FindStringSubmatch(stdout.String())[1]
	fields := strings.Fields(cmdLine)[1:]
	if slices.Contains(fields, "-l") {
		t.Fatalf("the printed command sets -l: %s", cmdLine)
	}
	if before != nil {
		before(net.JoinHostPort(fields[1], fields[3]))
	}
	out, err := exec.Command(bin, append(fields, "-J")...).Output()
	var o iperf3Out
	if jerr := json.Unmarshal(out, &o); err != nil || jerr != nil || o.Error != "" {
		t.Fatalf("iperf3 %v: %v %v: %s\n%s%s", fields, err, jerr, out, stdout, stderr)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("tunnel exit %d\n%s%s", code, stdout, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tunnel did not exit after the test")
	}
	if !strings.Contains(stdout.String(), "completed (done)") {
		t.Fatalf("tunnel output:\n%s", stdout)
	}
	if o.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 received nothing: %s", out)
	}
	if o.udp() {
		checkUDPAccounting(t, &o)
		t.Logf("%s", regexp.MustCompile(`(?m)^Tunnel datagrams.*$`).FindString(stdout.String()))
	}
	ev := auditCompleted(t, h, testID)
	if ev.Reason != session.EndDone || ev.Details["mode"] != mode {
		t.Fatalf("session_completed %+v", ev)
	}
	within2(t, strings.Join(flags, " "), *ev.BytesTransferred, want(&o))
}

// TestReflectorTestTunneled runs `reflector test` throughput (TCP and UDP)
// and udp-echo against a tunneled reflector, natively through the tunnel.
func TestReflectorTestTunneled(t *testing.T) {
	h, keyPath := tunneledHarness(t)
	common := []string{"--peer", h.Addr, "--identity", keyPath, "--json"}

	code, doc, out := runTestCmd(t, append(common, "throughput", "-t", "1", "-P", "2")...)
	if code != 0 || doc.Grant == nil || doc.Grant.Mode != link.ModeTunneled || doc.Throughput == nil || doc.Throughput.Upload == nil {
		t.Fatalf("throughput: exit %d\n%s", code, out)
	}
	up := doc.Throughput.Upload
	if up.Streams != 2 || up.ReceivedBytes <= 0 {
		t.Fatalf("upload %+v", up)
	}
	within2(t, "tcp", *auditCompleted(t, h, doc.Grant.TestID).BytesTransferred, up.ReceivedBytes)

	code, doc, out = runTestCmd(t, append(common, "throughput", "-t", "1", "-P", "1", "-u", "-R", "-b", "50M")...)
	if code != 0 || doc.Throughput == nil || doc.Throughput.Download == nil || doc.Throughput.Download.Packets == 0 {
		t.Fatalf("udp -R: exit %d\n%s", code, out)
	}
	within2(t, "udp -R", *auditCompleted(t, h, doc.Grant.TestID).BytesTransferred, doc.Throughput.Download.SentBytes)

	code, doc, out = runTestCmd(t, append(common, "udp-echo", "-t", "1", "--rate", "200", "--size", "100", "--timestamped")...)
	if code != 0 || doc.Echo == nil || doc.Echo.Sent == 0 || doc.Echo.Received*2 < doc.Echo.Sent || doc.Echo.RTTP50Ms <= 0 {
		t.Fatalf("udp-echo: exit %d\n%s", code, out)
	}
	ev := auditCompleted(t, h, doc.Grant.TestID)
	within2(t, "echo", *ev.BytesTransferred, int64(doc.Echo.Received)*100)
}

// TestReflectorTestTunneledUDPBlocked: with nothing answering on the
// control port over UDP, a tunneled udp-echo fails within 5 seconds and
// names the port and protocol to open. The reflector is reached through a
// TCP relay on a port whose UDP twin nobody listens on.
func TestReflectorTestTunneledUDPBlocked(t *testing.T) {
	h, keyPath := tunneledHarness(t)
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	t.Cleanup(func() { cancel(); _ = relay.Close(); <-relayDone })
	go func() {
		defer close(relayDone)
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", h.Addr)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _, _ = tunnel.Pipe(ctx, c, s) }()
		}
	}()
	_, port, _ := net.SplitHostPort(relay.Addr().String())
	start := time.Now()
	code, doc, out := runTestCmd(t, "--peer", relay.Addr().String(), "--identity", keyPath, "--json", "udp-echo", "-t", "1")
	took := time.Since(start)
	t.Logf("failed after %v: %s", took, doc.Error)
	if code == 0 || !strings.Contains(doc.Error, port+"/udp") || took > 5*time.Second {
		t.Fatalf("exit %d after %v, want a failure naming %s/udp within 5 s\n%s", code, took, port, out)
	}
}
