package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// kubeletPublish writes body as a new version of a ConfigMap volume in dir
// the way the kubelet's atomic writer does: a fresh ..<n> directory, a
// ..data_tmp symlink to it renamed over ..data, the old version removed;
// reflector.toml itself is a symlink to ..data/reflector.toml, made once.
func kubeletPublish(t *testing.T, dir, body string, n int) string {
	t.Helper()
	version := fmt.Sprintf("..2026_12_01_17_00_%02d.000000001", n)
	if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, version, "reflector.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "reflector.toml")
	if old == "" {
		if err := os.Symlink(filepath.Join("..data", "reflector.toml"), path); err != nil {
			t.Fatal(err)
		}
	} else if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
		t.Fatal(err)
	}
	return path
}

// allowed reports whether key's peer may talk to the server at addr.
func allowed(addr string, key ed25519.PrivateKey) bool {
	c, err := client.Dial(context.Background(), addr, key, "")
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Status()
	return err == nil
}

// TestServeReloadsConfigMapSwap: a peer added to authorized_peers by a
// ConfigMap-style symlink swap gets in without a signal; removed again, it
// is disconnected. The fleet gauges name this server and read healthy.
func TestServeReloadsConfigMapSwap(t *testing.T) {
	env := testEnv(t, t.TempDir())
	keyFile := filepath.Join(t.TempDir(), "appliance.key")
	id := showID(t, env, "--identity", keyFile)
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	state := servertest.StateDir(t)
	body := func(peers string) string {
		return configBody(state, "\n[metrics]\nlisten_address = \"127.0.0.1:0\"\n\n[access]\nauthorized_peers = ["+peers+"]\n")
	}
	dir := t.TempDir()
	cfg := kubeletPublish(t, dir, body(""), 1)
	srv := startServe(t, env, "-c", cfg)
	st := waitServing(t, srv, env, cfg)

	if allowed(st.ListenAddress, key) {
		t.Fatal("a peer not yet in the ConfigMap was let in")
	}
	kubeletPublish(t, dir, body(fmt.Sprintf("%q", id)), 2)
	testutil.Eventually(t, 20*time.Second, "the peer added by the ConfigMap swap gets in", func() bool {
		return allowed(st.ListenAddress, key)
	})
	c, err := client.Dial(context.Background(), st.ListenAddress, key, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(srv.stdout.String(), "config file changed") {
		t.Errorf("no reload logged:\n%s", srv.stdout.String())
	}

	_, metricsBody := get("http://" + st.MetricsAddress + "/metrics")
	if v := series(metricsBody, fmt.Sprintf("reflector_identity_info{endpoint_id=%q}", st.EndpointID)); v != 1 {
		t.Errorf("reflector_identity_info for %s = %v, want 1", st.EndpointID, v)
	}
	for _, check := range health.Names {
		if v := series(metricsBody, fmt.Sprintf("reflector_health_ok{check=%q}", check)); v != 1 {
			t.Errorf("reflector_health_ok{check=%q} = %v, want 1", check, v)
		}
	}

	kubeletPublish(t, dir, body(""), 3)
	testutil.Eventually(t, 20*time.Second, "the peer removed by the next swap is disconnected", func() bool {
		_, err := c.Status()
		return err != nil
	})
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestServeLameDuck: after SIGTERM with lame_duck_sec set, the server
// reports unready (/health 503 draining, health_ok{check="not_draining"} 0)
// yet still accepts connections; a second SIGTERM ends the delay and the
// process exits 0.
func TestServeLameDuck(t *testing.T) {
	env := testEnv(t, t.TempDir())
	cfg, _ := writeConfig(t, "\n[metrics]\nlisten_address = \"127.0.0.1:0\"\n\n[limits]\nlame_duck_sec = 600\n")
	srv := startServe(t, env, "-c", cfg)
	st := waitServing(t, srv, env, cfg)
	base := "http://" + st.MetricsAddress
	if code, body := get(base + "/health"); code != 200 {
		t.Fatalf("/health before SIGTERM: %d %s", code, body)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "/health turns 503 draining in the lame-duck delay", func() bool {
		code, body := get(base + "/health")
		return code == 503 && strings.Contains(body, `"draining":true`)
	})
	_, metricsBody := get(base + "/metrics")
	if v := series(metricsBody, `reflector_health_ok{check="not_draining"}`); v != 0 {
		t.Errorf(`reflector_health_ok{check="not_draining"} = %v in the lame-duck delay, want 0`, v)
	}
	if v := series(metricsBody, `reflector_health_ok{check="listener"}`); v != 1 {
		t.Errorf(`reflector_health_ok{check="listener"} = %v in the lame-duck delay, want 1`, v)
	}
	conn, err := net.DialTimeout("tcp", st.ListenAddress, 5*time.Second)
	if err != nil {
		t.Fatalf("the listener closed during the lame-duck delay: %v", err)
	}
	_ = conn.Close()
	select {
	case <-srv.done:
		t.Fatal("serve exited during the lame-duck delay")
	default:
	}
	if code := srv.stop(t); code != 0 { // the second SIGTERM
		t.Fatalf("exit %d after the second SIGTERM:\n%s", code, srv.stdout.String())
	}
}
