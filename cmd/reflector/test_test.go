package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// testHarness starts a reflector with sessions in mode and an authorized
// client key file.
func testHarness(t *testing.T, mode string) (*servertest.Harness, string) {
	t.Helper()
	h := servertest.Start(t, func(c *config.Config) {
		c.Network.Mode = mode
		base := testutil.PortRange(t, 10)
		c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd = base, base+9
	}, server.Options{NewSessions: session.NewSessions})
	keyPath := filepath.Join(t.TempDir(), "client.ed25519")
	key, _, err := identity.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	h.Authorize(key)
	return h, keyPath
}

func runTestCmd(t *testing.T, args ...string) (int, testDoc, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	code := run(e, append([]string{"test"}, args...))
	var doc testDoc
	if strings.Contains(strings.Join(args, " "), "--json") {
		if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
			t.Fatalf("test %v: exit %d, stdout not one JSON document: %v\n%s\nstderr: %s", args, code, err, stdout.String(), stderr.String())
		}
	}
	return code, doc, stdout.String() + stderr.String()
}

func TestReflectorTestEndToEnd(t *testing.T) {
	h, keyPath := testHarness(t, config.ModeDirectEphemeral)
	common := []string{"--peer", h.Addr, "--identity", keyPath, "--json"}

	code, doc, out := runTestCmd(t, append(common, "throughput", "-t", "1", "-P", "2", "-b", "200M")...)
	if code != 0 || doc.Throughput == nil || doc.Throughput.Upload == nil || doc.Server == nil {
		t.Fatalf("throughput: exit %d\n%s", code, out)
	}
	up := doc.Throughput.Upload
	if up.Streams != 2 || up.ReceivedBytes <= 0 || up.BitsPerSecond <= 0 || doc.Throughput.Download != nil {
		t.Fatalf("upload %+v", up)
	}
	if doc.Server.State != link.StateCompleted || doc.Server.BytesReceived != up.ReceivedBytes {
		t.Fatalf("reflector result %+v vs client %+v", doc.Server, up)
	}
	if doc.ServerID != h.Server.EndpointID().String() {
		t.Fatalf("server id %q", doc.ServerID)
	}

	// Reverse right after: the completed test released the cooldown.
	code, doc, out = runTestCmd(t, append(common, "throughput", "-t", "1", "-P", "1", "-R", "-b", "200M")...)
	if code != 0 || doc.Throughput.Download == nil || doc.Throughput.Download.ReceivedBytes <= 0 || doc.Throughput.Upload != nil {
		t.Fatalf("reverse throughput: exit %d\n%s", code, out)
	}

	code, doc, out = runTestCmd(t, append(common, "throughput", "-u", "-b", "20M", "-t", "1", "-P", "1")...)
	if code != 0 || doc.Throughput == nil || doc.Throughput.Protocol != "udp" || doc.Throughput.Upload == nil || doc.Throughput.Upload.Packets == 0 {
		t.Fatalf("udp throughput: exit %d\n%s", code, out)
	}

	code, doc, out = runTestCmd(t, append(common, "udp-echo", "-t", "1", "--rate", "200", "--size", "64", "--timestamped")...)
	if code != 0 || doc.Echo == nil || doc.Server == nil {
		t.Fatalf("udp-echo: exit %d\n%s", code, out)
	}
	e := doc.Echo
	if e.Sent < 150 || e.Received != e.Sent || e.Corrupt != 0 || e.RTTP99Ms <= 0 || e.RTTMinMs > e.RTTMaxMs {
		t.Fatalf("echo %+v", e)
	}
	if doc.Server.State != link.StateCompleted || doc.Server.BytesSent != int64(e.Received)*64 {
		t.Fatalf("reflector echo result %+v, client received %d", doc.Server, e.Received)
	}

	// The human summary names the figures.
	code, _, out = runTestCmd(t, "--peer", h.Addr, "--identity", keyPath, "udp-echo", "-t", "1", "--rate", "50")
	if code != 0 || !strings.Contains(out, "RTT ms: min") || !strings.Contains(out, "Jitter (RFC 3550)") {
		t.Fatalf("echo summary: exit %d\n%s", code, out)
	}
	// The reflector's figures are the audit record's, never "received 0".
	var testID string
	var recv, echoed, nbytes int64
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "UDP echo test "); ok {
			testID, _, _ = strings.Cut(rest, " ")
		}
		if strings.HasPrefix(line, "Reflector measured:") {
			if _, err := fmt.Sscanf(line, "Reflector measured: received %d datagrams, echoed %d (%d bytes)", &recv, &echoed, &nbytes); err != nil {
				t.Fatalf("echo summary line %q: %v", line, err)
			}
		}
	}
	var rec *audit.Event
	for _, ev := range servertest.FindAudit(h.AuditEvents(), audit.SessionCompleted) {
		if ev.TestID == testID {
			rec = &ev
		}
	}
	if rec == nil || rec.BytesTransferred == nil || *rec.BytesTransferred != nbytes || nbytes == 0 || recv != echoed || recv == 0 {
		t.Fatalf("echo summary received %d echoed %d bytes %d; audit record %+v\n%s", recv, echoed, nbytes, rec, out)
	}
	if strings.Contains(out, "received 0 bytes") {
		t.Fatalf("echo summary still says received 0 bytes:\n%s", out)
	}
}

