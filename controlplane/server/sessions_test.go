package server_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// fakeSessions records what the server hands it.
type fakeSessions struct {
	env server.Env

	mu       sync.Mutex
	requests []link.SessionRequest
	attached []link.TunnelAttach
	gone     []server.PeerInfo
	active   []server.ActiveSession
}

func (f *fakeSessions) Request(_ context.Context, p server.PeerInfo, req link.SessionRequest) link.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.env.AuditHealthy() != nil {
		return &link.SessionDeny{Reason: link.DenyBusy, Message: "audit"}
	}
	now := time.Now()
	f.active = append(f.active, server.ActiveSession{TestID: "t1", TestType: req.TestType, PeerID: p.ID, StartedAt: now, ExpiresAt: now.Add(30 * time.Second)})
	return &link.SessionGrant{TestID: "t1", Mode: link.ModeTunneled, Token: "tok", ExpiresAt: now.Add(30 * time.Second).Format(time.RFC3339)}
}

func (f *fakeSessions) Close(server.PeerInfo, string) link.Message { return &link.OK{} }

func (f *fakeSessions) Result(_ server.PeerInfo, id string) link.Message {
	return &link.TestResult{TestID: id, State: link.StateRunning}
}

func (f *fakeSessions) Attach(_ context.Context, _ server.PeerInfo, reqID string, req link.TunnelAttach, c *link.Conn) {
	f.mu.Lock()
	f.attached = append(f.attached, req)
	f.mu.Unlock()
	_ = c.WriteMessage(reqID, &link.TunnelAttachResult{OK: true}, time.Second)
	_, _ = c.NetConn().Write([]byte("raw"))
}

func (f *fakeSessions) PeerGone(p server.PeerInfo) {
	f.mu.Lock()
	f.gone = append(f.gone, p)
	f.mu.Unlock()
}

func (f *fakeSessions) Status() server.SessionStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var usage []server.PeerUsage
	for _, a := range f.active {
		usage = append(usage, server.PeerUsage{PeerID: a.PeerID, TestsToday: 1, BytesToday: 1234})
	}
	return server.SessionStatus{Active: append([]server.ActiveSession(nil), f.active...), Usage: usage}
}

func (f *fakeSessions) Shutdown(context.Context) error { return nil }

func TestSessionsDispatch(t *testing.T) {
	key, other := servertest.NewKey(t), servertest.NewKey(t)
	fake := &fakeSessions{}
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String(), servertest.ID(other).String()}
		// The fake session never ends: do not wait out the drain grace at
		// shutdown (lifecycle_test covers the drain).
		c.Limits.ShutdownGraceSec = 0
	}, server.Options{NewSessions: func(env server.Env) (server.Sessions, error) {
		fake.env = env
		return fake, nil
	}})
	if fake.env.EndpointID != h.Server.EndpointID() || fake.env.Audit == nil {
		t.Fatalf("env %+v", fake.env)
	}
	c := h.Dial(key)
	sh, err := c.Hello()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(sh.Features, link.FeatureTunnel) || !slices.Contains(sh.Features, link.FeatureTestResult) {
		t.Fatalf("features %v: want the session extensions announced", sh.Features)
	}
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 10}})
	if err != nil || g.TestID != "t1" {
		t.Fatalf("grant %+v %v", g, err)
	}
	st, err := c.Status()
	if err != nil || st.ActiveTest == nil || st.ActiveTest.TestID != "t1" || st.ActiveTest.PeerID != servertest.ID(key).String() ||
		st.ActiveTest.RemainingSec == 0 || st.TestsToday != 1 || st.BytesToday != 1234 {
		t.Fatalf("status %+v %v", st, err)
	}
	// Another peer sees that a test runs, not whose.
	c2 := h.Dial(other)
	st2, err := c2.Status()
	if err != nil || st2.ActiveTest == nil || st2.ActiveTest.PeerID != "" || st2.ActiveTest.TestID != "" || st2.TestsToday != 0 {
		t.Fatalf("other peer's status %+v %v", st2, err)
	}
	if r, err := c.TestResult("t1"); err != nil || r.TestID != "t1" {
		t.Fatalf("test_result %+v %v", r, err)
	}
	if err := c.CloseSession("t1"); err != nil {
		t.Fatal(err)
	}

	// tunnel_attach as the first frame hands the connection over.
	tc := rawConn(t, h, key)
	lc := link.NewConn(tc)
	reply, err := lc.Call("req-1", &link.TunnelAttach{TestID: "t1", Token: "tok"}, 5*time.Second)
	if ok, _ := reply.(*link.TunnelAttachResult); err != nil || ok == nil || !ok.OK {
		t.Fatalf("attach %#v %v", reply, err)
	}
	buf := make([]byte, 3)
	if _, err := tc.Read(buf); err != nil || string(buf) != "raw" {
		t.Fatalf("raw pipe: %q %v", buf, err)
	}
	_ = c.Close()
	testutil.Eventually(t, 5*time.Second, "PeerGone for the closed control connection", func() bool {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		for _, p := range fake.gone {
			if p.ID == servertest.ID(key) && p.Addr.IsValid() && p.ConnID != 0 {
				return true
			}
		}
		return false
	})
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.requests) != 1 || len(fake.attached) != 1 || fake.attached[0].Token != "tok" {
		t.Fatalf("requests %+v attached %+v", fake.requests, fake.attached)
	}
}
