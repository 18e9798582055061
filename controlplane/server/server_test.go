package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

func TestHelloPolicyStatusPathMeta(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Quotas.MaxTestDurationSec = 42
		c.Quotas.MaxConcurrentTests = 3
		c.Quotas.MaxTestsPerHourPerPeer = 7
		c.Quotas.AllowUDPEcho = false
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}, server.Options{})
	c := h.Dial(key)
	if c.ServerID() != h.Server.EndpointID() {
		t.Fatalf("ServerID %s, want %s", c.ServerID(), h.Server.EndpointID())
	}
	sh, err := c.Hello()
	if err != nil {
		t.Fatal(err)
	}
	want := link.PolicySummary{MaxTestDurationSec: 42, MaxConcurrentTests: 3, MaxTestsPerHour: 7, AllowedTestTypes: []string{"throughput"}}
	if sh.Version != "1.0" || sh.PolicySummary.MaxTestDurationSec != want.MaxTestDurationSec ||
		sh.PolicySummary.MaxConcurrentTests != want.MaxConcurrentTests || sh.PolicySummary.MaxTestsPerHour != want.MaxTestsPerHour ||
		len(sh.PolicySummary.AllowedTestTypes) != 1 || sh.PolicySummary.AllowedTestTypes[0] != "throughput" {
		t.Fatalf("server_hello = %+v, want version 1.0 and policy %+v", sh, want)
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.EndpointID != h.Server.EndpointID().String() || st.ActiveTest != nil {
		t.Fatalf("status_snapshot = %+v", st)
	}
	pm, err := c.PathMeta()
	if err != nil {
		t.Fatal(err)
	}
	if pm.MemoryTotalMB == 0 || pm.BuildVersion == "" || pm.BuildHash == "" {
		t.Fatalf("path_meta = %+v: want host memory and build info", pm)
	}
	_, err = c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 5}})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Deny.Reason != link.DenyResourceExhausted || denied.Deny.Message != "sessions are not enabled in this build" {
		t.Fatalf("session_request without sessions: %v", err)
	}
	acc := servertest.FindAudit(h.AuditEvents(), audit.ConnectionAccepted)
	if len(acc) != 1 || acc[0].PeerID != servertest.ID(key).String() || acc[0].PeerAddr == "" || acc[0].EndpointID != h.Server.EndpointID().String() {
		t.Fatalf("connection_accepted events = %+v", acc)
	}
}

func TestUnknownPeerDeniedAndAudited(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	key := servertest.NewKey(t)
	c := h.Dial(key) // TLS completes; the decision follows the handshake
	if _, err := c.Hello(); err == nil {
		t.Fatal("hello from an unknown peer answered")
	}
	testutil.Eventually(t, 5*time.Second, "denial audited", func() bool {
		return len(servertest.FindAudit(h.AuditEvents(), audit.ConnectionDenied)) == 1
	})
	ev := servertest.FindAudit(h.AuditEvents(), audit.ConnectionDenied)[0]
	if ev.Reason != server.ReasonNotAuthorized || ev.PeerID != servertest.ID(key).String() || ev.PeerAddr == "" {
		t.Fatalf("connection_denied = %+v", ev)
	}
	if s := h.Server.Stats(); s.Denied != 1 || s.Accepted != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// forgedCert is a certificate for attacker's key that names victim in its
// pp-id- SAN.
func forgedCert(t *testing.T, attacker ed25519.PrivateKey, victim identity.EndpointID) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: victim.Compact()},
		DNSNames:     []string{identity.SANPrefix + victim.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, attacker.Public(), attacker)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: attacker}
}

func TestForgedCertificateDeniedAsImpersonation(t *testing.T) {
	victim := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(victim).String()}
	}, server.Options{})
	attacker := servertest.NewKey(t)
	tc, err := client.DialTLS(context.Background(), h.Addr, forgedCert(t, attacker, servertest.ID(victim)), h.Server.EndpointID())
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer tc.Close()
	lc := link.NewConn(tc)
	if _, err := lc.Call("init-0", &link.Hello{Version: "1.0"}, 5*time.Second); err == nil {
		t.Fatal("forged certificate got an answer")
	}
	testutil.Eventually(t, 5*time.Second, "impersonation audited", func() bool {
		return len(servertest.FindAudit(h.AuditEvents(), audit.ConnectionDenied)) == 1
	})
	ev := servertest.FindAudit(h.AuditEvents(), audit.ConnectionDenied)[0]
	if ev.Reason != server.ReasonImpersonation || ev.PeerAddr == "" || ev.PeerID != servertest.ID(attacker).String() ||
		ev.Details["claimed_id"] != servertest.ID(victim).String() || ev.Details["key_id"] != servertest.ID(attacker).String() {
		t.Fatalf("connection_denied = %+v", ev)
	}
	if len(servertest.FindAudit(h.AuditEvents(), audit.ConnectionAccepted)) != 0 {
		t.Fatal("forged connection was also accepted")
	}
}

