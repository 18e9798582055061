package server_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// badInputHarness is a server with real sessions and two authorized
// peers: the attacker sends the bad input, the bystander stays connected
// and must keep being served.
func badInputHarness(t *testing.T) (h *servertest.Harness, attacker ed25519.PrivateKey, bystander *client.Client) {
	t.Helper()
	attacker, by := servertest.NewKey(t), servertest.NewKey(t)
	h = servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(attacker).String(), servertest.ID(by).String()}
		c.Limits.NewConnsPerSecPerAddr = 1000
		c.Limits.NewConnsBurstPerAddr = 1000
		c.Limits.HandshakeTimeoutSec = 2
		c.Network.Mode = config.ModeDirectEphemeral
		base := testutil.PortRange(t, 10)
		c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd = base, base+9
	}, server.Options{NewSessions: session.NewSessions})
	bystander = h.Dial(by)
	if _, err := bystander.Hello(); err != nil {
		t.Fatal(err)
	}
	return h, attacker, bystander
}

// expectClosed reads until the server ends the connection, failing when it
// answers anything or leaves the connection open.
func expectClosed(t *testing.T, what string, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := nc.Read(make([]byte, 256))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %d bytes, err %v; want the connection closed", what, n, err)
	}
}

func checkBystander(t *testing.T, what string, c *client.Client) {
	t.Helper()
	if _, err := c.Status(); err != nil {
		t.Fatalf("after %s: bystander's get_status failed: %v", what, err)
	}
}

