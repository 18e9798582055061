package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// tunneledHarness runs a reflector in the default (tunneled) mode with one
// authorized client.
func tunneledHarness(t *testing.T) (*servertest.Harness, *client.Client) {
	t.Helper()
	h := servertest.Start(t, nil, server.Options{NewSessions: session.NewSessions})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	return h, c
}

// checkAuditBytes waits for testID's session_completed and compares its
// bytes with want (2%).
func checkAuditBytes(t *testing.T, h *servertest.Harness, testID string, want int64) *audit.Event {
	t.Helper()
	var ev *audit.Event
	testutil.Eventually(t, 15*time.Second, "session_completed audited", func() bool {
		ev = completed(h.AuditEvents(), testID)
		return ev != nil
	})
	got := *ev.BytesTransferred
	diff := float64(got-want) / float64(max(want, 1))
	t.Logf("audit bytes_transferred %d, client %d, diff %.3f%%", got, want, diff*100)
	if ev.Details["mode"] != link.ModeTunneled || diff > 0.02 || diff < -0.02 {
		t.Fatalf("completed %+v: bytes %d vs client %d", ev, got, want)
	}
	return ev
}

// TestServerTunneledThroughput runs TCP (upload, -P 2 download) and UDP
// throughput tests through the tunnel with the Go client.
func TestServerTunneledThroughput(t *testing.T) {
	h, c := tunneledHarness(t)
	ctx := context.Background()
	cases := []struct {
		name string
		o    client.ThroughputOptions
	}{
		{"tcp", client.ThroughputOptions{Duration: time.Second, Streams: 1}},
		{"tcp-P2-R", client.ThroughputOptions{Duration: time.Second, Streams: 2, Reverse: true}},
		{"udp", client.ThroughputOptions{Duration: time.Second, Streams: 1, UDP: true, Bitrate: 20_000_000}},
		{"udp-R", client.ThroughputOptions{Duration: time.Second, Streams: 1, UDP: true, Reverse: true, Bitrate: 20_000_000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := c.RunThroughput(ctx, "", tc.o, nil)
			if err != nil {
				t.Fatalf("RunThroughput: %v", err)
			}
			if rep.Grant.Mode != link.ModeTunneled || rep.Grant.Port != h.Server.Addr().(*net.TCPAddr).Port {
				t.Fatalf("grant %+v", rep.Grant)
			}
			dir := rep.Client.Upload
			if tc.o.Reverse {
				dir = rep.Client.Download
			}
			if dir == nil || dir.ReceivedBytes == 0 || dir.Streams != tc.o.Streams {
				t.Fatalf("client result %+v", dir)
			}
			want := dir.ReceivedBytes
			if tc.o.Reverse {
				want = dir.SentBytes
			}
			if tc.o.UDP {
				t.Logf("udp: %d packets, %d lost", dir.Packets, dir.Lost)
				if dir.Packets == 0 || dir.Lost*2 > dir.Packets { // loss varies with load
					t.Fatalf("lost %d of %d", dir.Lost, dir.Packets)
				}
			}
			ev := checkAuditBytes(t, h, rep.Grant.TestID, want)
			if ev.Reason != session.EndDone {
				t.Fatalf("end reason %q", ev.Reason)
			}
			if tc.o.UDP {
				checkTunnelDrops(t, ev)
			}
		})
	}
}

// checkTunnelDrops: a tunneled UDP test's summary reports what the
// reflector's end of the tunnel dropped as tunnel_drops, not as datagrams
// from other senders.
func checkTunnelDrops(t *testing.T, ev *audit.Event) {
	t.Helper()
	b, err := json.Marshal(ev.Details["summary"])
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		ForeignDropped *uint64 `json:"foreign_dropped"`
		TunnelDrops    *struct {
			QueueDropped     *uint64 `json:"queue_dropped"`
			RecvQueueDropped *uint64 `json:"recv_queue_dropped"`
			FlowDropped      *uint64 `json:"flow_dropped"`
			Incomplete       *uint64 `json:"incomplete"`
		} `json:"tunnel_drops"`
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	td := sum.TunnelDrops
	if sum.ForeignDropped != nil || td == nil || td.QueueDropped == nil || td.RecvQueueDropped == nil || td.FlowDropped == nil || td.Incomplete == nil {
		t.Fatalf("summary %s: want tunnel_drops with every counter and no foreign_dropped", b)
	}
	t.Logf("tunnel_drops %s", b)
}

