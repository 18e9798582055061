package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

// handshakeErr runs a server handshake with the reflector's TLS config on
// 127.0.0.1 against client and returns the server's error.
func handshakeErr(t *testing.T, timeout time.Duration, client func(net.Conn)) error {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		client(c)
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	herr := tls.Server(nc, identity.ServerTLSConfig(cert, "pp-link/1")).HandshakeContext(ctx)
	nc.Close()
	<-done
	return herr
}

func ecdsaCert(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func TestClassifyHandshakeLoopback(t *testing.T) {
	ecCert := ecdsaCert(t)
	cases := []struct {
		name    string
		timeout time.Duration
		client  func(net.Conn)
		want    HandshakeFailure
	}{
		{"silent client", 100 * time.Millisecond, func(c net.Conn) {
			buf := make([]byte, 1)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(buf) // until the server gives up
		}, HandshakeTimeout},
		{"client closes", 5 * time.Second, func(c net.Conn) {}, HandshakeEOF},
		{"not TLS", 5 * time.Second, func(c net.Conn) {
			_, _ = fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		}, HandshakeProtocol},
		{"ECDSA client certificate", 5 * time.Second, func(c net.Conn) {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
				Certificates: []tls.Certificate{ecCert}, NextProtos: []string{"pp-link/1"}})
			_ = tc.Handshake()
			buf := make([]byte, 1)
			_, _ = tc.Read(buf) // the server's verdict arrives after the client's Finished
		}, HandshakeBadCert},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := handshakeErr(t, c.timeout, c.client)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if got := ClassifyHandshake(err); got != c.want {
				t.Fatalf("ClassifyHandshake(%v) = %s, want %s", err, got, c.want)
			}
		})
	}
}

func TestClassifyHandshakeValues(t *testing.T) {
	for _, c := range []struct {
		err  error
		want HandshakeFailure
	}{
		{nil, LabelOther},
		{errors.New("tls: client offered only unsupported versions"), LabelOther},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), HandshakeTimeout},
		{fmt.Errorf("peer certificate: %w", identity.ErrNotEd25519), HandshakeBadCert},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, HandshakeProtocol},
	} {
		if got := ClassifyHandshake(c.err); got != c.want {
			t.Errorf("ClassifyHandshake(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
