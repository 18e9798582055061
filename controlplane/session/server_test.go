package session_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
)

func ptr[T any](v T) *T { return &v }

// directEdit switches a harness to direct_ephemeral with a free range.
func directEdit(t testing.TB, c *config.Config) {
	c.Network.Mode = config.ModeDirectEphemeral
	base := testutil.PortRange(t, 10)
	c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd = base, base+9
}

func completed(events []audit.Event, testID string) *audit.Event {
	for _, e := range servertest.FindAudit(events, audit.SessionCompleted) {
		if e.TestID == testID {
			return &e
		}
	}
	return nil
}

// TestServerApplianceSequence is the appliance's real sequence through the
// pp-link/1 server with the default quotas: hello, upload test, stock
// iperf3 ~500 ms later, then at once the download test without a
// session_close.
func TestServerApplianceSequence(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	h := servertest.Start(t, func(c *config.Config) { directEdit(t, c) }, server.Options{NewSessions: session.NewSessions})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	defer c.Close()
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	for _, reverse := range []bool{false, true} {
		g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{
			DurationSec: 2, Protocol: ptr("tcp"), Streams: ptr(4), Reverse: ptr(reverse),
		}})
		if err != nil {
			t.Fatalf("request (reverse %v): %v", reverse, err)
		}
		st, err := c.Status()
		if err != nil || st.ActiveTest == nil || st.ActiveTest.TestID != g.TestID || st.ActiveTest.RemainingSec == 0 {
			t.Fatalf("status during the test: %+v, %v", st, err)
		}
		time.Sleep(500 * time.Millisecond) // the appliance's own pause, not a synchronisation
		args := []string{"-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "2", "-P", "4", "-b", "500M", "-J"}
		if reverse {
			args = append(args, "-R")
		}
		out, err := exec.Command(bin, args...).Output()
		var r struct {
			End struct {
				SumSent     struct{ Bytes int64 } `json:"sum_sent"`
				SumReceived struct{ Bytes int64 } `json:"sum_received"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal(out, &r); err != nil || jerr != nil {
			t.Fatalf("iperf3: %v %v: %s", err, jerr, out)
		}
		want := r.End.SumReceived.Bytes
		if reverse {
			want = r.End.SumSent.Bytes
		}
		var ev *audit.Event
		testutil.Eventually(t, 15*time.Second, "session_completed audited", func() bool {
			ev = completed(h.AuditEvents(), g.TestID)
			return ev != nil
		})
		got := *ev.BytesTransferred
		diff := float64(got-want) / float64(want)
		t.Logf("reverse %v: audit bytes_transferred %d, iperf3 %d, diff %.3f%%", reverse, got, want, diff*100)
		if ev.Reason != session.EndDone || diff > 0.02 || diff < -0.02 {
			t.Fatalf("completed %+v: bytes %d vs iperf3 %d", ev, got, want)
		}
		res, err := c.TestResult(g.TestID)
		if err != nil || res.State != link.StateCompleted {
			t.Fatalf("test_result %+v, %v", res, err)
		}
	}
	st, err := c.Status()
	if err != nil || st.TestsToday != 2 || st.BytesToday == 0 || st.ActiveTest != nil {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// TestServerDenyReasonByHello: with the only data port taken by another
// peer's echo test, a connection that sent the appliance's hello is denied
// busy (all its enum can decode) and one that sent our client's hello
// (deny_reasons_v2) is denied resource_exhausted.
func TestServerDenyReasonByHello(t *testing.T) {
	h := servertest.Start(t, func(c *config.Config) {
		directEdit(t, c)
		c.Network.DataPortRangeEnd = c.Network.DataPortRangeStart
		c.Quotas.MaxConcurrentTests = 3
	}, server.Options{NewSessions: session.NewSessions})
	holderKey, key := servertest.NewKey(t), servertest.NewKey(t)
	h.Authorize(holderKey)
	h.Authorize(key)
	holder := h.Dial(holderKey)
	defer holder.Close()
	if _, err := holder.Hello(); err != nil {
		t.Fatal(err)
	}
	g, err := holder.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 30}})
	if err != nil {
		t.Fatalf("holder's request: %v", err)
	}
	defer func() { _ = holder.CloseSession(g.TestID) }()

	req := link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 2}}
	appliance := h.Dial(key)
	defer appliance.Close()
	if _, err := appliance.Call(&link.Hello{Version: link.ProtocolVersion, Features: []string{link.FeatureThroughput, link.FeatureUDPEcho}}); err != nil {
		t.Fatal(err)
	}
	var d *client.DeniedError
	if _, err := appliance.RequestSession(req); !errors.As(err, &d) || d.Deny.Reason != link.DenyBusy {
		t.Fatalf("appliance hello, ports exhausted: %v; want busy", err)
	}
	ours := h.Dial(key)
	defer ours.Close()
	if _, err := ours.Hello(); err != nil {
		t.Fatal(err)
	}
	if _, err := ours.RequestSession(req); !errors.As(err, &d) || d.Deny.Reason != link.DenyResourceExhausted {
		t.Fatalf("our hello, ports exhausted: %v; want resource_exhausted", err)
	}
}

// binServer runs the built reflector binary as a process.
type binServer struct {
	t                  *testing.T
	exe, cfgPath, addr string
	dir                string
	key                ed25519.PrivateKey
}

// newBinServer takes the built binary and writes a direct_ephemeral
// configuration (edited by edit) that authorizes a fresh client key.
func newBinServer(t *testing.T, edit func(*config.Config)) *binServer {
	t.Helper()
	b := &binServer{t: t, exe: testutil.ReflectorBinary(t), dir: servertest.StateDir(t), key: servertest.NewKey(t)}
	cfg := servertest.Config(b.dir)
	directEdit(t, cfg)
	cfg.Access.AuthorizedPeers = []string{servertest.ID(b.key).String()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	_ = ln.Close()
	cfg.Network.ListenAddress = b.addr
	if edit != nil {
		edit(cfg)
	}
	b.cfgPath = filepath.Join(b.dir, "reflector.toml")
	if err := os.WriteFile(b.cfgPath, []byte(cfg.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// start runs `reflector serve`; the process is killed when the test ends.
func (b *binServer) start() *exec.Cmd {
	cmd := exec.Command(b.exe, "serve", "-c", b.cfgPath)
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// kill9 ends the process with SIGKILL.
func (b *binServer) kill9(cmd *exec.Cmd) {
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		b.t.Fatal(err)
	}
	_ = cmd.Wait()
}

// dial connects the authorized client once the server listens.
func (b *binServer) dial() *client.Client {
	var c *client.Client
	testutil.Eventually(b.t, 10*time.Second, "server up", func() bool {
		var err error
		c, err = client.Dial(b.t.Context(), b.addr, b.key, "")
		return err == nil
	})
	return c
}

// usage reads the client's accounting from the quota file.
func (b *binServer) usage() quota.Usage {
	q, err := quota.Open(filepath.Join(b.dir, "quotas.json"), quota.Limits{MaxTestsPerHour: 10, MaxBytesPerDay: 1})
	if err != nil {
		return quota.Usage{}
	}
	return q.Peer(servertest.ID(b.key).String(), time.Now())
}

// TestServerKill9KeepsQuota uses up a small daily byte budget on the built
// binary, kills the server with SIGKILL and checks that a restarted server
// still refuses with quota_exceeded.
func TestServerKill9KeepsQuota(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	b := newBinServer(t, func(c *config.Config) { c.Quotas.MaxBytesPerDayPerPeer = 20_000_000 })
	cmd := b.start()
	c := b.dial()
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2, Streams: ptr(1)}})
	if err != nil {
		t.Fatal(err)
	}
	_ = exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "2", "-b", "200M").Run()
	testutil.Eventually(t, 15*time.Second, "quota file records the bytes", func() bool {
		return b.usage().BytesToday >= 20_000_000
	})
	_ = c.Close()
	b.kill9(cmd)

	b.start()
	c = b.dial()
	defer c.Close()
	_, err = c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2}})
	var d *client.DeniedError
	if !errors.As(err, &d) || d.Deny.Reason != link.DenyQuotaExceeded || d.Deny.RetryAfterSec == nil {
		t.Fatalf("after kill -9 and restart: %v, want quota_exceeded", err)
	}
}

// TestServerKill9MidTest kills the server while a test runs: the periodic
// persistence has already saved the start and most of the bytes, and the
// restarted server reports them.
func TestServerKill9MidTest(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	b := newBinServer(t, nil)
	cmd := b.start()
	c := b.dial()
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 6, Streams: ptr(1)}})
	if err != nil {
		t.Fatal(err)
	}
	ip := exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "6", "-b", "100M")
	if err := ip.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ip.Process.Kill(); _ = ip.Wait() }()
	var saved quota.Usage
	testutil.Eventually(t, 5*time.Second, "bytes persisted while the test runs", func() bool {
		saved = b.usage()
		return saved.BytesToday > 0
	})
	if r, err := c.TestResult(g.TestID); err != nil || r.State != link.StateRunning {
		t.Fatalf("the test is not running any more (%+v, %v): nothing was persisted mid-test", r, err)
	}
	_ = c.Close()
	b.kill9(cmd)

	b.start()
	c = b.dial()
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("persisted before kill -9: %d bytes; restored: %d tests, %d bytes", saved.BytesToday, st.TestsToday, st.BytesToday)
	if st.TestsToday != 1 || st.BytesToday < uint64(saved.BytesToday) {
		t.Fatalf("restored status %+v, saved %+v", st, saved)
	}
}

// TestServerCorruptQuotaFileRefusesStart checks that a damaged quota file
// stops the server rather than resetting every peer's quota.
func TestServerCorruptQuotaFileRefusesStart(t *testing.T) {
	dir := servertest.StateDir(t)
	cfg := servertest.Config(dir)
	directEdit(t, cfg)
	if err := os.WriteFile(cfg.QuotaFile(), []byte(`{"version": 1, "peers": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{NewSessions: session.NewSessions})
	if err == nil {
		_ = srv.Shutdown(t.Context())
		t.Fatal("server started with a corrupt quota file")
	}
	if !errors.Is(err, quota.ErrCorrupt) {
		t.Fatalf("error %v, want quota.ErrCorrupt", err)
	}
}
