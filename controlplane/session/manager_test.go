package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// recorder is an audit.Writer that keeps events and can fail grants.
type recorder struct {
	mu        sync.Mutex
	events    []audit.Event
	failGrant bool
	// stall, when set, delays every write by that long (a slow disk)
	// or until unstall is closed; stalled counts the writes waiting in it.
	stall   time.Duration
	unstall chan struct{}
	stalled atomic.Int32
}

// setStall makes every later write wait d; zero also ends the waits of
// the writes already stalled.
func (r *recorder) setStall(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unstall != nil {
		close(r.unstall)
		r.unstall = nil
	}
	r.stall = d
	if d > 0 {
		r.unstall = make(chan struct{})
	}
}

func (r *recorder) Write(e audit.Event) error {
	r.mu.Lock()
	d, unstall := r.stall, r.unstall
	r.mu.Unlock()
	if d > 0 {
		r.stalled.Add(1)
		select {
		case <-time.After(d):
		case <-unstall:
		}
		r.stalled.Add(-1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failGrant && e.EventType == audit.SessionGranted {
		return errors.New("injected audit failure")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) find(t audit.EventType, testID string) *audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.events {
		if r.events[i].EventType == t && (testID == "" || r.events[i].TestID == testID) {
			e := r.events[i]
			return &e
		}
	}
	return nil
}

// rangePorts is a minimal port pool over [base, base+n).
type rangePorts struct {
	mu     sync.Mutex
	base   int
	n      int
	inUse  map[int]bool
	leased int
	last   int // the port leased last
}

func (p *rangePorts) Acquire(try func(int) error) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last error = errors.New("no free port")
	for port := p.base; port < p.base+p.n; port++ {
		if p.inUse[port] {
			continue
		}
		if err := try(port); err != nil {
			last = err
			continue
		}
		p.inUse[port] = true
		p.leased++
		p.last = port
		return port, nil
	}
	return 0, last
}

func (p *rangePorts) Release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, port)
}

func (p *rangePorts) busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

type fixture struct {
	m     *Manager
	cfg   *config.Config
	audit *recorder
	ports *rangePorts
	quota *quota.Store
	peer  server.PeerInfo
}

const testPeer = identity.EndpointID("PP-TEST-PEER")

func newFixture(t *testing.T, tweak func(*config.Config)) *fixture {
	t.Helper()
	cfg := config.Default()
	cfg.State.Dir = t.TempDir()
	cfg.Network.ListenAddress = "127.0.0.1:0"
	cfg.Network.Mode = config.ModeDirectEphemeral
	base := testutil.PortRange(t, 10)
	cfg.Network.DataPortRangeStart, cfg.Network.DataPortRangeEnd = base, base+9
	if tweak != nil {
		tweak(cfg)
	}
	q, err := quota.Open(cfg.QuotaFile(), quota.Limits{
		MaxTestsPerHour: cfg.Quotas.MaxTestsPerHourPerPeer,
		Cooldown:        time.Duration(cfg.Quotas.CooldownSec) * time.Second,
		MaxBytesPerDay:  cfg.Quotas.MaxBytesPerDayPerPeer,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		cfg: cfg, audit: &recorder{}, quota: q,
		ports: &rangePorts{base: base, n: cfg.Network.DataPortRangeEnd - base + 1, inUse: map[int]bool{}},
		peer:  server.PeerInfo{ID: testPeer, Addr: netip.MustParseAddrPort("127.0.0.1:40000"), ConnID: 1, Features: ourFeatures},
	}
	f.m, err = New(Options{Config: cfg, Audit: f.audit, Quota: q, Ports: f.ports, openUDP: openUDPAcceptor})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := f.m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if n := f.ports.busy(); n != 0 {
			t.Errorf("%d ports still leased after shutdown", n)
		}
	})
	return f
}

// ourFeatures are what client.Hello announces but late_start: a tunnel and
// clamp capable client whose grants end at the claim deadline when unused.
var ourFeatures = []string{link.FeatureThroughput, link.FeatureUDPEcho, link.FeatureTunnel, link.FeatureClamp, server.FeatureDenyReasonsV2}

// applianceFeatures are what the shipped appliance announces.
var applianceFeatures = []string{link.FeatureThroughput, link.FeatureUDPEcho}

