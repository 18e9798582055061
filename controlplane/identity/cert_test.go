package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawCert signs a certificate for pub with priv after edit adjusts the
// template. It is how the tests forge what a hostile peer could present.
func rawCert(t testing.TB, pub crypto.PublicKey, priv crypto.Signer, edit func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewCertificate(t *testing.T) {
	key := newKey(t)
	id := IDFromPublicKey(key.Public().(ed25519.PublicKey))
	before := time.Now()
	cert, err := NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf == nil || len(cert.Certificate) != 1 {
		t.Fatalf("Leaf %v, %d DER certificates", leaf, len(cert.Certificate))
	}
	if leaf.PublicKeyAlgorithm != x509.Ed25519 || leaf.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("algorithms %v / %v", leaf.PublicKeyAlgorithm, leaf.SignatureAlgorithm)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if want := []string{"pp-id-" + id.String()}; len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want[0] {
		t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, want)
	}
	if cn := leaf.Subject.CommonName; cn != id.Compact() || len(cn) > 64 {
		t.Errorf("CN = %q (%d chars), want %q", cn, len(cn), id.Compact())
	}
	if d := before.Add(-time.Hour).Sub(leaf.NotBefore); d < -time.Minute || d > time.Minute {
		t.Errorf("NotBefore = %v, want about an hour ago", leaf.NotBefore)
	}
	if want := before.AddDate(10, 0, 0); leaf.NotAfter.Before(want.Add(-time.Minute)) || leaf.NotAfter.After(want.Add(time.Minute)) {
		t.Errorf("NotAfter = %v, want about %v", leaf.NotAfter, want)
	}
	if got, err := PeerID(leaf); err != nil || got != id {
		t.Errorf("PeerID(own cert) = %s, %v; want %s", got, err, id)
	}
	other, err := NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	if other.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	if _, err := NewCertificate(key[:10]); err == nil {
		t.Error("NewCertificate accepted a truncated key")
	}
}

func TestPeerID(t *testing.T) {
	victim := newKey(t)
	victimID := IDFromPublicKey(victim.Public().(ed25519.PublicKey))
	attacker := newKey(t)
	attackerPub := attacker.Public().(ed25519.PublicKey)
	attackerID := IDFromPublicKey(attackerPub)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cert     *x509.Certificate
		want     EndpointID
		mismatch string // expected Claimed of a *SANMismatchError
		notEd    bool
	}{
		{
			name: "no names: ID from key",
			cert: rawCert(t, attackerPub, attacker, nil),
			want: attackerID,
		},
		{
			name: "appliance style: full 69-char CN and matching SAN",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.Subject.CommonName = attackerID.String()
				c.DNSNames = []string{"pp-id-" + attackerID.String()}
			}),
			want: attackerID,
		},
		{
			name: "SAN in lower case, compact",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.DNSNames = []string{"PP-ID-" + strings.ToLower(attackerID.Compact()), "example.com"}
			}),
			want: attackerID,
		},
		{
			name: "CN claims the victim: CN is ignored",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.Subject.CommonName = victimID.String()
			}),
			want: attackerID,
		},
		{
			name: "forged: attacker key, victim SAN",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.DNSNames = []string{"pp-id-" + victimID.String()}
			}),
			mismatch: victimID.String(),
		},
		{
			name: "forged: own SAN first, victim SAN second",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.DNSNames = []string{"pp-id-" + attackerID.String(), "pp-id-" + victimID.String()}
			}),
			mismatch: victimID.String(),
		},
		{
			name: "forged: victim in e-mail SAN",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.EmailAddresses = []string{"pp-id-" + victimID.String()}
			}),
			mismatch: victimID.String(),
		},
		{
			name: "unparsable SAN ID",
			cert: rawCert(t, attackerPub, attacker, func(c *x509.Certificate) {
				c.DNSNames = []string{"pp-id-garbage"}
			}),
			mismatch: "garbage",
		},
		{
			name:  "ECDSA key",
			cert:  rawCert(t, ecKey.Public(), ecKey, func(c *x509.Certificate) { c.DNSNames = []string{"pp-id-" + victimID.String()} }),
			notEd: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PeerID(tc.cert)
			switch {
			case tc.notEd:
				if !errors.Is(err, ErrNotEd25519) {
					t.Fatalf("PeerID = %s, %v; want ErrNotEd25519", got, err)
				}
			case tc.mismatch != "":
				var sm *SANMismatchError
				if !errors.As(err, &sm) || !errors.Is(err, ErrSANMismatch) {
					t.Fatalf("PeerID = %s, %v; want *SANMismatchError", got, err)
				}
				if sm.Claimed != tc.mismatch || sm.Actual != attackerID {
					t.Errorf("SANMismatchError{Claimed %q, Actual %s}, want {%q, %s}", sm.Claimed, sm.Actual, tc.mismatch, attackerID)
				}
				if !strings.Contains(err.Error(), tc.mismatch) || !strings.Contains(err.Error(), attackerID.String()) {
					t.Errorf("message %q does not name both IDs", err)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("PeerID = %s, %v; want %s", got, err, tc.want)
				}
			}
		})
	}
	if _, err := PeerID(nil); err == nil {
		t.Error("PeerID(nil) succeeded")
	}
}
