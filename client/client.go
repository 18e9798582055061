// Package client is the Go side of pp-link/1 as an appliance speaks it: it
// dials a reflector over mutual TLS with its own Ed25519 identity, can pin
// the reflector's Endpoint ID, and sends the appliance's requests with the
// appliance's request IDs ("init-0", then "req-1", "req-2", ...). It is
// used by `reflector pair-with` and the test and tunnel commands.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
)

// Defaults for Dial and the calls.
const (
	// HandshakeTimeout bounds the TCP connect and TLS handshake when ctx
	// has no earlier deadline.
	HandshakeTimeout = 10 * time.Second
	// DefaultCallTimeout bounds each request and its reply.
	DefaultCallTimeout = 30 * time.Second
)

// ErrUnexpectedReply reports a reply of another type than the request
// calls for.
var ErrUnexpectedReply = errors.New("unexpected pp-link reply")

// DeniedError is a session_deny answer to RequestSession.
type DeniedError struct {
	Deny link.SessionDeny
}

func (e *DeniedError) Error() string {
	msg := fmt.Sprintf("session denied: %s: %s", e.Deny.Reason, e.Deny.Message)
	if e.Deny.RetryAfterSec != nil {
		msg += fmt.Sprintf(" (retry after %d s)", *e.Deny.RetryAfterSec)
	}
	return msg
}

// Client is one control connection to a reflector. Calls are serialised;
// a Client is safe for concurrent use.
type Client struct {
	conn     *link.Conn
	serverID identity.EndpointID
	// addr, cert and expect open the tunnel connections of tunneled tests.
	addr   string
	cert   tls.Certificate
	expect identity.EndpointID
	ids    link.RequestIDs
	// Timeout bounds each call; zero means DefaultCallTimeout.
	Timeout time.Duration
}

// Dial connects to the reflector at addr (host:port) as the identity key.
// When expect is not empty, the server's key must have that Endpoint ID
// (the error then matches identity.ErrIDMismatch).
func Dial(ctx context.Context, addr string, key ed25519.PrivateKey, expect identity.EndpointID) (*Client, error) {
	cert, err := identity.NewCertificate(key)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc, err := DialTLS(ctx, addr, cert, expect)
	if err != nil {
		return nil, err
	}
	id, err := ServerID(tc)
	if err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Client{conn: link.NewConn(tc), serverID: id, addr: addr, cert: cert, expect: expect}, nil
}

// DialTLS opens a mutual-TLS pp-link/1 connection with cert and returns
// it after the handshake, for callers that speak something else than
// request/response on it (a tunnel attach).
func DialTLS(ctx context.Context, addr string, cert tls.Certificate, expect identity.EndpointID) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	d := tls.Dialer{
		NetDialer: &net.Dialer{},
		Config:    identity.ClientTLSConfig(cert, link.ALPN, expect),
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to reflector %s: %w", addr, err)
	}
	return nc.(*tls.Conn), nil
}

// ServerID returns the Endpoint ID of the server's certificate key.
func ServerID(tc *tls.Conn) (identity.EndpointID, error) {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("server sent no certificate")
	}
	return identity.PeerID(certs[0])
}

// ServerID returns the reflector's Endpoint ID, derived from its key.
func (c *Client) ServerID() identity.EndpointID { return c.serverID }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends m with the next request ID and returns the reply. An error
// reply is returned as a *link.Error error.
func (c *Client) Call(m link.Message) (link.Message, error) {
	t := c.Timeout
	if t <= 0 {
		t = DefaultCallTimeout
	}
	return c.conn.Call(c.ids.Next(), m, t)
}

// call sends m and checks that the reply is a *T.
func call[T any, PT interface {
	*T
	link.Message
}](c *Client, m link.Message) (*T, error) {
	reply, err := c.Call(m)
	if err != nil {
		return nil, err
	}
	r, ok := reply.(PT)
	if !ok {
		return nil, fmt.Errorf("%w: %s answered with %s", ErrUnexpectedReply, m.MessageType(), reply.MessageType())
	}
	return (*T)(r), nil
}

// FeatureDenyReasonsV2 tells the reflector that this client decodes every
// deny reason (resource_exhausted included), so it gets the real one rather
// than the appliance's mapping. The server spells it
// server.FeatureDenyReasonsV2; this package does not import the server.
const FeatureDenyReasonsV2 = "deny_reasons_v2"

// Hello sends hello (version 1.0, the appliance's features plus
// FeatureDenyReasonsV2) and returns the server's policy. A server that
// refuses this client and says why ends it with that *link.Error; one that
// just closes gets an io.EOF error with a hint.
func (c *Client) Hello() (*link.ServerHello, error) {
	sh, err := call[link.ServerHello](c, &link.Hello{
		Version:  link.ProtocolVersion,
		Features: []string{link.FeatureThroughput, link.FeatureUDPEcho, FeatureDenyReasonsV2},
	})
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the reflector closed the connection without a reason (an older reflector does that to clients it does not authorize: pair first with 'reflector pair-with --peer %s --token TOKEN')", err, c.addr)
	}
	return sh, err
}

// Pair presents a pairing token. A refused token is not an error: see
// PairResponse.Success and Message.
func (c *Client) Pair(token string) (*link.PairResponse, error) {
	return call[link.PairResponse](c, &link.PairRequest{Token: token})
}

// Status asks for the server's status snapshot.
func (c *Client) Status() (*link.StatusSnapshot, error) {
	return call[link.StatusSnapshot](c, &link.GetStatus{})
}

// PathMeta asks for the server's host metadata.
func (c *Client) PathMeta() (*link.PathMeta, error) {
	return call[link.PathMeta](c, &link.GetPathMeta{})
}

// RequestSession asks for a test. A session_deny is returned as a
// *DeniedError.
func (c *Client) RequestSession(req link.SessionRequest) (*link.SessionGrant, error) {
	reply, err := c.Call(&req)
	if err != nil {
		return nil, err
	}
	switch r := reply.(type) {
	case *link.SessionGrant:
		return r, nil
	case *link.SessionDeny:
		return nil, &DeniedError{Deny: *r}
	}
	return nil, fmt.Errorf("%w: session_request answered with %s", ErrUnexpectedReply, reply.MessageType())
}

// CloseSession ends a test early.
func (c *Client) CloseSession(testID string) error {
	_, err := call[link.OK](c, &link.SessionClose{TestID: testID})
	return err
}

// TestResult asks for the server's measurement of a test (extension).
func (c *Client) TestResult(testID string) (*link.TestResult, error) {
	return call[link.TestResult](c, &link.TestResultRequest{TestID: testID})
}
