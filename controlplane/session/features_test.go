package session

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// counter returns the value of the counter name{label=value} in m, -1
// when there is no such series.
func counter(t *testing.T, m *metrics.Metrics, name, label, value string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// withFeatures returns f's peer announcing features.
func (f *fixture) withFeatures(features ...string) server.PeerInfo {
	p := f.peer
	p.Features = features
	return p
}

// TestGrantFollowsHello: [network] mode and what the client announced
// decide the grant; a client that cannot run the only mode on offer is
// refused invalid_params with a message naming the fix, audited with the
// missing feature, counted (metric, status) and charged nothing.
func TestGrantFollowsHello(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		features []string
		want     string // grant mode, or "" for the refusal
	}{
		{config.ModeTunneled, applianceFeatures, ""},
		{config.ModeTunneled, ourFeatures, link.ModeTunneled},
		{config.ModeAuto, applianceFeatures, link.ModeDirectEphemeral},
		{config.ModeAuto, ourFeatures, link.ModeTunneled},
		{config.ModeDirectEphemeral, ourFeatures, link.ModeDirectEphemeral},
		{config.ModeDirectEphemeral, applianceFeatures, link.ModeDirectEphemeral},
	} {
		t.Run(tc.mode+"/"+strings.Join(tc.features, ","), func(t *testing.T) {
			f := newFixture(t, func(c *config.Config) { c.Network.Mode = tc.mode })
			f.m.metrics = metrics.New("test", "test")
			f.m.SetControlPort(4711)
			reply := f.m.Request(context.Background(), f.withFeatures(tc.features...), throughputReq(2, 4, false))
			if tc.want != "" {
				g := mustGrant(t, reply)
				if g.Mode != tc.want {
					t.Fatalf("granted %s, want %s", g.Mode, tc.want)
				}
				inRange := g.Port >= f.cfg.Network.DataPortRangeStart && g.Port <= f.cfg.Network.DataPortRangeEnd
				if (tc.want == link.ModeTunneled) != (g.Port == 4711) || (tc.want == link.ModeDirectEphemeral) != inRange {
					t.Fatalf("%s grant on port %d", g.Mode, g.Port)
				}
				return
			}
			d := mustDeny(t, reply, link.DenyInvalidParams)
			for _, want := range []string{"tunneled tests only", `"tunnel"`, `mode = "auto"`, "direct_ephemeral"} {
				if !strings.Contains(d.Message, want) {
					t.Errorf("message %q does not say %q", d.Message, want)
				}
			}
			ev := f.audit.find(audit.SessionDenied, "")
			if ev == nil || ev.Reason != string(link.DenyInvalidParams) || ev.Details["missing_feature"] != "tunnel" {
				t.Fatalf("audit %+v", ev)
			}
			if u := f.quota.Peer(testPeer.String(), time.Now()); u.TestsLastHour != 0 || u.TestsToday != 0 {
				t.Fatalf("a refused request was charged: %+v", u)
			}
			if n := f.m.Status().LegacyClientDenials; n != 1 {
				t.Fatalf("status counts %d legacy denials, want 1", n)
			}
			if v := counter(t, f.m.metrics, "reflector_legacy_client_denials_total", "missing", "tunnel"); v != 1 {
				t.Fatalf("legacy_client_denials_total{missing=tunnel} = %v, want 1", v)
			}
			// The same peer at once, now announcing tunnel: no cooldown.
			mustGrant(t, f.m.Request(context.Background(), f.withFeatures(ourFeatures...), throughputReq(2, 4, false)))
		})
	}
}

// TestClampRefusedWithoutFeature: above the limits, the shipped appliance
// (no clamp feature; it always runs -P 4 for 10 s or more) is refused with
// the limit named, charged nothing; our client gets the clamped grant.
func TestClampRefusedWithoutFeature(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Iperf3.MaxStreams = 2 })
	f.m.metrics = metrics.New("test", "test")
	d := mustDeny(t, f.m.Request(context.Background(), f.withFeatures(applianceFeatures...), throughputReq(10, 4, false)), link.DenyInvalidParams)
	if !strings.HasPrefix(d.Message, "streams 4 exceeds max_streams 2") {
		t.Fatalf("message %q", d.Message)
	}
	if u := f.quota.Peer(testPeer.String(), time.Now()); u.TestsLastHour != 0 {
		t.Fatalf("a refused request was charged: %+v", u)
	}
	if v := counter(t, f.m.metrics, "reflector_legacy_client_denials_total", "missing", "clamp"); v != 1 {
		t.Fatalf("legacy_client_denials_total{missing=clamp} = %v, want 1", v)
	}
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(10, 4, false)))
	if !g.Clamped || g.Streams != 2 {
		t.Fatalf("grant %+v, want clamped to 2 streams", g)
	}
}