// TestBadFramesDocumentedOutcomes sends each kind of hostile or broken
// frame of docs/SECURITY.md's table on an authorized connection and checks
// its outcome; after each, another connected peer is still served.
func TestBadFramesDocumentedOutcomes(t *testing.T) {
	h, attacker, bystander := badInputHarness(t)
	deep := `{"request_id":"d","payload":{"type":"hello","version":"1.0","features":` +
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`
	closes := []struct {
		name string
		wire []byte
	}{
		{"length 0x7fffffff", []byte{0x7f, 0xff, 0xff, 0xff}},
		{"length 0xffffffff", []byte{0xff, 0xff, 0xff, 0xff}},
		{"length 1 MiB + 1", binary.BigEndian.AppendUint32(nil, link.MaxFrameSize+1)},
		{"zero-length frame", []byte{0, 0, 0, 0}},
		{"invalid JSON", frame(`{"request_id":"req-1","payload":{"type":`)},
		{"not an object", frame(`[1,2,3]`)},
		{"missing request_id", frame(`{"payload":{"type":"get_status"}}`)},
		{"request_id a number", frame(`{"request_id":7,"payload":{"type":"get_status"}}`)},
		{"type a number", frame(`{"request_id":"r","payload":{"type":5}}`)},
		{"duration_sec a string", frame(`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":"ten"}}}`)},
		{"streams a bool", frame(`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":5,"streams":true}}}`)},
		{"duration_sec overflows int64", frame(`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":99999999999999999999}}}`)},
		{"duration_sec 1e400", frame(`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":1e400}}}`)},
		{"duration_sec fractional", frame(`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":1.5}}}`)},
		{"missing required field", frame(`{"request_id":"r","payload":{"type":"session_request","params":{"duration_sec":5}}}`)},
		{"nesting 20000 deep", frame(deep)},
		{"frame over MaxRequestSize (8 KiB)", frame(`{"request_id":"u2","payload":{"type":"` + strings.Repeat("x", 100000) + `"}}`)},
	}
	for _, tc := range closes {
		before := h.Server.Stats().Malformed
		conn := rawConn(t, h, attacker)
		// The server may close before reading all of a frame over
		// MaxRequestSize, failing the write.
		if _, err := conn.Write(tc.wire); err != nil && len(tc.wire) <= link.MaxRequestSize {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		expectClosed(t, tc.name, conn)
		_ = conn.Close()
		if got := h.Server.Stats().Malformed; got != before+1 {
			t.Fatalf("%s: malformed counter %d -> %d, want +1", tc.name, before, got)
		}
		checkBystander(t, tc.name, bystander)
	}

	// A truncated frame: the header promises 100 bytes, 10 arrive, then the
	// peer half-closes.
	conn := rawConn(t, h, attacker)
	if _, err := conn.Write(append(binary.BigEndian.AppendUint32(nil, 100), "0123456789"...)); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, "truncated frame", conn)
	checkBystander(t, "truncated frame", bystander)

	// Answered, connection kept: unknown types, server-side messages, and
	// parameter values the session manager refuses or clamps.
	conn = rawConn(t, h, attacker)
	lc := link.NewConn(conn)
	call := func(payload string) (string, link.Message) {
		t.Helper()
		if _, err := conn.Write(frame(payload)); err != nil {
			t.Fatal(err)
		}
		id, m, err := lc.ReadMessage(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v, want an answer", payload, err)
		}
		return id, m
	}
	for _, p := range []string{
		`{"request_id":"u1","payload":{"type":"launch_missiles"}}`,
		`{"request_id":"u2","payload":{"type":"` + strings.Repeat("x", 5000) + `"}}`,
		`{"request_id":"u3","payload":{"type":"server_hello","version":"1.0","features":[],"policy_summary":{"max_test_duration_sec":1,"max_concurrent_tests":1,"max_tests_per_hour":1,"allowed_test_types":[]}}}`,
		`{"request_id":"u4","payload":{"type":"tunnel_attach","test_id":"x","token":"y"}}`,
	} {
		id, m := call(p)
		e, ok := m.(*link.Error)
		if !ok || e.Code != link.CodeUnexpected || id != p[15:17] || len(e.Message) > 200 {
			t.Fatalf("%.80s -> %s %#v, want error 400 echoing the request id", p, id, m)
		}
	}
	checkBystander(t, "unknown message types", bystander)
	// Invalid UTF-8 is replaced by U+FFFD (encoding/json), not refused.
	if id, m := call("{\"request_id\":\"\xff\xfe\",\"payload\":{\"type\":\"get_status\"}}"); m.MessageType() != "status_snapshot" || id != "\ufffd\ufffd" {
		t.Fatalf("invalid UTF-8 request_id -> %q %#v, want status_snapshot for U+FFFD U+FFFD", id, m)
	}
	for _, p := range []string{
		`{"request_id":"n1","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":-1}}}`,
		`{"request_id":"n2","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":0}}}`,
		`{"request_id":"n3","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":5,"streams":-4}}}`,
		`{"request_id":"n4","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":5,"protocol":"sctp"}}}`,
		`{"request_id":"n5","payload":{"type":"session_request","test_type":"rm -rf","params":{"duration_sec":5}}}`,
		`{"request_id":"n6","payload":{"type":"session_request","test_type":"udp_echo","params":{"duration_sec":5,"rate_pps":-9223372036854775808}}}`,
		`{"request_id":"n7","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":5,"reverse":true,"bidir":true}}}`,
	} {
		_, m := call(p)
		d, ok := m.(*link.SessionDeny)
		if !ok || d.Reason != link.DenyInvalidParams {
			t.Fatalf("%s -> %#v, want session_deny invalid_params", p, m)
		}
	}
	checkBystander(t, "invalid parameters", bystander)
	huge := `{"request_id":"h1","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":9223372036854775807,"streams":2147483647}}}`
	// A client that did not announce clamp is refused naming the limits;
	// one that did gets the clamped grant.
	if _, m := call(huge); m.MessageType() != "session_deny" || !strings.Contains(m.(*link.SessionDeny).Message, "exceeds max_streams") {
		t.Fatalf("huge duration_sec/streams without the clamp feature -> %#v, want invalid_params naming the limits", m)
	}
	if _, m := call(`{"request_id":"h0","payload":{"type":"hello","version":"1.0","features":["throughput","udp_echo","clamp"]}}`); m.MessageType() != "server_hello" {
		t.Fatalf("hello -> %#v", m)
	}
	_, m := call(huge)
	g, ok := m.(*link.SessionGrant)
	maxDur := h.Config.Quotas.MaxTestDurationSec
	if !ok || !g.Clamped || g.DurationSec != maxDur || g.Streams != h.Config.Iperf3.MaxStreams {
		t.Fatalf("huge duration_sec/streams -> %#v, want a grant clamped to %d s and %d streams", m, maxDur, h.Config.Iperf3.MaxStreams)
	}
	if exp, err := time.Parse(time.RFC3339, g.ExpiresAt); err != nil || time.Until(exp) > time.Duration(maxDur+120)*time.Second {
		t.Fatalf("clamped grant expires at %q (%v)", g.ExpiresAt, err)
	}
	if _, m := call(`{"request_id":"c1","payload":{"type":"session_close","test_id":"` + g.TestID + `"}}`); m.MessageType() != "ok" {
		t.Fatalf("session_close -> %#v", m)
	}
	checkBystander(t, "a clamped grant", bystander)
}

// certWith builds a self-signed client certificate from tmpl edits and
// the given key.
func certWith(t *testing.T, priv any, pub any, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(9),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// TestBadHandshakesRefused: TLS 1.2, no client certificate, a foreign
// ALPN, a non-Ed25519 certificate, expired, not-yet-valid, garbage and
// chained certificates, and non-TLS bytes never reach the pp-link layer;
// each is counted as a failed handshake, and a connected peer is still
// served after each.
func TestBadHandshakesRefused(t *testing.T) {
	h, attacker, bystander := badInputHarness(t)
	good, err := identity.NewCertificate(attacker)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub := attacker.Public()
	garbage := make([]byte, 600)
	_, _ = crand.Read(garbage)
	cases := []struct {
		name  string
		conf  func() *tls.Config
		plain []byte // sent instead of a TLS handshake
	}{
		{name: "TLS 1.2 only", conf: func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS12, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "no client certificate", conf: func() *tls.Config {
			return &tls.Config{NextProtos: []string{"pp-link/1"}}
		}},
		{name: "foreign ALPN", conf: func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{good}, NextProtos: []string{"http/1.1"}}
		}},
		{name: "ECDSA client certificate", conf: func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{certWith(t, ecKey, ecKey.Public(), nil)}, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "expired certificate", conf: func() *tls.Config {
			c := certWith(t, attacker, edPub, func(x *x509.Certificate) {
				x.NotBefore, x.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
			})
			return &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "not-yet-valid certificate", conf: func() *tls.Config {
			c := certWith(t, attacker, edPub, func(x *x509.Certificate) {
				x.NotBefore, x.NotAfter = time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour)
			})
			return &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "garbage certificate bytes", conf: func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{garbage}, PrivateKey: attacker}}, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "two certificates", conf: func() *tls.Config {
			c := good
			c.Certificate = [][]byte{good.Certificate[0], good.Certificate[0]}
			return &tls.Config{Certificates: []tls.Certificate{c}, NextProtos: []string{"pp-link/1"}}
		}},
		{name: "plain HTTP", plain: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "random bytes", plain: garbage},
	}
	for _, tc := range cases {
		before := h.Server.Stats()
		nc, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if tc.plain != nil {
			if _, err := nc.Write(tc.plain); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, tc.name, nc)
		} else {
			conf := tc.conf()
			conf.InsecureSkipVerify = true // the attacker does not care who we are
			tcn := tls.Client(nc, conf)
			_ = tcn.SetDeadline(time.Now().Add(5 * time.Second))
			// TLS 1.3 lets the client finish before the server has checked
			// its certificate; the refusal then shows on the first read.
			if err := tcn.Handshake(); err == nil {
				if _, err := link.NewConn(tcn).Call("init-0", &link.Hello{Version: "1.0", Features: []string{}}, 5*time.Second); err == nil {
					t.Fatalf("%s: hello answered", tc.name)
				}
			}
		}
		_ = nc.Close()
		testutil.Eventually(t, 10*time.Second, tc.name+": counted as a failed handshake", func() bool {
			return h.Server.Stats().HandshakeFailed == before.HandshakeFailed+1
		})
		if st := h.Server.Stats(); st.Accepted != before.Accepted {
			t.Fatalf("%s: accepted counter moved: %+v", tc.name, st)
		}
		checkBystander(t, tc.name, bystander)
	}
}
