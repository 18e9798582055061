package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

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

// linkError returns err's *link.Error or fails.
func linkError(t *testing.T, what string, err error) *link.Error {
	t.Helper()
	var le *link.Error
	if !errors.As(err, &le) {
		t.Fatalf("%s: err = %v, want a pp-link error frame", what, err)
	}
	return le
}

// TestUnauthorizedPeerToldWhy: an unknown key gets one error frame naming
// the reflector and the pairing command before the close, answering its
// hello, instead of a bare EOF (issue 10, section 5).
func TestUnauthorizedPeerToldWhy(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	c := h.Dial(servertest.NewKey(t))
	_, err := c.Hello()
	le := linkError(t, "hello of an unknown key", err)
	if le.Code != link.CodePairingRequired || !strings.Contains(le.Message, "not authorized by "+h.Server.EndpointID().String()) ||
		!strings.Contains(le.Message, "reflector pair-with") {
		t.Fatalf("refusal %+v", le)
	}
}

// TestForeignALPNAlert: a client offering only another ALPN protocol gets
// the no_application_protocol alert, not internal_error.
func TestForeignALPNAlert(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	cert, err := identity.NewCertificate(servertest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ClientTLSConfig(cert, "h2", "")
	d := tls.Dialer{Config: conf, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	nc, err := d.DialContext(context.Background(), "tcp", h.Addr)
	if err == nil {
		_ = nc.Close()
		t.Fatal("handshake offering only h2 succeeded")
	}
	if !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("err = %v, want the no_application_protocol alert", err)
	}
}

// TestPerPeerConnectionCap: one key cannot hold more than
// max_conns_per_peer connections (it is told why); other keys are still
// served, and a closed connection frees its slot (issue 11, item 1).
func TestPerPeerConnectionCap(t *testing.T) {
	key, other := servertest.NewKey(t), servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String(), servertest.ID(other).String()}
		c.Limits.MaxConnsPerPeer = 2
	}, server.Options{})
	var held []*client.Client
	for range 2 {
		c := h.Dial(key)
		if _, err := c.Hello(); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	_, err := h.Dial(key).Hello()
	if le := linkError(t, "third connection of one key", err); le.Code != link.CodeTooManyConnections {
		t.Fatalf("refusal %+v, want code %d", le, link.CodeTooManyConnections)
	}
	if _, err := h.Dial(other).Hello(); err != nil {
		t.Fatalf("another key: %v", err)
	}
	_ = held[0].Close()
	testutil.Eventually(t, 5*time.Second, "slot freed", func() bool {
		c := h.Dial(key)
		defer c.Close()
		_, err := c.Hello()
		return err == nil
	})
	if h.Server.Stats().SourceCapRejected < 1 {
		t.Fatalf("stats %+v", h.Server.Stats())
	}
}

// TestPairingConnectionsBounded: keys that may only pair have their own
// small cap, leaving authorized peers their slots; they are closed when the
// window closes (consumed by another peer) and when it expires (issue 11,
// item 2).
func TestPairingConnectionsBounded(t *testing.T) {
	owner := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(owner).String()}
		c.Limits.MaxPairingConnections = 2
	}, server.Options{})
	token := h.OpenPairing(time.Minute)
	a, b := h.Dial(servertest.NewKey(t)), h.Dial(servertest.NewKey(t))
	for _, c := range []*client.Client{a, b} {
		if _, err := c.Hello(); err != nil {
			t.Fatalf("pairing-only hello: %v", err)
		}
	}
	_, err := h.Dial(servertest.NewKey(t)).Hello()
	if le := linkError(t, "third pairing-only connection", err); le.Code != link.CodeTooManyConnections {
		t.Fatalf("refusal %+v", le)
	}
	if _, err := h.Dial(owner).Status(); err != nil {
		t.Fatalf("authorized peer while pairing slots are full: %v", err)
	}
	if r, err := a.Pair(token); err != nil || !r.Success {
		t.Fatalf("pair: %+v %v", r, err)
	}
	// The window is consumed: b may only pair, so it is closed.
	testutil.Eventually(t, 5*time.Second, "pairing-only connection closed with the window", func() bool {
		_, err := b.Hello()
		return err != nil
	})
	if _, err := a.Status(); err != nil {
		t.Fatalf("the connection that paired was closed too: %v", err)
	}

	h.OpenPairing(time.Second)
	c := h.Dial(servertest.NewKey(t))
	if _, err := c.Hello(); err != nil {
		t.Fatalf("hello in the second window: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "pairing-only connection closed when the window expired", func() bool {
		_, err := c.Hello()
		return err != nil
	})
}

// TestWrongTokensDoNotClosePairing: wrong tokens from one key lock out that
// key only; the window stays open and another peer pairs. Every failure is
// accounted for in the audit log, aggregated per source (issue 11, items 7
// and 8).
func TestWrongTokensDoNotClosePairing(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{DenialAuditInterval: time.Hour})
	token := h.OpenPairing(time.Minute)
	guesser := h.Dial(servertest.NewKey(t))
	const tries = 6
	for i := range tries {
		r, err := guesser.Pair("0000-0000-0000-000" + string(rune('0'+i)))
		if err != nil || r.Success {
			t.Fatalf("wrong token %d: %+v %v", i, r, err)
		}
	}
	if open := h.Server.Status().Pairing.Open; !open {
		t.Fatal("wrong tokens from one key closed the window")
	}
	good := h.Dial(servertest.NewKey(t))
	if r, err := good.Pair(token); err != nil || !r.Success {
		t.Fatalf("pairing after another key's wrong tokens: %+v %v", r, err)
	}
	h.Stop()
	events := h.AuditEvents()
	failed := servertest.FindAudit(events, audit.PairingFailed)
	var summarized float64
	for _, e := range servertest.FindAudit(events, audit.RateLimited) {
		n, _ := e.Details["count"].(float64)
		summarized += n
	}
	if len(failed) != 1 || failed[0].Reason != "bad_token" || int(summarized)+len(failed) != tries {
		t.Fatalf("pairing_failed lines %+v and %.0f summarized, want 1 in full and %d in all", failed, summarized, tries)
	}
	closed := servertest.FindAudit(events, audit.PairingClosed)
	if len(closed) != 1 || closed[0].Reason != "consumed" {
		t.Fatalf("pairing_closed lines %+v, want one, consumed", closed)
	}
}