// TestUnclaimedGrantEnds: a grant nobody connects to ends at the claim
// deadline (no_client, audited with claimed false), frees the only slot
// and the cooldown at once; its start stays in the hour. A client that
// announced late_start keeps its grant past the claim deadline.
func TestUnclaimedGrantEnds(t *testing.T) {
	// Its own fixture (state dir, ports, audit); waits on session clocks.
	t.Parallel()
	f := newFixture(t, nil) // max_concurrent_tests 1, cooldown 5 s
	f.m.claimAfter = 300 * time.Millisecond
	appliance := f.withFeatures(applianceFeatures...)
	g := mustGrant(t, f.m.Request(context.Background(), appliance, throughputReq(10, 4, false)))
	ev := f.waitEnded(t, g.TestID, 5*time.Second)
	if ev.Reason != EndNoClient || ev.Details["claimed"] != false {
		t.Fatalf("completed %+v", ev)
	}
	if took := *ev.DurationSec; took > 3 {
		t.Fatalf("the unused grant lived %.1f s", took)
	}
	testutil.Eventually(t, 5*time.Second, "port closed", func() bool { return refused(g.Port) })
	// The slot and the cooldown are free: the same peer at once.
	late := f.withFeatures(append(applianceFeatures, link.FeatureLateStart)...)
	g2 := mustGrant(t, f.m.Request(context.Background(), late, throughputReq(10, 4, false)))
	if u := f.quota.Peer(testPeer.String(), time.Now()); u.TestsLastHour != 2 {
		t.Fatalf("tests in the hour %d, want 2 (the unused grant counts)", u.TestsLastHour)
	}
	time.Sleep(3 * f.m.claimAfter) // the claim deadline must pass without effect
	if st := f.m.Status(); len(st.Active) != 1 || st.Active[0].TestID != g2.TestID {
		t.Fatalf("late_start grant ended early: %+v", st)
	}
}

// TestNoIOUnderLock: while a grant waits 2 s for its audit line (a slow
// disk), the manager still answers another peer's status, result and
// close at once: no disk or socket work is done under its lock.
func TestNoIOUnderLock(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Quotas.MaxConcurrentTests = 2 })
	const stall = 2 * time.Second
	f.audit.setStall(stall)
	done := make(chan link.Message, 1)
	go func() { done <- f.m.Request(context.Background(), f.peer, throughputReq(2, 1, false)) }()
	testutil.Eventually(t, 5*time.Second, "grant waiting in its audit write", func() bool {
		f.m.mu.Lock()
		defer f.m.mu.Unlock()
		return f.m.pending == 1 && f.audit.stalled.Load() == 1
	})
	other := server.PeerInfo{ID: "PP-OTHER", Addr: f.peer.Addr, ConnID: 2}
	start := time.Now()
	_ = f.m.Status()
	_ = f.m.Result(other, "nope")
	_ = f.m.Close(other, "nope")
	f.m.PeerGone(other)
	took := time.Since(start)
	t.Logf("status, result, close and peer_gone took %v during a %v audit stall", took, stall)
	if took > stall/4 {
		t.Fatalf("the manager answered after %v: it waited for the stalled audit write", took)
	}
	f.audit.setStall(0)
	mustGrant(t, <-done)
}

// TestSecondControlConnectionRefused: only the first iperf3 control
// connection of a grant runs a test; a second one from the grant holder's
// address gets ACCESS_DENIED, and is counted and audited.
func TestSecondControlConnectionRefused(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	f := newFixture(t, nil)
	f.m.metrics = metrics.New("test", "test")
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(3, 2, false)))
	cmd := exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "3", "-P", "2", "-b", "100M", "-J")
	out := make(chan []byte, 1)
	go func() { b, _ := cmd.Output(); out <- b }()
	testutil.Eventually(t, 10*time.Second, "test running", func() bool {
		f.m.mu.Lock()
		s := f.m.active[g.TestID]
		f.m.mu.Unlock()
		if s == nil {
			return false
		}
		_, rx := s.eng.meter()
		return rx > 0
	})
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.Port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(strings.Repeat("x", 36) + "\x00"))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || int8(b[0]) != -1 {
		t.Fatalf("second control connection read %v, %v; want ACCESS_DENIED (-1)", b, err)
	}
	_ = c.Close()
	var r iperfJSON
	if err := json.Unmarshal(<-out, &r); err != nil || r.Error != "" || r.End.SumReceived.Bytes == 0 {
		t.Fatalf("the first client's test: %+v, %v", r, err)
	}
	ev := f.waitEnded(t, g.TestID, 20*time.Second)
	var sum throughputSummary
	raw, _ := json.Marshal(ev.Details["summary"])
	if err := json.Unmarshal(raw, &sum); err != nil || sum.ExtraRefused != 1 || ev.Reason != EndDone {
		t.Fatalf("completed %+v, summary %s", ev, raw)
	}
	d := f.audit.find(audit.ConnectionDenied, g.TestID)
	if d == nil || d.Reason != "grant_already_claimed" || d.Details["refused"] != int64(1) {
		t.Fatalf("audit %+v", d)
	}
	if v := counter(t, f.m.metrics, "reflector_data_connections_refused_total", "reason", "already_claimed"); v != 1 {
		t.Fatalf("data_connections_refused_total{already_claimed} = %v", v)
	}
}
