package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

const testALPN = "pp-link/1"

type serverResult struct {
	state tls.ConnectionState
	err   error
}

// startServer accepts one loopback connection, runs the server handshake
// with a deadline and reports its outcome.
func startServer(t *testing.T, cfg *tls.Config) (addr string, result <-chan serverResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan serverResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- serverResult{err: err}
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sc := tls.Server(c, cfg)
		err = sc.HandshakeContext(ctx)
		if err == nil {
			// Tell the client it was accepted: in TLS 1.3 the client's
			// handshake ends before the server has checked its certificate.
			_ = sc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err = sc.Write([]byte{'k'})
		}
		ch <- serverResult{state: sc.ConnectionState(), err: err}
	}()
	return ln.Addr().String(), ch
}

func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	// A rejection of our certificate arrives as an alert on the first read.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

func mustCert(t *testing.T, key ed25519.PrivateKey) tls.Certificate {
	t.Helper()
	c, err := NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSLoopback(t *testing.T) {
	serverKey, clientKey := newKey(t), newKey(t)
	serverID := IDFromPublicKey(serverKey.Public().(ed25519.PublicKey))
	clientID := IDFromPublicKey(clientKey.Public().(ed25519.PublicKey))
	serverCert, clientCert := mustCert(t, serverKey), mustCert(t, clientKey)
	serverCfg := ServerTLSConfig(serverCert, testALPN)

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCert := tls.Certificate{Certificate: [][]byte{rawCert(t, ecKey.Public(), ecKey, nil).Raw}, PrivateKey: ecKey}
	expired := tls.Certificate{
		Certificate: [][]byte{rawCert(t, clientKey.Public(), clientKey, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(-48 * time.Hour)
			c.NotAfter = time.Now().Add(-time.Hour)
		}).Raw},
		PrivateKey: clientKey,
	}
	notYet := tls.Certificate{
		Certificate: [][]byte{rawCert(t, clientKey.Public(), clientKey, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(time.Hour)
			c.NotAfter = time.Now().Add(48 * time.Hour)
		}).Raw},
		PrivateKey: clientKey,
	}
	skewed := tls.Certificate{ // just expired, within the 5 minute allowance
		Certificate: [][]byte{rawCert(t, clientKey.Public(), clientKey, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(-time.Hour)
			c.NotAfter = time.Now().Add(-2 * time.Minute)
		}).Raw},
		PrivateKey: clientKey,
	}
	twoCerts := tls.Certificate{Certificate: [][]byte{clientCert.Certificate[0], serverCert.Certificate[0]}, PrivateKey: clientKey}
	victimID := IDFromPublicKey(newKey(t).Public().(ed25519.PublicKey))
	forged := tls.Certificate{
		Certificate: [][]byte{rawCert(t, clientKey.Public(), clientKey, func(c *x509.Certificate) {
			c.DNSNames = []string{SANPrefix + victimID.String()}
		}).Raw},
		PrivateKey: clientKey,
	}

	tls12 := ClientTLSConfig(clientCert, testALPN, serverID)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	noCert := ClientTLSConfig(clientCert, testALPN, serverID)
	noCert.Certificates = nil
	noALPN := ClientTLSConfig(clientCert, testALPN, serverID)
	noALPN.NextProtos, noALPN.VerifyConnection = nil, nil
	otherALPN := ClientTLSConfig(clientCert, "h2", serverID)

	tests := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		serverOK   bool
		clientOK   bool
		serverErr  error // errors.Is target for the server's handshake error
		clientErr  error // errors.Is target for the client's error
		wantPeerID EndpointID
		peerIDErr  error  // errors.Is target for PeerID on the server side
		serverMsg  string // the server's error must say this
	}{
		{name: "pinned ID", server: serverCfg, client: ClientTLSConfig(clientCert, testALPN, serverID), serverOK: true, clientOK: true, wantPeerID: clientID},
		{name: "no pin", server: serverCfg, client: ClientTLSConfig(clientCert, testALPN, ""), serverOK: true, clientOK: true, wantPeerID: clientID},
		{name: "clock skew allowance", server: serverCfg, client: ClientTLSConfig(skewed, testALPN, serverID), serverOK: true, clientOK: true, wantPeerID: clientID},
		{name: "client SAN forged: handshake ok, PeerID denies", server: serverCfg, client: ClientTLSConfig(forged, testALPN, serverID), serverOK: true, clientOK: true, peerIDErr: ErrSANMismatch},
		{name: "pinned wrong ID", server: serverCfg, client: ClientTLSConfig(clientCert, testALPN, clientID), clientErr: ErrIDMismatch},
		{name: "TLS 1.2 only client", server: serverCfg, client: tls12, serverMsg: "unsupported versions"},
		{name: "client without certificate", server: serverCfg, client: noCert, serverMsg: "didn't provide a certificate"},
		{name: "client without ALPN (deployed appliance)", server: serverCfg, client: noALPN, serverOK: true, clientOK: true, wantPeerID: clientID},
		{name: "client with other ALPN", server: serverCfg, client: otherALPN, serverMsg: "unsupported application protocols"},
		{name: "ECDSA client certificate", server: serverCfg, client: ClientTLSConfig(ecCert, testALPN, serverID), serverErr: ErrNotEd25519},
		{name: "expired client certificate", server: serverCfg, client: ClientTLSConfig(expired, testALPN, serverID), serverMsg: "expired at"},
		{name: "client certificate not yet valid", server: serverCfg, client: ClientTLSConfig(notYet, testALPN, serverID), serverMsg: "not valid before"},
		{name: "client sends two certificates", server: serverCfg, client: ClientTLSConfig(twoCerts, testALPN, serverID), serverMsg: "2 certificates"},
		{name: "server SAN forged", server: ServerTLSConfig(forged, testALPN), client: ClientTLSConfig(clientCert, testALPN, ""), clientErr: ErrSANMismatch},
		{name: "ECDSA server", server: ServerTLSConfig(ecCert, testALPN), client: ClientTLSConfig(clientCert, testALPN, ""), clientErr: ErrNotEd25519},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, result := startServer(t, tc.server)
			cs, cerr := dial(addr, tc.client)
			var sr serverResult
			select {
			case sr = <-result:
			case <-time.After(10 * time.Second):
				t.Fatal("server handshake did not finish")
			}
			if (cerr == nil) != tc.clientOK {
				t.Errorf("client error = %v, want success %v", cerr, tc.clientOK)
			}
			if (sr.err == nil) != tc.serverOK {
				t.Errorf("server error = %v, want success %v", sr.err, tc.serverOK)
			}
			if tc.clientErr != nil && !errors.Is(cerr, tc.clientErr) {
				t.Errorf("client error = %v, want %v", cerr, tc.clientErr)
			}
			t.Logf("client: %v; server: %v", cerr, sr.err)
			if tc.serverMsg != "" && (sr.err == nil || !strings.Contains(sr.err.Error(), tc.serverMsg)) {
				t.Errorf("server error = %v, want it to say %q", sr.err, tc.serverMsg)
			}
			if tc.serverErr != nil && !errors.Is(sr.err, tc.serverErr) {
				t.Errorf("server error = %v, want %v", sr.err, tc.serverErr)
			}
			var idm *IDMismatchError
			if errors.As(cerr, &idm) && (idm.Expected != clientID || idm.Actual != serverID) {
				t.Errorf("IDMismatchError = %+v, want expected %s actual %s", idm, clientID, serverID)
			}
			if !tc.serverOK || !tc.clientOK {
				return
			}
			wantALPN := testALPN
			if tc.client == noALPN {
				wantALPN = ""
			}
			if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != wantALPN || sr.state.NegotiatedProtocol != wantALPN {
				t.Errorf("version %x, ALPN client %q server %q", cs.Version, cs.NegotiatedProtocol, sr.state.NegotiatedProtocol)
			}
			if len(sr.state.PeerCertificates) != 1 {
				t.Fatalf("server sees %d peer certificates", len(sr.state.PeerCertificates))
			}
			got, err := PeerID(sr.state.PeerCertificates[0])
			if tc.peerIDErr != nil {
				if !errors.Is(err, tc.peerIDErr) {
					t.Errorf("server-side PeerID = %s, %v; want %v", got, err, tc.peerIDErr)
				}
			} else if err != nil || got != tc.wantPeerID {
				t.Errorf("server-side PeerID = %s, %v; want %s", got, err, tc.wantPeerID)
			}
			if srv, err := PeerID(cs.PeerCertificates[0]); err != nil || srv != serverID {
				t.Errorf("client-side PeerID = %s, %v; want %s", srv, err, serverID)
			}
		})
	}
}
