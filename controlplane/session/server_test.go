package session_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
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

// directEdit switches a harness to direct_ephemeral with a random range.
func directEdit(c *config.Config) {
	c.Network.Mode = config.ModeDirectEphemeral
	base := 20000 + rand.IntN(12000) // below the ephemeral range (32768+)
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
	h := servertest.Start(t, directEdit, server.Options{NewSessions: session.NewSessions})
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

// TestServerTunneledDefault checks the honest refusal in the default mode.
func TestServerTunneledDefault(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{NewSessions: session.NewSessions})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	defer c.Close()
	_, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2}})
	var d *client.DeniedError
	if !errors.As(err, &d) || d.Deny.Reason != link.DenyBusy || d.Deny.Message != session.TunneledUnavailable {
		t.Fatalf("request in tunneled mode: %v", err)
	}
}

// TestServerKill9KeepsQuota runs the built binary, uses up a small daily
// byte budget, kills the server with SIGKILL and checks that a restarted
// server still refuses with quota_exceeded.
func TestServerKill9KeepsQuota(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	exe := filepath.Join(t.TempDir(), "reflector")
	if out, err := exec.Command("go", "build", "-o", exe, "../../cmd/reflector").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := servertest.StateDir(t)
	key := servertest.NewKey(t)
	cfg := servertest.Config(dir)
	directEdit(cfg)
	cfg.Quotas.MaxBytesPerDayPerPeer = 20_000_000
	cfg.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg.Network.ListenAddress = addr
	cfgPath := filepath.Join(dir, "reflector.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(exe, "serve", "-c", cfgPath)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	dial := func() *client.Client {
		var c *client.Client
		testutil.Eventually(t, 10*time.Second, "server up", func() bool {
			var err error
			c, err = client.Dial(t.Context(), addr, key, "")
			return err == nil
		})
		return c
	}
	cmd := start()
	c := dial()
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2, Streams: ptr(1)}})
	if err != nil {
		t.Fatal(err)
	}
	_ = exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "2", "-b", "200M").Run()
	qf := filepath.Join(dir, "quotas.json")
	testutil.Eventually(t, 15*time.Second, "quota file records the bytes", func() bool {
		q, err := quota.Open(qf, quota.Limits{MaxTestsPerHour: 10, MaxBytesPerDay: 1})
		return err == nil && q.Peer(servertest.ID(key).String(), time.Now()).BytesToday >= 20_000_000
	})
	_ = c.Close()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	start()
	c = dial()
	defer c.Close()
	_, err = c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2}})
	var d *client.DeniedError
	if !errors.As(err, &d) || d.Deny.Reason != link.DenyQuotaExceeded || d.Deny.RetryAfterSec == nil {
		t.Fatalf("after kill -9 and restart: %v, want quota_exceeded", err)
	}
}

// TestServerCorruptQuotaFileRefusesStart checks that a damaged quota file
// stops the server rather than resetting every peer's quota.
func TestServerCorruptQuotaFileRefusesStart(t *testing.T) {
	dir := servertest.StateDir(t)
	cfg := servertest.Config(dir)
	directEdit(cfg)
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
