package identity

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrIDMismatch is matched (errors.Is) by every *IDMismatchError.
var ErrIDMismatch = errors.New("peer is not the expected endpoint")

// IDMismatchError reports a server whose key is not the one the client
// pinned.
type IDMismatchError struct {
	Expected EndpointID
	Actual   EndpointID
}

func (e *IDMismatchError) Error() string {
	return fmt.Sprintf("peer endpoint ID is %s, expected %s", e.Actual, e.Expected)
}

// Is makes errors.Is(err, ErrIDMismatch) true.
func (e *IDMismatchError) Is(target error) bool { return target == ErrIDMismatch }

// clockSkew is how far outside its validity window a peer certificate may be.
const clockSkew = 5 * time.Minute

// ServerTLSConfig returns the server side of mutual TLS for protocol alpn:
// TLS 1.3 only, a client certificate required, and the handshake refused
// when the client offers ALPN protocols that do not include alpn (crypto/tls
// itself refuses those with the no_application_protocol alert), or presents
// anything but exactly one
// parseable, currently valid certificate with an Ed25519 key. Which peer it
// is, and whether it is allowed, is decided after the handshake (PeerID on
// ConnectionState().PeerCertificates[0]) so the decision can be audited.
// Session tickets are off so every connection presents its certificate.
//
// A client that offers no ALPN at all is accepted: the deployed
// PacketParamedic appliance (Rust, rustls) sends no ALPN extension, and
// refusing it would lock every existing appliance out. Such a connection has
// an empty NegotiatedProtocol and is treated as pp-link/1.
func ServerTLSConfig(cert tls.Certificate, alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{alpn},
		SessionTicketsDisabled: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			_, err := checkPeerCert(rawCerts, time.Now())
			return err
		},
	}
}

// ClientTLSConfig returns the client side of mutual TLS for protocol alpn:
// TLS 1.3 only, cert presented, and the server accepted only if it presents
// exactly one valid Ed25519 certificate whose names agree with its key
// (PeerID), which negotiates alpn, and, when expect is not empty, whose key
// has the ID expect (else a *IDMismatchError). No CA is involved: the key is
// the identity.
func ClientTLSConfig(cert tls.Certificate, alpn string, expect EndpointID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{alpn},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := checkPeerCert(rawCerts, time.Now())
			if err != nil {
				return err
			}
			id, err := PeerID(leaf)
			if err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			if expect != "" && id != expect {
				return &IDMismatchError{Expected: expect, Actual: id}
			}
			return nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("server did not negotiate ALPN %q (got %q)", alpn, cs.NegotiatedProtocol)
			}
			return nil
		},
	}
}

// checkPeerCert accepts exactly one certificate that parses, has an Ed25519
// key and is valid at now, give or take clockSkew.
func checkPeerCert(rawCerts [][]byte, now time.Time) (*x509.Certificate, error) {
	if len(rawCerts) != 1 {
		return nil, fmt.Errorf("peer sent %d certificates, expected exactly 1 (self-signed)", len(rawCerts))
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("peer certificate: %w (got %s)", ErrNotEd25519, leaf.PublicKeyAlgorithm)
	}
	if now.Add(clockSkew).Before(leaf.NotBefore) {
		return nil, fmt.Errorf("peer certificate not valid before %s (now %s)", leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Add(-clockSkew).After(leaf.NotAfter) {
		return nil, fmt.Errorf("peer certificate expired at %s (now %s)", leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return leaf, nil
}