// TestPairingAuditTrail: `peers add` and the window expiring are audited
// (issue 11, item 7).
func TestPairingAuditTrail(t *testing.T) {
	h := servertest.Start(t, nil, server.Options{})
	id := servertest.ID(servertest.NewKey(t))
	if err := h.Admin(admin.Request{Op: admin.OpPeersAdd, ID: id.String(), Note: "lab"}, nil); err != nil {
		t.Fatal(err)
	}
	h.OpenPairing(time.Second)
	testutil.Eventually(t, 10*time.Second, "expiry audited", func() bool {
		c := servertest.FindAudit(h.AuditEvents(), audit.PairingClosed)
		return len(c) == 1 && c[0].Reason == "expired"
	})
	added := servertest.FindAudit(h.AuditEvents(), audit.PeerAdded)
	if len(added) != 1 || added[0].PeerID != id.String() || added[0].Reason != "admin" {
		t.Fatalf("peer_added lines %+v", added)
	}
}

// TestPairingTokenLogging: the start-up window of pairing_enabled = true
// logs its token once; a token made for `reflector pair` goes only to the
// admin client, never to the log (issue 11, item 6).
func TestPairingTokenLogging(t *testing.T) {
	var logs testutil.SyncBuffer
	h := servertest.Start(t, func(c *config.Config) { c.Access.PairingEnabled = true },
		server.Options{Logger: zerolog.New(&logs).Level(zerolog.DebugLevel)})
	if n := strings.Count(logs.String(), `"token":`); n != 1 {
		t.Fatalf("start-up log shows %d tokens, want 1:\n%s", n, logs.String())
	}
	token := h.OpenPairing(time.Minute)
	c := h.Dial(servertest.NewKey(t))
	if r, err := c.Pair(token + "0"); err != nil || r.Success {
		t.Fatalf("wrong token: %+v %v", r, err)
	}
	if r, err := c.Pair(token); err != nil || !r.Success {
		t.Fatalf("pair: %+v %v", r, err)
	}
	h.Stop()
	out := logs.String()
	if strings.Contains(out, token) || strings.Contains(out, strings.ReplaceAll(token, "-", "")) {
		t.Fatalf("the admin's pairing token %s is in the server log:\n%s", token, out)
	}
	if n := strings.Count(out, `"token":`); n != 1 {
		t.Fatalf("log shows %d tokens, want only the start-up one", n)
	}
}

// TestClientHelloTimeout: a connection that never starts its ClientHello
// is closed after the short ClientHello timeout, long before the
// handshake timeout (issue 11, item 3).
func TestClientHelloTimeout(t *testing.T) {
	h := servertest.Start(t, func(c *config.Config) { c.Limits.HandshakeTimeoutSec = 120 },
		server.Options{ClientHelloTimeout: shortHelloTimeout(500 * time.Millisecond)})
	nc, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("silent connection: read %d, %v; want it closed before the 120 s handshake timeout", n, err)
	}
}

// shortHelloTimeout is d under -short and zero (the fixed 3 s
// ClientHello timeout) in the full run, which keeps testing the default.
func shortHelloTimeout(d time.Duration) time.Duration {
	if testing.Short() {
		return d
	}
	return 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestHandshakeFloodLeavesRoom: silent connections from many loopback
// addresses, each sending the first byte of a ClientHello so that only the
// handshake timeout ends them, fill what an address, a /24 and unknown
// addresses may hold; a returning authorized peer still completes its
// handshake and is answered (issue 11, item 3; the stress suite runs the
// 3,000-connection version).
func TestHandshakeFloodLeavesRoom(t *testing.T) {
	peer := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(peer).String()}
		c.Limits.MaxHandshakes = 32
		c.Limits.MaxHandshakesPerAddr = 4
		c.Limits.HandshakeTimeoutSec = 60
		c.Limits.NewConnsPerSecPerAddr = 1000
		c.Limits.NewConnsBurstPerAddr = 1000
	}, server.Options{})
	first := h.Dial(peer) // the peer's address becomes known
	if _, err := first.Hello(); err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	const addrs, each = 20, 6
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range addrs * each {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(2+i%addrs/2), byte(1+i%addrs))}}
		nc, err := d.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write([]byte{0x16}) // a TLS handshake record starts, and stalls
		conns = append(conns, nc)
	}
	testutil.Eventually(t, 10*time.Second, "the flood refused beyond its share", func() bool {
		return h.Server.Stats().HandshakeLimited >= addrs*each-24
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.Addr, peer, h.Server.EndpointID())
	if err != nil {
		t.Fatalf("returning peer during the flood: %v (stats %+v)", err, h.Server.Stats())
	}
	defer c.Close()
	if _, err := c.Hello(); err != nil {
		t.Fatalf("returning peer's hello during the flood: %v", err)
	}
}