func TestPairingInProcess(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	token := h.OpenPairing(time.Minute)
	key := servertest.NewKey(t)
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatalf("hello while pairing: %v", err)
	}
	_, err := c.Status()
	var le *link.Error
	if !errors.As(err, &le) || le.Code != link.CodePairingRequired || le.Message != "pairing required" {
		t.Fatalf("get_status before pairing: %v, want error 403", err)
	}
	res, err := c.Pair("AAAA-AAAA-AAAA-AAAA")
	if err != nil || res.Success || res.EndpointID != nil {
		t.Fatalf("wrong token: %+v, %v", res, err)
	}
	res, err = c.Pair(token)
	if err != nil || !res.Success || res.EndpointID == nil || *res.EndpointID != h.Server.EndpointID().String() {
		t.Fatalf("right token: %+v, %v", res, err)
	}
	if _, err := c.Status(); err != nil {
		t.Fatalf("get_status after pairing: %v", err)
	}
	paired := servertest.FindAudit(h.AuditEvents(), audit.PeerPaired)
	if len(paired) != 1 || paired[0].PeerID != servertest.ID(key).String() {
		t.Fatalf("peer_paired events %+v", paired)
	}
	if len(servertest.FindAudit(h.AuditEvents(), audit.PairingEnabled)) != 1 {
		t.Fatal("pairing_enabled not audited")
	}
	// The token is spent and the window closed: another unknown peer is
	// denied outright.
	other := h.Dial(servertest.NewKey(t))
	if _, err := other.Pair(token); err == nil {
		t.Fatal("reused token: connection still served")
	}
}

func TestPairingEnabledAtStart(t *testing.T) {
	h := servertest.Start(t, func(c *config.Config) { c.Access.PairingEnabled = true }, server.Options{})
	if st := h.Server.Status(); !st.Pairing.Open {
		t.Fatalf("pairing_enabled = true but no window: %+v", st.Pairing)
	}
}

// rawConn is an authorized TLS connection spoken frame by frame.
func rawConn(t *testing.T, h *servertest.Harness, key ed25519.PrivateKey) *tls.Conn {
	t.Helper()
	cert, err := identity.NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := client.DialTLS(context.Background(), h.Addr, cert, h.Server.EndpointID())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	return tc
}

func writeRaw(t *testing.T, w io.Writer, payload string) {
	t.Helper()
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	if _, err := w.Write(append(buf, payload...)); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownAndOutOfPlaceMessagesKeepConnection(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}, server.Options{})
	tc := rawConn(t, h, key)
	lc := link.NewConn(tc)
	for _, payload := range []string{
		`{"request_id":"req-1","payload":{"type":"launch_missiles"}}`,
		`{"request_id":"req-2","payload":{"type":"ok"}}`,
		`{"request_id":"req-3","payload":{"type":"tunnel_attach","test_id":"x","token":"y"}}`,
	} {
		writeRaw(t, tc, payload)
		id, m, err := lc.ReadMessage(5 * time.Second)
		e, ok := m.(*link.Error)
		if err != nil || !ok || e.Code != link.CodeUnexpected {
			t.Fatalf("%s -> %s %#v %v, want error 400", payload, id, m, err)
		}
	}
	if _, err := lc.Call("req-4", &link.GetStatus{}, 5*time.Second); err != nil {
		t.Fatalf("connection unusable after 400s: %v", err)
	}
	writeRaw(t, tc, `{"request_id":"req-5","payload":{"type":`)
	if _, _, err := lc.ReadMessage(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after a malformed frame: %v, want the connection closed", err)
	}
	if s := h.Server.Stats(); s.Malformed != 1 {
		t.Fatalf("stats %+v, want 1 malformed", s)
	}
}

func TestOversizedFrameCloses(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}, server.Options{})
	tc := rawConn(t, h, key)
	if _, err := tc.Write([]byte{0x7f, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after oversized header: %v, want EOF", err)
	}
}