func ptr[T any](v T) *T { return &v }

func throughputReq(d int, streams int, reverse bool) link.SessionRequest {
	return link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{
		DurationSec: d, Protocol: ptr("tcp"), Streams: ptr(streams), Reverse: ptr(reverse),
	}}
}

func mustGrant(t *testing.T, m link.Message) *link.SessionGrant {
	t.Helper()
	g, ok := m.(*link.SessionGrant)
	if !ok {
		t.Fatalf("want a grant, got %#v", m)
	}
	return g
}

func mustDeny(t *testing.T, m link.Message, reason link.DenyReason) *link.SessionDeny {
	t.Helper()
	d, ok := m.(*link.SessionDeny)
	if !ok {
		t.Fatalf("want a deny (%s), got %#v", reason, m)
	}
	if d.Reason != reason {
		t.Fatalf("deny reason %q (%s), want %q", d.Reason, d.Message, reason)
	}
	return d
}

// refused reports whether a TCP connect to port is refused right now.
func refused(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

// waitEnded waits for the session's session_completed audit line.
func (f *fixture) waitEnded(t *testing.T, testID string, within time.Duration) *audit.Event {
	t.Helper()
	var ev *audit.Event
	testutil.Eventually(t, within, "session "+testID+" completed", func() bool {
		ev = f.audit.find(audit.SessionCompleted, testID)
		return ev != nil
	})
	return ev
}

// iperfJSON is what the tests read of iperf3 -J.
type iperfJSON struct {
	End struct {
		SumSent     struct{ Bytes int64 } `json:"sum_sent"`
		SumReceived struct{ Bytes int64 } `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

func runIperf3(t *testing.T, port int, args ...string) iperfJSON {
	t.Helper()
	bin := testutil.LookBinary(t, "iperf3")
	all := append([]string{"-c", "127.0.0.1", "-p", strconv.Itoa(port), "-J"}, args...)
	out, err := exec.Command(bin, all...).Output()
	var r iperfJSON
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("iperf3 %v: %v, output %q (%v)", all, err, out, jerr)
	}
	if err != nil || r.Error != "" {
		t.Fatalf("iperf3 %v: %v %s", all, err, r.Error)
	}
	return r
}

func TestValidate(t *testing.T) {
	cfg := config.Default()
	cfg.Quotas.MaxTestDurationSec = 30
	cfg.Quotas.EchoMaxPPS = 1000
	tests := []struct {
		name    string
		req     link.SessionRequest
		wantErr bool
		check   func(*spec) bool
	}{
		{"appliance upload", throughputReq(10, 4, false), false, func(s *spec) bool {
			return s.DurationSec == 10 && s.Streams == 4 && !s.Reverse && s.Protocol == "tcp" && len(s.Clamped) == 0
		}},
		{"default streams", link.SessionRequest{TestType: "throughput", Params: link.TestParams{DurationSec: 5}}, false,
			func(s *spec) bool { return s.Streams == cfg.Iperf3.DefaultStreams }},
		{"duration clamped", throughputReq(120, 4, true), false, func(s *spec) bool { return s.DurationSec == 30 && len(s.Clamped) == 1 }},
		{"streams clamped", throughputReq(5, 64, false), false, func(s *spec) bool { return s.Streams == 8 && len(s.Clamped) == 1 }},
		{"zero duration", throughputReq(0, 4, false), true, nil},
		{"negative streams", throughputReq(5, -1, false), true, nil},
		{"unknown type", link.SessionRequest{TestType: "ping", Params: link.TestParams{DurationSec: 5}}, true, nil},
		{"bad protocol", link.SessionRequest{TestType: "throughput", Params: link.TestParams{DurationSec: 5, Protocol: ptr("sctp")}}, true, nil},
		{"udp throughput", link.SessionRequest{TestType: "throughput", Params: link.TestParams{DurationSec: 5, Protocol: ptr("UDP")}}, false,
			func(s *spec) bool { return s.Protocol == "udp" }},
		{"echo over tcp", link.SessionRequest{TestType: "udp_echo", Params: link.TestParams{DurationSec: 5, Protocol: ptr("tcp")}}, true, nil},
		{"echo rate clamped", link.SessionRequest{TestType: "udp_echo", Params: link.TestParams{DurationSec: 5, RatePPS: ptr(5000)}}, false,
			func(s *spec) bool { return s.RatePPS == 1000 && len(s.Clamped) == 1 }},
		{"echo lower rate kept", link.SessionRequest{TestType: "udp_echo", Params: link.TestParams{DurationSec: 5, RatePPS: ptr(100), Timestamped: ptr(true)}}, false,
			func(s *spec) bool { return s.RatePPS == 100 && s.Timestamped && s.Protocol == "udp" }},
		{"reverse and bidir", link.SessionRequest{TestType: "throughput", Params: link.TestParams{DurationSec: 5, Reverse: ptr(true), Bidir: ptr(true)}}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := validate(cfg, tc.req, true, true)
			if tc.wantErr {
				var pe *paramError
				if !errors.As(err, &pe) {
					t.Fatalf("validate = %+v, %v; want a paramError", s, err)
				}
				return
			}
			if err != nil || !tc.check(s) {
				t.Fatalf("validate = %+v, %v", s, err)
			}
		})
	}
	off := config.Default()
	off.Quotas.AllowUDPEcho = false
	if _, err := validate(off, link.SessionRequest{TestType: "udp_echo", Params: link.TestParams{DurationSec: 1}}, true, true); err == nil {
		t.Fatal("udp_echo accepted with allow_udp_echo = false")
	}
}

// TestValidateWithoutClamp: a client that does not announce the clamp
// feature is refused, with a message naming each limit, where ours would
// get a clamped grant; within the limits it is served as before.
func TestValidateWithoutClamp(t *testing.T) {
	cfg := config.Default()
	cfg.Iperf3.MaxStreams = 2
	cfg.Quotas.MaxTestDurationSec = 5
	cfg.Quotas.EchoMaxPPS = 1000
	for _, tc := range []struct {
		req  link.SessionRequest
		want string
	}{
		{throughputReq(10, 4, false), "duration_sec 10 exceeds max_test_duration_sec 5; streams 4 exceeds max_streams 2 ("},
		{throughputReq(5, 4, true), "streams 4 exceeds max_streams 2 ("},
		{link.SessionRequest{TestType: "udp_echo", Params: link.TestParams{DurationSec: 5, RatePPS: ptr(5000)}}, "rate_pps 5000 exceeds echo_max_pps 1000 ("},
	} {
		_, err := validate(cfg, tc.req, true, false)
		var le *limitError
		if !errors.As(err, &le) || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), `"clamp"`) {
			t.Errorf("validate(%+v) = %v; want a limitError %q...", tc.req.Params, err, tc.want)
		}
	}
	if s, err := validate(cfg, throughputReq(5, 2, false), true, false); err != nil || len(s.Clamped) != 0 {
		t.Fatalf("within the limits: %+v, %v", s, err)
	}
}

// TestTunneledGrant: a tunneled reflector grants mode "tunneled" on the
// control port without lending a data port, and audits the mode.
func TestTunneledGrant(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Network.Mode = config.ModeTunneled })
	f.m.SetControlPort(4711)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(2, 4, false)))
	if g.Mode != link.ModeTunneled || g.Port != 4711 || g.Token == "" {
		t.Fatalf("grant %+v", g)
	}
	ev := f.audit.find(audit.SessionGranted, g.TestID)
	if ev == nil || ev.Details["mode"] != link.ModeTunneled {
		t.Fatalf("audit %+v", ev)
	}
	if f.ports.leased != 0 {
		t.Fatal("a data port was lent in tunneled mode")
	}
	if st := f.m.Status(); len(st.Active) != 1 || st.Active[0].Mode != link.ModeTunneled {
		t.Fatalf("status %+v", st)
	}
}

func TestApplianceSequence(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for i, reverse := range []bool{false, true} {
		g := mustGrant(t, f.m.Request(ctx, f.peer, throughputReq(2, 4, reverse)))
		if g.Mode != link.ModeDirectEphemeral || g.Token == "" || len(g.TestID) != 32 || g.DurationSec != 2 || g.Streams != 4 || g.Clamped {
			t.Fatalf("grant %+v", g)
		}
		if _, err := time.Parse(time.RFC3339, g.ExpiresAt); err != nil {
			t.Fatalf("expires_at %q: %v", g.ExpiresAt, err)
		}
		// -b keeps two tests within the default 5 GB daily budget on a
		// fast loopback.
		args := []string{"-t", "2", "-P", "4", "-b", "500M"}
		if reverse {
			args = append(args, "-R")
		}
		r := runIperf3(t, g.Port, args...)
		// Upload: the reflector received sum_received; download: it sent
		// sum_sent (the client's received count trails by what was in
		// flight).
		want := r.End.SumReceived.Bytes
		if reverse {
			want = r.End.SumSent.Bytes
		}
		ev := f.waitEnded(t, g.TestID, 15*time.Second)
		if ev.Reason != EndDone || ev.BytesTransferred == nil || ev.DurationSec == nil {
			t.Fatalf("test %d: completed event %+v", i, ev)
		}
		got := *ev.BytesTransferred
		diff := float64(got-want) / float64(want)
		t.Logf("test %d (reverse %v): audit bytes_transferred %d, iperf3 %d, diff %.3f%%", i, reverse, got, want, diff*100)
		if diff > 0.02 || diff < -0.02 {
			t.Fatalf("bytes_transferred %d differs from iperf3's %d by %.2f%%", got, want, diff*100)
		}
		testutil.Eventually(t, 5*time.Second, "port closed after the session", func() bool { return refused(g.Port) })
		res, ok := f.m.Result(f.peer, g.TestID).(*link.TestResult)
		if !ok || res.State != link.StateCompleted || res.BytesSent+res.BytesReceived != got {
			t.Fatalf("test_result %+v", res)
		}
	}
	if u := f.quota.Peer(testPeer.String(), time.Now()); u.TestsToday != 2 || u.BytesToday <= 0 {
		t.Fatalf("quota usage %+v", u)
	}
}

func TestBusyAndCooldownAndHourly(t *testing.T) {
	t.Parallel() // its own fixture (state dir, ports, audit); waits on session clocks
	f := newFixture(t, func(c *config.Config) { c.Quotas.MaxTestsPerHourPerPeer = 2 })
	f.m.echoGraceAfter = 200 * time.Millisecond // the echo sessions below run no probes
	ctx := context.Background()
	g := mustGrant(t, f.m.Request(ctx, f.peer, throughputReq(30, 1, false)))

	other := server.PeerInfo{ID: "PP-OTHER", Addr: netip.MustParseAddrPort("127.0.0.1:40001"), ConnID: 2}
	d := mustDeny(t, f.m.Request(ctx, other, throughputReq(2, 1, false)), link.DenyBusy)
	if d.RetryAfterSec == nil || *d.RetryAfterSec < 30 || *d.RetryAfterSec > 41 {
		t.Fatalf("busy retry_after %v, want about 40 s", d.RetryAfterSec)
	}
	// Closing a session before its test ran keeps the cooldown.
	if _, ok := f.m.Close(f.peer, g.TestID).(*link.OK); !ok {
		t.Fatal("session_close not OK")
	}
	if !refused(g.Port) {
		t.Fatal("port still open after session_close returned")
	}
	d = mustDeny(t, f.m.Request(ctx, f.peer, throughputReq(2, 1, false)), link.DenyRateLimited)
	if d.RetryAfterSec == nil || *d.RetryAfterSec < 1 || *d.RetryAfterSec > 5 {
		t.Fatalf("cooldown retry_after %v", d.RetryAfterSec)
	}
	// The other peer is not held back by this peer's cooldown.
	g2 := mustGrant(t, f.m.Request(ctx, other, link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}}))
	f.waitEnded(t, g2.TestID, 10*time.Second)
	// Closing an unknown or someone else's test is an error.
	if _, ok := f.m.Close(f.peer, g2.TestID).(*link.Error); !ok {
		t.Fatal("closed another peer's test")
	}

	// An echo test that runs its duration releases the cooldown; the
	// hourly limit (2) then refuses the third start.
	q := f.quota
	if err := q.End(testPeer.String(), true, time.Now()); err != nil {
		t.Fatal(err)
	}
	g3 := mustGrant(t, f.m.Request(ctx, f.peer, link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}}))
	f.waitEnded(t, g3.TestID, 10*time.Second)
	d = mustDeny(t, f.m.Request(ctx, f.peer, throughputReq(2, 1, false)), link.DenyRateLimited)
	if d.RetryAfterSec == nil || *d.RetryAfterSec < 3500 {
		t.Fatalf("hourly retry_after %v, want about an hour", d.RetryAfterSec)
	}
}

func TestByteBudgetCutOff(t *testing.T) {
	const budget = 50_000_000
	f := newFixture(t, func(c *config.Config) { c.Quotas.MaxBytesPerDayPerPeer = budget })
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(10, 1, false)))
	bin := testutil.LookBinary(t, "iperf3")
	start := time.Now()
	// The client fails when the server cuts the test; its output is not
	// the point here.
	_ = exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "10", "-b", "400M").Run()
	ev := f.waitEnded(t, g.TestID, 20*time.Second)
	if took := time.Since(start); took > 9*time.Second {
		t.Fatalf("the test ran %v: not cut off", took)
	}
	if b := *ev.BytesTransferred; ev.Reason != EndQuotaExceeded || b < budget || b > budget*101/100 {
		t.Fatalf("completed event %+v (bytes %d, budget %d)", ev, b, budget)
	}
	if qe := f.audit.find(audit.QuotaExceeded, g.TestID); qe == nil {
		t.Fatal("no quota_exceeded audit event")
	}
	mustDeny(t, f.m.Request(context.Background(), f.peer, throughputReq(2, 1, false)), link.DenyQuotaExceeded)
	testutil.Eventually(t, 5*time.Second, "port closed", func() bool { return refused(g.Port) })
}

func TestForeignSourceRefused(t *testing.T) {
	f := newFixture(t, nil)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(3, 1, false)))
	bin := testutil.LookBinary(t, "iperf3")
	done := make(chan error, 1)
	go func() {
		done <- exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "3", "-b", "200M", "-J").Run()
	}()
	// Wait until the real test runs, then knock from 127.0.0.2.
	testutil.Eventually(t, 5*time.Second, "test running", func() bool {
		r, ok := f.m.Result(f.peer, g.TestID).(*link.TestResult)
		return ok && r.BytesReceived > 0
	})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(g.Port))
	if err != nil {
		t.Fatalf("dial from 127.0.0.2: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || int8(b[0]) != -1 {
		t.Fatalf("foreign connection got %d, %v; want ACCESS_DENIED (-1)", int8(b[0]), err)
	}
	_ = c.Close()
	if err := <-done; err != nil {
		t.Fatalf("the real test was disturbed: %v", err)
	}
	ev := f.waitEnded(t, g.TestID, 15*time.Second)
	if ev.Reason != EndDone {
		t.Fatalf("end reason %q", ev.Reason)
	}
	var sum struct {
		Summary throughputSummary `json:"summary"`
	}
	b2, _ := json.Marshal(ev.Details)
	if err := json.Unmarshal(b2, &sum); err != nil || sum.Summary.ForeignRefused < 1 {
		t.Fatalf("summary %s: foreign connections not counted (%v)", b2, err)
	}
}

func TestEchoSession(t *testing.T) {
	t.Parallel() // its own fixture (state dir, ports, audit); waits on session clocks
	f := newFixture(t, func(c *config.Config) { c.Quotas.EchoMaxPPS = 200 })
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, link.SessionRequest{
		TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 2, Timestamped: ptr(true)},
	}))
	conn, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(g.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 500 pps against a 200 pps clamp: the excess is dropped and reported.
	res, err := echo.Probe(context.Background(), conn, echo.ProbeConfig{Rate: 500, Size: 64, Duration: time.Second, Timestamped: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.Lost == 0 || res.Corrupt != 0 {
		t.Fatalf("probe result %+v: want some replies and clamp losses", res)
	}
	if _, ok := f.m.Close(f.peer, g.TestID).(*link.OK); !ok {
		t.Fatal("close failed")
	}
	ev := f.waitEnded(t, g.TestID, 5*time.Second)
	if *ev.BytesTransferred != int64(res.Received)*64 && *ev.BytesTransferred < int64(res.Received)*64 {
		t.Fatalf("echo bytes %d, replies %d", *ev.BytesTransferred, res.Received)
	}
	rl := f.audit.find(audit.RateLimited, g.TestID)
	if rl == nil || fmt.Sprint(rl.Details["dropped"]) == "0" {
		t.Fatalf("rate clamp not audited: %+v", rl)
	}
}

func TestAuditFailureFailsClosed(t *testing.T) {
	f := newFixture(t, nil)
	f.audit.failGrant = true
	m := f.m.Request(context.Background(), f.peer, throughputReq(2, 1, false))
	mustDeny(t, m, link.DenyResourceExhausted)
	if f.ports.leased != 1 || f.ports.busy() != 0 {
		t.Fatalf("port leased %d, busy %d: want it opened and released", f.ports.leased, f.ports.busy())
	}
	f.ports.mu.Lock()
	port := f.ports.last
	f.ports.mu.Unlock()
	if !refused(port) {
		t.Fatal("the port is still listening")
	}
	// The log works again: the very next request is granted (no stale
	// failure state stands in the way).
	f.audit.failGrant = false
	mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(2, 1, false)))
}

func TestPeerGoneEndsSessions(t *testing.T) {
	f := newFixture(t, nil)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(30, 1, false)))
	other := f.peer
	other.ConnID = 99
	f.m.PeerGone(other)
	if st := f.m.Status(); len(st.Active) != 1 {
		t.Fatalf("another connection's close ended the session: %+v", st)
	}
	f.m.PeerGone(f.peer)
	ev := f.waitEnded(t, g.TestID, 5*time.Second)
	if ev.Reason != EndPeerGone {
		t.Fatalf("reason %q", ev.Reason)
	}
	if !refused(g.Port) {
		t.Fatal("port open after the peer left")
	}
	st := f.m.Status()
	if len(st.Active) != 0 || len(st.Usage) != 1 || st.Usage[0].TestsToday != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestPortsExhausted(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Quotas.MaxConcurrentTests = 5 })
	// Occupy every port of the range.
	var lns []net.Listener
	for p := f.cfg.Network.DataPortRangeStart; p <= f.cfg.Network.DataPortRangeEnd; p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			lns = append(lns, ln)
		}
	}
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	appliance := f.peer
	appliance.Features = applianceFeatures // resource_exhausted reaches it as busy
	mustDeny(t, f.m.Request(context.Background(), appliance, throughputReq(2, 1, false)), link.DenyBusy)
	if ev := f.audit.find(audit.SessionDenied, ""); ev == nil || ev.Reason != string(link.DenyResourceExhausted) {
		t.Fatalf("audit %+v", ev)
	}
}

func TestQuotaFileRestored(t *testing.T) {
	f := newFixture(t, nil)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(30, 1, false)))
	f.m.Close(f.peer, g.TestID)
	q2, err := quota.Open(filepath.Join(f.cfg.State.Dir, "quotas.json"), quota.Limits{MaxTestsPerHour: 10, Cooldown: 5 * time.Second, MaxBytesPerDay: 1})
	if err != nil {
		t.Fatal(err)
	}
	if u := q2.Peer(testPeer.String(), time.Now()); u.TestsToday != 1 {
		t.Fatalf("persisted usage %+v", u)
	}
}

func TestUDPThroughputWithStockIperf3(t *testing.T) {
	f := newFixture(t, nil)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{
		DurationSec: 1, Protocol: ptr("udp"), Streams: ptr(2),
	}}))
	runIperf3(t, g.Port, "-u", "-b", "20M", "-t", "1", "-P", "2")
	ev := f.waitEnded(t, g.TestID, 15*time.Second)
	if ev.Reason != EndDone || *ev.BytesTransferred < 2_000_000 {
		t.Fatalf("udp session %+v, bytes %d", ev, *ev.BytesTransferred)
	}
	b, _ := json.Marshal(ev.Details)
	var d struct {
		Summary throughputSummary `json:"summary"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Summary.Protocol != "udp" || d.Summary.Packets == 0 {
		t.Fatalf("summary %s (%v)", b, err)
	}
	testutil.Eventually(t, 5*time.Second, "port closed", func() bool { return refused(g.Port) })
}

func TestProtocolMismatchRefused(t *testing.T) {
	f := newFixture(t, nil)
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(1, 1, false)))
	bin := testutil.LookBinary(t, "iperf3")
	if err := exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-u", "-t", "1").Run(); err == nil {
		t.Fatal("a UDP test ran on a TCP grant")
	}
	f.m.Close(f.peer, g.TestID)
	if ev := f.waitEnded(t, g.TestID, 5*time.Second); ev.Reason == EndDone {
		t.Fatalf("refused test reported done: %+v", ev)
	}
}

