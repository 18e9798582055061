package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// applianceRun is what the shipped appliance's sequence got.
type applianceRun struct {
	replies []link.Message // to req-1 and req-2
	iperf   []error        // stock iperf3 per granted test
}

// runAppliance plays the shipped appliance against addr exactly: TLS 1.3
// with its client certificate and no ALPN, hello "init-0" announcing only
// throughput and udp_echo, "req-1" upload (10 s, 4 streams), stock
// `iperf3 -c 127.0.0.1 -p <grant.port> -t secs -P 4 -J` about 500 ms after
// the grant, then at once "req-2" download (reverse) and its iperf3, and
// never a session_close. secs shortens the iperf3 runs (the appliance runs
// 10 s); the requests still say 10.
func runAppliance(t *testing.T, addr string, keyFile, iperf3 string, secs int) applianceRun {
	t.Helper()
	key, err := identity.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ClientTLSConfig(cert, "", "")
	conf.NextProtos = nil // the appliance offers no ALPN
	d := tls.Dialer{Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	nc, err := d.DialContext(ctx, "tcp", addr)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if v := nc.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %x", v)
	}
	lc := link.NewConn(nc)
	if _, err := lc.Call("init-0", &link.Hello{Version: "1.0", Features: []string{"throughput", "udp_echo"}}, 10*time.Second); err != nil {
		t.Fatalf("hello: %v", err)
	}
	var run applianceRun
	for i, reverse := range []bool{false, true} {
		req := &link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{
			DurationSec: 10, Protocol: ptrTo("tcp"), Streams: ptrTo(4), Reverse: ptrTo(reverse),
		}}
		reply, err := lc.Call(fmt.Sprintf("req-%d", i+1), req, 15*time.Second)
		if err != nil {
			t.Fatalf("req-%d: %v", i+1, err)
		}
		run.replies = append(run.replies, reply)
		g, ok := reply.(*link.SessionGrant)
		if !ok {
			continue
		}
		time.Sleep(500 * time.Millisecond)
		args := []string{"-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", strconv.Itoa(secs), "-P", "4", "-J"}
		if reverse {
			args = append(args, "-R")
		}
		out, err := exec.Command(iperf3, args...).Output()
		var res struct {
			Error string `json:"error"`
		}
		if err == nil {
			if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" {
				err = fmt.Errorf("iperf3 -J: %v %s", jerr, res.Error)
			}
		}
		run.iperf = append(run.iperf, err)
	}
	return run
}

// auditEvents reads the audit log's events of type et.
func auditEvents(t *testing.T, path string, et audit.EventType) []audit.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e audit.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.EventType == et {
			out = append(out, e)
		}
	}
	return out
}

// TestShippedApplianceEachMode runs the built binary in each [network]
// mode and plays the shipped appliance's exact sequence against it (see
// runAppliance). direct_ephemeral and auto: both tests pass and the audit
// log has two session_completed with bytes. tunneled (the default): both
// requests are refused invalid_params naming the fix, nothing is charged
// to the peer, and `reflector status` counts the legacy-client denials.
func TestShippedApplianceEachMode(t *testing.T) {
	iperf3 := testutil.LookBinary(t, "iperf3")
	for _, mode := range []string{"direct_ephemeral", "auto", "tunneled"} {
		t.Run(mode, func(t *testing.T) {
			env := testEnv(t, t.TempDir())
			keyFile := filepath.Join(t.TempDir(), "appliance.key")
			id := showID(t, env, "--identity", keyFile)
			state := servertest.StateDir(t)
			base := 20000 + rand.IntN(12000) // below the ephemeral range (32768+)
			// Loopback moves the default 5 GB daily budget in a second.
			body := fmt.Sprintf("[network]\nlisten_address = \"127.0.0.1:0\"\nmode = %q\ndata_port_range_start = %d\ndata_port_range_end = %d\n"+
				"[state]\ndir = %q\n[access]\nauthorized_peers = [%q]\n[quotas]\nmax_bytes_per_day_per_peer = 1000000000000\n",
				mode, base, base+9, state, id)
			cfg := filepath.Join(t.TempDir(), "reflector.toml")
			if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			p := startServe(t, env, "-c", cfg)
			st := waitServing(t, p, env, cfg)
			run := runAppliance(t, st.ListenAddress, keyFile, iperf3, 2)
			auditLog := filepath.Join(state, "audit.jsonl")

			if mode == "tunneled" {
				for i, r := range run.replies {
					d, ok := r.(*link.SessionDeny)
					if !ok || d.Reason != link.DenyInvalidParams || !strings.Contains(d.Message, "tunneled tests only") || !strings.Contains(d.Message, `mode = "auto"`) {
						t.Fatalf("req-%d: %#v, want invalid_params naming the fix", i+1, r)
					}
				}
				var now server.Status
				if r := runBin(t, env, "status", "--json", "-c", cfg); r.code != 0 || json.Unmarshal([]byte(r.stdout), &now) != nil {
					t.Fatalf("status: %+v", r)
				}
				if len(now.Sessions.Usage) != 0 || now.Sessions.LegacyClientDenials != 2 {
					t.Fatalf("status sessions %+v: want nothing charged and 2 legacy denials", now.Sessions)
				}
				if r := runBin(t, env, "status", "-c", cfg); !strings.Contains(r.stdout, "Legacy:       2 request(s) refused") {
					t.Fatalf("status output:\n%s", r.stdout)
				}
				denied := auditEvents(t, auditLog, audit.SessionDenied)
				if len(denied) != 2 || denied[0].Details["missing_feature"] != "tunnel" {
					t.Fatalf("audit session_denied %+v", denied)
				}
				return
			}
			for i, r := range run.replies {
				if g, ok := r.(*link.SessionGrant); !ok || g.Mode != link.ModeDirectEphemeral {
					t.Fatalf("req-%d: %#v, want a direct_ephemeral grant", i+1, r)
				}
			}
			for i, err := range run.iperf {
				if err != nil {
					t.Fatalf("iperf3 of req-%d: %v\n%s", i+1, err, p.stdout.String())
				}
			}
			var done []audit.Event
			testutil.Eventually(t, 20*time.Second, "two session_completed", func() bool {
				done = auditEvents(t, auditLog, audit.SessionCompleted)
				return len(done) == 2
			})
			for _, e := range done {
				if e.Reason != "done" || e.BytesTransferred == nil || *e.BytesTransferred == 0 {
					t.Fatalf("session_completed %+v", e)
				}
			}
		})
	}
}