func TestPeerRemovalClosesConnections(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	var res admin.PeersRemoveResult
	if err := h.Admin(admin.Request{Op: admin.OpPeersRemove, ID: servertest.ID(key).String()}, &res); err != nil || !res.Removed {
		t.Fatalf("remove: %+v %v", res, err)
	}
	if _, err := c.Status(); err == nil {
		t.Fatal("removed peer's connection still answered")
	}
	rm := servertest.FindAudit(h.AuditEvents(), audit.PeerRemoved)
	if len(rm) != 1 || rm[0].PeerID != servertest.ID(key).String() {
		t.Fatalf("peer_removed events %+v", rm)
	}
}

func TestReloadDropsConfigPeer(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}, server.Options{})
	c := h.Dial(key)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	next := servertest.Config(h.StateDir)
	if err := h.Server.Reload(next); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(); err == nil {
		t.Fatal("peer dropped from the config still answered after reload")
	}
}

func TestAdminStatusAndLimits(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	var st server.Status
	if err := h.Admin(admin.Request{Op: admin.OpStatus}, &st); err != nil {
		t.Fatal(err)
	}
	if st.EndpointID != h.Server.EndpointID().String() || st.ListenAddress != h.Addr || !st.AuditHealthy || st.Mode != "tunneled" {
		t.Fatalf("status %+v", st)
	}
	err := h.Admin(admin.Request{Op: admin.OpPair, TTLSec: 999999}, nil)
	var re *admin.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("pair with a huge TTL: %v", err)
	}
	err = h.Admin(admin.Request{Op: admin.OpPeersAdd, ID: "PP-NOT-AN-ID"}, nil)
	if !errors.As(err, &re) {
		t.Fatalf("add a bad ID: %v", err)
	}
}

func TestFrameRateLimitCloses(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
		c.Limits.MaxFramesPerSec = 5
	}, server.Options{})
	tc := rawConn(t, h, key)
	go func() {
		for i := 0; i < 50; i++ {
			if _, err := tc.Write(frame(`{"request_id":"req-1","payload":{"type":"get_status"}}`)); err != nil {
				return
			}
		}
	}()
	lc := link.NewConn(tc)
	answered := 0
	for {
		if _, _, err := lc.ReadMessage(5 * time.Second); err != nil {
			break
		}
		answered++
	}
	if answered >= 50 || h.Server.Stats().FrameRateExceeded != 1 {
		t.Fatalf("%d of 50 answered, stats %+v: want a close for the frame rate", answered, h.Server.Stats())
	}
}

func frame(payload string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func TestConnectionLimit(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
		c.Limits.MaxControlConnections = 1
	}, server.Options{})
	c := h.Dial(key)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c2, err := client.Dial(ctx, h.Addr, key, ""); err == nil {
		_, err = c2.Status()
		_ = c2.Close()
		if err == nil {
			t.Fatal("second connection served beyond max_control_connections = 1")
		}
	}
	testutil.Eventually(t, 5*time.Second, "rejection counted", func() bool { return h.Server.Stats().ConnLimitRejected == 1 })
	if _, err := c.Status(); err != nil {
		t.Fatalf("first connection disturbed: %v", err)
	}
}

func TestHandshakeAndIdleTimeouts(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
		c.Limits.HandshakeTimeoutSec = 1
		c.Limits.IdleTimeoutSec = 1
	}, server.Options{})
	silent, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent TCP client: %v, want closed by the handshake timeout", err)
	}
	testutil.Eventually(t, 5*time.Second, "handshake timeout counted", func() bool { return h.Server.Stats().HandshakeFailed == 1 })
	tc := rawConn(t, h, key)
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want closed", err)
	}
	testutil.Eventually(t, 5*time.Second, "idle close counted", func() bool { return h.Server.Stats().IdleClosed == 1 })
}

func TestAuditFailureReported(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
		c.Logging.AuditLogPath = "/dev/full"
	}, server.Options{})
	if err := h.Server.AuditHealthy(); err != nil {
		t.Fatalf("healthy before any write: %v", err)
	}
	c := h.Dial(key)
	if _, err := c.Status(); err != nil {
		t.Fatal(err)
	}
	if h.Server.AuditHealthy() == nil {
		t.Fatal("audit write to /dev/full not reported")
	}
	var st server.Status
	if err := h.Admin(admin.Request{Op: admin.OpStatus}, &st); err != nil || st.AuditHealthy || st.AuditError == "" {
		t.Fatalf("status %+v %v: want the audit failure", st, err)
	}
}