func TestReflectorTestDenied(t *testing.T) {
	h, keyPath := testHarness(t, config.ModeTunneled)
	// Another peer holds the only test slot.
	holderKey := servertest.NewKey(t)
	h.Authorize(holderKey)
	holder := h.Dial(holderKey)
	if _, err := holder.Hello(); err != nil { // announces tunnel
		t.Fatal(err)
	}
	g, err := holder.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 30}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.CloseSession(g.TestID) }()
	code, doc, out := runTestCmd(t, "--peer", h.Addr, "--identity", keyPath, "--json", "throughput", "-t", "1")
	if code != exitDenied || doc.Denied == nil || doc.Denied.Reason != link.DenyBusy || !strings.Contains(doc.Denied.Message, "concurrent") {
		t.Fatalf("exit %d, doc %+v\n%s", code, doc, out)
	}
	if !strings.Contains(out, "session denied") {
		t.Fatalf("denial not shown:\n%s", out)
	}
}

func TestReflectorTestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"throughput"},
		{"--peer", "nohost", "throughput"},
		{"--peer", "127.0.0.1:1"},
		{"--peer", "127.0.0.1:1", "ping"},
		{"--peer", "127.0.0.1:1", "throughput", "-t", "0"},
		{"--peer", "127.0.0.1:1", "throughput", "-b", "fast"},
		{"--peer", "127.0.0.1:1", "udp-echo", "--size", "10"},
		{"--peer", "127.0.0.1:1", "--expect-id", "nope", "udp-echo"},
	} {
		if code, _, out := runTestCmd(t, args...); code != exitUsage {
			t.Errorf("test %v: exit %d, want %d\n%s", args, code, exitUsage, out)
		}
	}
}

func TestParseBitrate(t *testing.T) {
	for in, want := range map[string]uint64{"100": 100, "1K": 1000, "1.5M": 1_500_000, "2g": 2_000_000_000, "0": 0} {
		got, err := parseBitrate(in)
		if err != nil || got != want {
			t.Errorf("parseBitrate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-5M", "1X", "1e20G"} {
		if _, err := parseBitrate(in); err == nil {
			t.Errorf("parseBitrate(%q) accepted", in)
		}
	}
}

func TestReflectorTestExpectID(t *testing.T) {
	h, keyPath := testHarness(t, config.ModeDirectEphemeral)
	other := servertest.ID(servertest.NewKey(t)).String()
	code, _, out := runTestCmd(t, "--peer", h.Addr, "--identity", keyPath, "--expect-id", other, "udp-echo", "-t", "1")
	if code != exitFail || !strings.Contains(out, other) {
		t.Fatalf("pinned to another ID: exit %d\n%s", code, out)
	}
	// The right ID passes.
	code, _, out = runTestCmd(t, "--peer", h.Addr, "--identity", keyPath, "--expect-id", h.Server.EndpointID().String(), "udp-echo", "-t", "1", "--rate", "20")
	if code != 0 {
		t.Fatalf("pinned to the right ID: exit %d\n%s", code, out)
	}
}