// TestServerTunneledEcho runs udp_echo over the QUIC tunnel.
func TestServerTunneledEcho(t *testing.T) {
	h, c := tunneledHarness(t)
	rep, err := c.RunEcho(context.Background(), "", client.EchoOptions{Duration: time.Second, Rate: 200, Size: 200, Timestamped: true}, nil)
	if err != nil {
		t.Fatalf("RunEcho: %v", err)
	}
	if rep.Client.Sent == 0 || rep.Client.Received*2 < rep.Client.Sent {
		t.Fatalf("probe %+v", rep.Client)
	}
	ev := checkAuditBytes(t, h, rep.Grant.TestID, int64(rep.Client.Received)*200)
	if ev.Reason != session.EndClosed && ev.Reason != session.EndDone {
		t.Fatalf("end reason %q", ev.Reason)
	}
}

// attachDenied reports whether a tunnel_attach_denied with reason for
// testID is on record.
func attachDenied(h *servertest.Harness, testID, reason string) bool {
	for _, e := range servertest.FindAudit(h.AuditEvents(), audit.TunnelAttachDenied) {
		if e.TestID == testID && e.Reason == reason {
			return true
		}
	}
	return false
}

func wantRefused(t *testing.T, err error, what string) {
	t.Helper()
	var re *client.AttachRefusedError
	if !errors.As(err, &re) {
		t.Fatalf("%s: %v; want a refusal", what, err)
	}
}

// TestServerTunnelAttachRefused: attaches with a wrong token, for another
// peer's test, beyond the stream count and for an ended test are refused
// and audited, and the running test completes undisturbed.
func TestServerTunnelAttachRefused(t *testing.T) {
	h, c := tunneledHarness(t)
	otherKey := servertest.NewKey(t)
	h.Authorize(otherKey)
	other := h.Dial(otherKey)
	ctx := context.Background()

	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 2, Streams: ptr(1)}})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := c.Tunnel(g)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *iperf3proto.ClientResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := iperf3proto.RunClient(ctx, tun, iperf3proto.ClientConfig{Duration: 2 * time.Second, Parallel: 1}, nil)
		done <- result{r, err}
	}()

	bad := *g
	bad.Token = g.Token[:len(g.Token)-1] + "A"
	if bad.Token == g.Token {
		bad.Token = g.Token[:len(g.Token)-1] + "B"
	}
	badTun, _ := c.Tunnel(&bad)
	_, err = badTun.DialTCP(ctx)
	wantRefused(t, err, "wrong token")
	foreignTun, _ := other.Tunnel(g)
	_, err = foreignTun.DialTCP(ctx)
	wantRefused(t, err, "another peer's test")
	_, err = foreignTun.Session(ctx)
	wantRefused(t, err, "another peer's test over QUIC")
	// The test's control and its one stream are attached once it runs.
	testutil.Eventually(t, 5*time.Second, "test running", func() bool {
		r, err := c.TestResult(g.TestID)
		return err == nil && r.BytesReceived > 0
	})
	_, err = tun.DialTCP(ctx)
	wantRefused(t, err, "beyond streams+1")

	res := <-done
	if res.err != nil || res.r.Upload == nil || res.r.Upload.ReceivedBytes == 0 {
		t.Fatalf("the running test: %+v, %v", res.r, res.err)
	}
	checkAuditBytes(t, h, g.TestID, res.r.Upload.ReceivedBytes)
	_, err = tun.DialTCP(ctx)
	wantRefused(t, err, "ended test")

	for _, reason := range []string{session.AttachBadToken, session.AttachNotOwner, session.AttachTooMany, session.AttachUnknown} {
		if !attachDenied(h, g.TestID, reason) {
			t.Errorf("no tunnel_attach_denied %s audited", reason)
		}
	}
	if ev := completed(h.AuditEvents(), g.TestID); ev.Reason != session.EndDone {
		t.Fatalf("the running test ended %q", ev.Reason)
	}
}

// TestServerTunnelTornDownAtSessionEnd: ending the session (session_close
// here; the deadline takes the same path) closes its attached TLS
// connections and its QUIC session, and an unauthorized peer's QUIC
// attach is refused.
func TestServerTunnelTornDownAtSessionEnd(t *testing.T) {
	h, c := tunneledHarness(t)
	ctx := context.Background()
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 30, Streams: ptr(1), Protocol: ptr("udp")}})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := c.Tunnel(g)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	conn, err := tun.DialTCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := tun.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A peer that is not on the allowlist gets no QUIC attach, even with
	// the test's token. (Its control connection is closed by the server
	// after the handshake, which the client may not notice at Dial.)
	if stranger, err := client.Dial(ctx, h.Addr, servertest.NewKey(t), h.Server.EndpointID()); err == nil {
		defer stranger.Close()
		st, err := stranger.Tunnel(g)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Session(ctx); err == nil {
			_ = st.Close()
			t.Fatal("an unauthorized peer's QUIC session was attached")
		}
	}

	if err := c.CloseSession(g.TestID); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("attached connection after session_close: read %v, want closed", err)
	}
	select {
	case <-q.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("QUIC session still open after session_close")
	}
}
