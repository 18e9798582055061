package tunnel

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

const testALPN = "pp-link/1"

// testTLS returns server and client mTLS configurations with fresh
// identities, as the pp-link listener uses them.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	mk := func() tls.Certificate {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c, err := identity.NewCertificate(key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return identity.ServerTLSConfig(mk(), testALPN), identity.ClientTLSConfig(mk(), testALPN, "")
}

// tlsPair returns the two ends of a loopback mTLS connection, handshake done.
func tlsPair(t testing.TB, srvConf, cliConf *tls.Config) (srv, cli *tls.Conn) {
	t.Helper()
	return tlsPairOver(t, srvConf, cliConf, func(c net.Conn) net.Conn { return c })
}

// tlsPairOver is tlsPair with both TCP connections wrapped by wrap.
func tlsPairOver(t testing.TB, srvConf, cliConf *tls.Config, wrap func(net.Conn) net.Conn) (srv, cli *tls.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	srv = tls.Server(wrap(b), srvConf)
	cli = tls.Client(wrap(a), cliConf)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	return srv, cli
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	acc := <-ch
	if acc == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = d.Close(); _ = acc.Close() })
	return d.(*net.TCPConn), acc.(*net.TCPConn)
}