func TestUDPThroughputUnavailable(t *testing.T) {
	f := newFixture(t, nil)
	f.m.openUDP = nil
	mustDeny(t, f.m.Request(context.Background(), f.peer, link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{
		DurationSec: 1, Protocol: ptr("udp"),
	}}), link.DenyInvalidParams)
}

func TestClampedGrant(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Quotas.MaxTestDurationSec = 5 })
	g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(120, 20, false)))
	if !g.Clamped || g.DurationSec != 5 || g.Streams != f.cfg.Iperf3.MaxStreams {
		t.Fatalf("grant %+v, want clamped to 5 s and %d streams", g, f.cfg.Iperf3.MaxStreams)
	}
	st := f.m.Status()
	if len(st.Active) != 1 || st.Active[0].TestID != g.TestID || st.Active[0].Port != g.Port ||
		st.Active[0].ExpiresAt.Sub(st.Active[0].StartedAt) != 5*time.Second+throughputGrace {
		t.Fatalf("status %+v", st)
	}
	// The iperf3 server holds the client to the grant: a longer test is
	// refused.
	bin := testutil.LookBinary(t, "iperf3")
	if err := exec.Command(bin, "-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "20").Run(); err == nil {
		t.Fatal("a 20 s test ran on a 5 s grant")
	}
}

