package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

func runOpenSSL(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestOpenSSLInterop: a stock TLS stack with an Ed25519 client certificate
// made by openssl completes the TLS 1.3 handshake, negotiates pp-link/1 and
// is identified by its key; TLS 1.2 is refused.
func TestOpenSSLInterop(t *testing.T) {
	bin := testutil.LookBinary(t, "openssl")
	dir := t.TempDir()
	keyPEM, certPEM := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	if out, err := runOpenSSL(t, bin, "genpkey", "-algorithm", "ed25519", "-out", keyPEM); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	if out, err := runOpenSSL(t, bin, "req", "-x509", "-new", "-key", keyPEM, "-out", certPEM, "-days", "2", "-subj", "/CN=openssl-appliance"); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatal("no PEM block in the openssl certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.IDFromPublicKey(leaf.PublicKey.(ed25519.PublicKey))
	h := servertest.Start(t, func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{id.String()}
	}, server.Options{})

	out, err := runOpenSSL(t, bin, "s_client", "-connect", h.Addr, "-tls1_3", "-alpn", "pp-link/1", "-cert", certPEM, "-key", keyPEM)
	if !strings.Contains(out, "ALPN protocol: pp-link/1") || !strings.Contains(out, "TLSv1.3") {
		t.Fatalf("openssl s_client -tls1_3 (err %v): no pp-link/1 over TLS 1.3 in:\n%s", err, out)
	}
	testutil.Eventually(t, 5*time.Second, "openssl peer accepted by its key", func() bool {
		acc := servertest.FindAudit(h.AuditEvents(), audit.ConnectionAccepted)
		return len(acc) == 1 && acc[0].PeerID == id.String()
	})

	out, err = runOpenSSL(t, bin, "s_client", "-connect", h.Addr, "-tls1_2", "-alpn", "pp-link/1", "-cert", certPEM, "-key", keyPEM)
	if err == nil || strings.Contains(out, "ALPN protocol: pp-link/1") {
		t.Fatalf("openssl s_client -tls1_2 was not refused (err %v):\n%s", err, out)
	}
}
