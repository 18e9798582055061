//go:build stress && linux

package stress

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// binServer is the built reflector run as a child process.
type binServer struct {
	t       *testing.T
	cfg     *config.Config
	cfgPath string
	cmd     *exec.Cmd
	// exe, when set, is the binary start runs instead of the one this
	// tree builds (a before/after figure against an older build).
	exe string
}

// newBinServer writes a direct_ephemeral config authorizing owner to a
// fresh state directory, edited by edits.
func newBinServer(t *testing.T, owner ed25519.PrivateKey, edits ...func(*config.Config)) *binServer {
	t.Helper()
	dir := servertest.StateDir(t)
	cfg := servertest.Config(dir)
	directConfig(t, cfg)
	cfg.Access.AuthorizedPeers = []string{servertest.ID(owner).String()}
	for _, edit := range edits {
		edit(cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Network.ListenAddress = ln.Addr().String()
	_ = ln.Close()
	b := &binServer{t: t, cfg: cfg, cfgPath: filepath.Join(dir, "reflector.toml")}
	if err := os.WriteFile(b.cfgPath, []byte(cfg.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// start runs the binary and waits until key can say hello.
func (b *binServer) start(key ed25519.PrivateKey) *client.Client {
	b.t.Helper()
	exe := b.exe
	if exe == "" {
		exe = testutil.ReflectorBinary(b.t)
	}
	b.cmd = exec.Command(exe, "serve", "-c", b.cfgPath)
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	cmd := b.cmd
	b.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return b.dial(key)
}

// dial connects key to the running binary and says hello (retrying while
// it starts).
func (b *binServer) dial(key ed25519.PrivateKey) *client.Client {
	b.t.Helper()
	var c *client.Client
	testutil.Eventually(b.t, 15*time.Second, "reflector binary up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		c, err = client.Dial(ctx, b.cfg.Network.ListenAddress, key, "")
		if err != nil {
			return false
		}
		c.Timeout = 15 * time.Second
		if _, err = c.Hello(); err != nil {
			_ = c.Close()
			return false
		}
		return true
	})
	return c
}

// kill sends SIGKILL and reaps the process.
func (b *binServer) kill() {
	b.t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		b.t.Fatal(err)
	}
	_ = b.cmd.Wait()
}

// auditCheck asserts every audit line is whole JSON and counts the
// session_granted lines of peer.
func (b *binServer) auditCheck(peer string) (lines, granted int) {
	b.t.Helper()
	all := jsonLines(b.t, b.cfg.Logging.AuditLogPath)
	for _, m := range all {
		if m["event_type"] == "session_granted" && m["peer_id"] == peer {
			granted++
		}
	}
	return len(all), granted
}

// quotaTests parses quotas.json and returns peer's tests_day.
func (b *binServer) quotaTests(peer string) int {
	b.t.Helper()
	raw, err := os.ReadFile(b.cfg.QuotaFile())
	if err != nil {
		b.t.Fatalf("read quota file: %v", err)
	}
	var q struct {
		Peers map[string]struct {
			TestsDay int `json:"tests_day"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		b.t.Fatalf("quota file is not whole JSON after SIGKILL: %v", err)
	}
	return q.Peers[peer].TestsDay
}

// TestStressFaultsNothingLost kills the built binary with SIGKILL in the
// middle of pairing writes, quota writes and a running test, restarts it,
// and checks that the allowlist and quota files parse and hold every
// acknowledged change, and that every audit line is whole.
func TestStressFaultsNothingLost(t *testing.T) {
	t.Run("pairing", func(t *testing.T) {
		owner := servertest.NewKey(t)
		b := newBinServer(t, owner)
		var acked []string
		for round := range 3 {
			c := b.start(owner)
			_ = c.Close()
			var mu sync.Mutex
			done := make(chan struct{})
			stop := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					var res admin.PairResult
					err := admin.Call(ctx, b.cfg.AdminSocket(), admin.Request{Op: admin.OpPair, TTLSec: 600}, &res)
					if err != nil {
						cancel()
						return
					}
					key := servertest.NewKey(t)
					pc, err := client.Dial(ctx, b.cfg.Network.ListenAddress, key, "")
					cancel()
					if err != nil {
						return
					}
					pr, err := pc.Pair(res.Token)
					_ = pc.Close()
					if err != nil {
						return
					}
					if pr.Success {
						mu.Lock()
						acked = append(acked, servertest.ID(key).String())
						mu.Unlock()
					}
				}
			}()
			time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond) // a random moment, not a synchronisation
			b.kill()
			close(stop)
			<-done
			c = b.start(owner)
			var list []map[string]any
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := admin.Call(ctx, b.cfg.AdminSocket(), admin.Request{Op: admin.OpPeersList}, &list)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(b.cfg.PeersFile())
			if err != nil {
				t.Fatal(err)
			}
			var file struct {
				Peers []struct {
					ID string `json:"id"`
				} `json:"peers"`
			}
			if err := json.Unmarshal(raw, &file); err != nil {
				t.Fatalf("peers file not whole JSON after SIGKILL: %v", err)
			}
			have := map[string]bool{}
			for _, p := range file.Peers {
				have[p.ID] = true
			}
			mu.Lock()
			for _, id := range acked {
				if !have[id] {
					t.Fatalf("round %d: acknowledged pairing of %s lost after SIGKILL", round, id)
				}
			}
			if len(file.Peers) > len(acked)+round+1 {
				t.Fatalf("round %d: %d peers on file, %d acknowledged", round, len(file.Peers), len(acked))
			}
			t.Logf("round %d: %d pairings acknowledged so far, %d on file, %d listed by the restarted server", round, len(acked), len(file.Peers), len(list))
			mu.Unlock()
			_ = c.Close()
			b.kill()
		}
		lines, _ := b.auditCheck("")
		t.Logf("audit: %d lines, all whole", lines)
	})

	t.Run("quota", func(t *testing.T) {
		owner := servertest.NewKey(t)
		id := servertest.ID(owner).String()
		b := newBinServer(t, owner)
		acked := 0
		for round := range 3 {
			c := b.start(owner)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					rep, err := c.RunEcho(ctx, "127.0.0.1", client.EchoOptions{Duration: time.Second, Rate: 200, Size: 64}, nil)
					cancel()
					if rep != nil && rep.Grant.TestID != "" {
						acked++
					}
					if err != nil {
						return
					}
				}
			}()
			time.Sleep(time.Duration(1500+rand.IntN(2000)) * time.Millisecond) // a random moment, not a synchronisation
			b.kill()
			<-done
			_ = c.Close()
			lines, granted := b.auditCheck(id)
			tests := b.quotaTests(id)
			t.Logf("round %d: %d grants acknowledged, %d audited, quota file tests_day %d, %d audit lines", round, acked, granted, tests, lines)
			if acked > granted || tests < granted || tests > granted+1 {
				t.Fatalf("quota file tests_day %d, audited grants %d, acknowledged %d", tests, granted, acked)
			}
		}
		c := b.start(owner)
		defer c.Close()
		st, err := c.Status()
		if err != nil {
			t.Fatal(err)
		}
		if _, granted := b.auditCheck(id); int(st.TestsToday) < granted {
			t.Fatalf("restarted server reports %d tests today, %d were granted", st.TestsToday, granted)
		}
	})

	t.Run("running_test", func(t *testing.T) {
		owner := servertest.NewKey(t)
		id := servertest.ID(owner).String()
		b := newBinServer(t, owner)
		c := b.start(owner)
		watcher := b.dial(owner) // a second connection to the same process
		done := make(chan error, 1)
		go func() {
			_, err := c.RunThroughput(context.Background(), "127.0.0.1", client.ThroughputOptions{Duration: 5 * time.Second, Streams: 2}, nil)
			done <- err
		}()
		testutil.Eventually(t, 10*time.Second, "test running", func() bool {
			st, err := watcher.Status()
			return err == nil && st.ActiveTest != nil && st.ActiveTest.RemainingSec > 0
		})
		time.Sleep(time.Second) // into the test, not a synchronisation
		b.kill()
		// The client must not report a test whose server died as a success.
		if err := <-done; err == nil {
			t.Fatal("RunThroughput returned nil although the reflector was killed mid-test")
		} else {
			t.Logf("client's view of the killed test: %v", err)
		}
		_ = c.Close()
		_ = watcher.Close()
		_, granted := b.auditCheck(id)
		if tests := b.quotaTests(id); granted != 1 || tests != 1 {
			t.Fatalf("after SIGKILL mid-test: %d grants audited, tests_day %d; want 1 and 1", granted, tests)
		}
		c = b.start(owner)
		defer c.Close()
		rep, err := c.RunThroughput(context.Background(), "127.0.0.1", client.ThroughputOptions{Duration: time.Second, Streams: 1}, nil)
		if err != nil {
			t.Fatalf("test after the restart: %v", err)
		}
		st, err := c.Status()
		if err != nil || st.TestsToday != 2 {
			t.Fatalf("status after restart %+v, %v: want 2 tests today", st, err)
		}
		lines, _ := b.auditCheck(id)
		t.Logf("killed mid-test, restarted, next test %s granted on port %d; %d audit lines, all whole", rep.Grant.TestID, rep.Grant.Port, lines)
	})
}