func TestHandshakeAndAddressLimits(t *testing.T) {
	h := servertest.Start(t, func(c *config.Config) {
		c.Limits.MaxHandshakes = 1
		c.Limits.HandshakeTimeoutSec = 30
	}, server.Options{})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testutil.Eventually(t, 5*time.Second, "second silent handshake rejected", func() bool {
		return h.Server.Stats().HandshakeLimited == 1
	})

	h2 := servertest.Start(t, func(c *config.Config) {
		c.Limits.NewConnsPerSecPerAddr = 1
		c.Limits.NewConnsBurstPerAddr = 1
	}, server.Options{})
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", h2.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testutil.Eventually(t, 5*time.Second, "connections beyond the per-address rate rejected", func() bool {
		return h2.Server.Stats().AddrRateLimited >= 1
	})
}

// TestALPN: the shipped appliance offers no ALPN and must be served; a
// client offering only other protocols is refused in the handshake.
func TestALPN(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}, server.Options{})
	cert, err := identity.NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(protos []string) (*tls.Conn, error) {
		d := tls.Dialer{Config: &tls.Config{
			Certificates:       []tls.Certificate{cert},
			InsecureSkipVerify: true, // the appliance pins nothing during this test
			NextProtos:         protos,
			MinVersion:         tls.VersionTLS12, // as rustls' defaults
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nc, err := d.DialContext(ctx, "tcp", h.Addr)
		if err != nil {
			return nil, err
		}
		tc := nc.(*tls.Conn)
		return tc, nil
	}
	tc, err := dial(nil)
	if err != nil {
		t.Fatalf("client without ALPN: %v", err)
	}
	defer tc.Close()
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated version %x, want TLS 1.3", v)
	}
	if _, err := link.NewConn(tc).Call("init-0", &link.Hello{Version: "1.0", Features: []string{"throughput", "udp_echo"}}, 5*time.Second); err != nil {
		t.Fatalf("hello without ALPN: %v", err)
	}
	if tc2, err := dial([]string{"h2"}); err == nil {
		_ = tc2.Close()
		t.Fatal("client offering only h2 completed the handshake")
	}
}

// TestDenialFloodAuditedInAggregate: 60 unknown-peer connections and 20
// silent TCP connections from one address write one connection_denied in
// full and one rate_limited summary counting the rest (written when the
// interval ends, here at shutdown), not 80 lines.
func TestDenialFloodAuditedInAggregate(t *testing.T) {
	h := servertest.Start(t, func(c *config.Config) {
		c.Limits.NewConnsPerSecPerAddr = 1000
		c.Limits.NewConnsBurstPerAddr = 1000
		c.Limits.MaxHandshakesPerAddr = 1000
		// The silent connections end at the ClientHello timeout (3 s,
		// 1 s under -short); the unknown peers' handshakes get time on a
		// loaded machine.
		c.Limits.HandshakeTimeoutSec = 10
	}, server.Options{DenialAuditInterval: time.Hour, ClientHelloTimeout: shortHelloTimeout(time.Second)})
	cert, err := identity.NewCertificate(servertest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	const denied, silent = 60, 20
	for i := 0; i < silent; i++ {
		nc, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
	}
	for i := 0; i < denied; i++ {
		tc, err := client.DialTLS(context.Background(), h.Addr, cert, h.Server.EndpointID())
		if err != nil {
			t.Fatal(err)
		}
		// The server answers the hello with its refusal and closes.
		_, _ = link.NewConn(tc).Call("init-0", &link.Hello{Version: "1.0"}, 5*time.Second)
		_ = tc.Close()
	}
	testutil.Eventually(t, 10*time.Second, "every attempt counted", func() bool {
		st := h.Server.Stats()
		return st.Denied == denied && st.HandshakeFailed == silent
	})
	if n := len(servertest.FindAudit(h.AuditEvents(), audit.RateLimited)); n != 0 {
		t.Fatalf("%d summaries before the interval ended", n)
	}
	h.Stop()
	events := h.AuditEvents()
	if full := servertest.FindAudit(events, audit.ConnectionDenied); len(full) != 1 || full[0].Reason != server.ReasonNotAuthorized {
		t.Fatalf("connection_denied lines %+v, want exactly one in full", full)
	}
	sums := servertest.FindAudit(events, audit.RateLimited)
	if len(sums) != 1 {
		t.Fatalf("summary lines %+v, want one for the one source", sums)
	}
	e := sums[0]
	reasons, _ := e.Details["reasons"].(map[string]any)
	if e.PeerAddr != "127.0.0.1" || e.Reason != "connection_denied" || e.Details["count"] != float64(denied-1+silent) ||
		reasons[server.ReasonNotAuthorized] != float64(denied-1) || reasons[server.ReasonHandshakeFailed] != float64(silent) {
		t.Fatalf("summary %+v", e)
	}
}
