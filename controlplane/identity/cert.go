package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// ErrNotEd25519 is returned for a certificate whose public key is not Ed25519.
var ErrNotEd25519 = errors.New("certificate key is not Ed25519")

// ErrSANMismatch is matched (errors.Is) by every *SANMismatchError.
var ErrSANMismatch = errors.New("certificate names an endpoint ID its key does not have")

// SANMismatchError reports a certificate whose "pp-id-" name claims an
// Endpoint ID other than the one derived from its public key: an
// impersonation attempt, to be denied and audited.
type SANMismatchError struct {
	Claimed string     // what follows "pp-id-" in the name, shortened if long
	Actual  EndpointID // the ID of the certificate's key
}

func (e *SANMismatchError) Error() string {
	return fmt.Sprintf("certificate claims endpoint ID %q in its subject alternative name, but its key is %s", e.Claimed, e.Actual)
}

// Is makes errors.Is(err, ErrSANMismatch) true.
func (e *SANMismatchError) Is(target error) bool { return target == ErrSANMismatch }

const (
	certValidYears = 10
	certBackdate   = time.Hour
	serialBits     = 128
	maxClaimedLen  = 128
)

// NewCertificate builds a self-signed X.509 certificate for key: Ed25519,
// DNS name "pp-id-<ID>" (where the appliance looks), Common Name the compact
// ID (within X.509's 64 characters), random serial, valid from an hour ago
// for ten years. Leaf is filled in.
func NewCertificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("new certificate: Ed25519 private key has %d bytes, expected %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	id := IDFromPublicKey(pub)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), serialBits))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("new certificate: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Compact()},
		DNSNames:              []string{SANPrefix + id.String()},
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.AddDate(certValidYears, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("new certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("new certificate for %s: parse back: %w", id, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// PeerID returns the Endpoint ID of the certificate's public key. The
// certificate's names are never trusted: a "pp-id-" DNS name (or e-mail
// name, which some stacks also read) that names another ID, or no valid ID,
// yields a *SANMismatchError. A non-Ed25519 key yields ErrNotEd25519.
func PeerID(cert *x509.Certificate) (EndpointID, error) {
	if cert == nil {
		return "", errors.New("peer ID: no certificate")
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("peer ID: %w (got %s)", ErrNotEd25519, cert.PublicKeyAlgorithm)
	}
	id := IDFromPublicKey(pub)
	names := append(append([]string(nil), cert.DNSNames...), cert.EmailAddresses...)
	for _, name := range names {
		if len(name) < len(SANPrefix) || !strings.EqualFold(name[:len(SANPrefix)], SANPrefix) {
			continue
		}
		claimed := name[len(SANPrefix):]
		if got, err := ParseEndpointID(claimed); err != nil || got != id {
			if len(claimed) > maxClaimedLen {
				claimed = claimed[:maxClaimedLen]
			}
			return "", &SANMismatchError{Claimed: claimed, Actual: id}
		}
	}
	return id, nil
}