// TestSamePeerWaitsForItsEndingSession: a request that finds the only slot
// held by the same peer's session waits for it to end instead of being
// refused busy (the appliance asks at once after its iperf3 client exits).
func TestSamePeerWaitsForItsEndingSession(t *testing.T) {
	t.Parallel() // its own fixture (state dir, ports, audit); waits on session clocks
	f := newFixture(t, nil)
	f.m.echoGraceAfter = 200 * time.Millisecond // the second session runs no probes
	ctx := context.Background()
	g := mustGrant(t, f.m.Request(ctx, f.peer, link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 30}}))
	// Make the first session count as completed so the cooldown is not
	// what the second request meets.
	conn, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(g.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := echo.Probe(ctx, conn, echo.ProbeConfig{Rate: 100, Size: 64, Count: 5}, nil); err != nil {
		t.Fatal(err)
	}
	// The session ends while the request waits for it.
	var once sync.Once
	waited := false
	f.m.onWait = func() {
		once.Do(func() {
			waited = true
			go f.m.Close(f.peer, g.TestID)
		})
	}
	g2 := mustGrant(t, f.m.Request(ctx, f.peer, link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}}))
	if !waited || g2.TestID == g.TestID {
		t.Fatalf("waited %v, ids %s %s", waited, g.TestID, g2.TestID)
	}
	f.waitEnded(t, g2.TestID, 10*time.Second)
}

