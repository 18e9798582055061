package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/packetparamedic/reflector/controlplane/identity"
)

// ClassifyHandshake maps the error of a failed server-side TLS handshake
// (tls.Conn.HandshakeContext) to its label, by type, never by message:
// deadline or context end -> timeout; the peer closing or resetting ->
// eof; a certificate with a non-Ed25519 key or invalid for x509 ->
// bad_certificate; TLS alerts and malformed records -> protocol; anything
// else (crypto/tls reports version, cipher and ALPN mismatches as untyped
// errors) -> other.
// A handshake that succeeds without a client certificate is
// HandshakeNoClientCert, which the caller knows without an error.
func ClassifyHandshake(err error) HandshakeFailure {
	var (
		netErr  net.Error
		alert   tls.AlertError
		record  tls.RecordHeaderError
		x509Err x509.CertificateInvalidError
	)
	switch {
	case err == nil:
		return LabelOther
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return HandshakeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled):
		return HandshakeEOF
	case errors.Is(err, identity.ErrNotEd25519), errors.As(err, &x509Err):
		return HandshakeBadCert
	case errors.As(err, &alert), errors.As(err, &record):
		return HandshakeProtocol
	default:
		return LabelOther
	}
}