// TestDenyReasonForFeatures: with every data port busy, a peer whose hello
// announced deny_reasons_v2 gets resource_exhausted; the appliance (its
// hello, or none) gets busy, which it can decode. The audit always has the
// real reason.
func TestDenyReasonForFeatures(t *testing.T) {
	tests := []struct {
		name     string
		features []string
		want     link.DenyReason
	}{
		{"no hello", nil, link.DenyBusy},
		{"appliance hello", []string{link.FeatureThroughput, link.FeatureUDPEcho}, link.DenyBusy},
		{"deny_reasons_v2", []string{link.FeatureThroughput, link.FeatureUDPEcho, server.FeatureDenyReasonsV2}, link.DenyResourceExhausted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.ports.mu.Lock()
			for port := f.ports.base; port < f.ports.base+f.ports.n; port++ {
				f.ports.inUse[port] = true
			}
			f.ports.mu.Unlock()
			t.Cleanup(func() {
				f.ports.mu.Lock()
				clear(f.ports.inUse)
				f.ports.mu.Unlock()
			})
			peer := f.peer
			peer.Features = tc.features
			mustDeny(t, f.m.Request(context.Background(), peer, throughputReq(2, 1, false)), tc.want)
			if ev := f.audit.find(audit.SessionDenied, ""); ev == nil || ev.Reason != string(link.DenyResourceExhausted) {
				t.Fatalf("audit %+v, want session_denied resource_exhausted", ev)
			}
		})
	}
}
