package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// AttachRefusedError is the reflector's refusal of a tunnel attach.
type AttachRefusedError struct {
	// Transport is "tcp" (a TLS connection) or "udp" (the QUIC session).
	Transport string
	Message   string
}

func (e *AttachRefusedError) Error() string {
	return fmt.Sprintf("tunnel attach (%s) refused by the reflector: %s", e.Transport, e.Message)
}

// attachRequestID is the request_id of the only frame of an attach.
const attachRequestID = "attach-0"

// Tunnel carries the streams of one tunneled session through the
// reflector's control port: each TCP stream is a fresh mutual-TLS
// connection attached to the session, UDP streams are datagram flows of
// one QUIC session on the same port number over UDP. It implements
// iperf3proto.Dialer. Its methods are safe for concurrent use.
type Tunnel struct {
	addr   string
	tlsTCP *tls.Config
	tlsUDP *tls.Config
	grant  link.SessionGrant

	mu   sync.Mutex
	quic *tunnel.QUICSession
}

var _ iperf3proto.Dialer = (*Tunnel)(nil)

// Tunnel returns the tunnel of the tunneled grant g, reached at the
// address the client is connected to and pinned to the same server
// identity. It opens nothing yet.
func (c *Client) Tunnel(g *link.SessionGrant) (*Tunnel, error) {
	if g.Mode != link.ModeTunneled {
		return nil, fmt.Errorf("tunnel for a %q grant: only tunneled grants have one", g.Mode)
	}
	expect := c.expect
	if expect == "" {
		expect = c.serverID
	}
	return &Tunnel{
		addr:   c.addr,
		tlsTCP: identity.ClientTLSConfig(c.cert, link.ALPN, expect),
		tlsUDP: identity.ClientTLSConfig(c.cert, link.ALPN, expect),
		grant:  *g,
	}, nil
}

// Addr returns the reflector's control address the tunnel uses.
func (t *Tunnel) Addr() string { return t.addr }

func (t *Tunnel) attachMsg(kind string) *link.TunnelAttach {
	return &link.TunnelAttach{TestID: t.grant.TestID, Token: t.grant.Token, StreamKind: kind}
}

// attachReply checks an attach reply.
func attachReply(kind string, reply link.Message) error {
	r, ok := reply.(*link.TunnelAttachResult)
	if !ok {
		return fmt.Errorf("%w: tunnel_attach answered with %s", ErrUnexpectedReply, reply.MessageType())
	}
	if !r.OK {
		return &AttachRefusedError{Transport: kind, Message: r.Message}
	}
	return nil
}

// DialTCP opens one TCP stream of the test: a mutual-TLS connection to the
// control port, attached to the session. The result is a raw byte pipe to
// the reflector's iperf3 server.
func (t *Tunnel) DialTCP(ctx context.Context) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(hctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("tunnel: connect to reflector %s: %w", t.addr, err)
	}
	tc := tls.Client(tunnel.NewBatchConn(raw), t.tlsTCP)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tunnel: TLS handshake with %s: %w", t.addr, err)
	}
	left := HandshakeTimeout
	if dl, ok := hctx.Deadline(); ok {
		left = time.Until(dl)
	}
	if left <= 0 {
		_ = raw.Close()
		return nil, fmt.Errorf("tunnel: attach to %s: %w", t.addr, context.DeadlineExceeded)
	}
	reply, err := link.NewConn(tc).Call(attachRequestID, t.attachMsg(link.ProtocolTCP), left)
	if err == nil {
		err = attachReply(link.ProtocolTCP, reply)
	}
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tunnel: attach to %s: %w", t.addr, err)
	}
	return tunnel.BatchTLS(tc), nil
}

// Session returns the tunnel's QUIC session, dialing and attaching it on
// first use. When nothing answers on the control port number over UDP it
// fails within tunnel.QUICHandshakeTimeout with a
// *tunnel.UDPUnreachableError naming the port to open.
func (t *Tunnel) Session(ctx context.Context) (*tunnel.QUICSession, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.quic != nil {
		return t.quic, nil
	}
	q, err := tunnel.DialQUIC(ctx, t.addr, t.tlsUDP)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	req, err := link.Encode(attachRequestID, t.attachMsg(link.ProtocolUDP))
	if err != nil {
		_ = q.Close()
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	frame, err := q.Attach(ctx, req)
	if err != nil {
		_ = q.Close()
		return nil, fmt.Errorf("tunnel: attach QUIC session to %s: %w", t.addr, err)
	}
	_, reply, err := link.Decode(frame)
	if err == nil {
		if e, ok := reply.(*link.Error); ok {
			err = e
		} else {
			err = attachReply(link.ProtocolUDP, reply)
		}
	}
	if err != nil {
		_ = q.Close()
		return nil, fmt.Errorf("tunnel: attach QUIC session to %s: %w", t.addr, err)
	}
	t.quic = q
	return q, nil
}

// DialUDP opens one UDP stream of the test: a new datagram flow of the
// tunnel's QUIC session.
func (t *Tunnel) DialUDP(ctx context.Context) (net.Conn, error) {
	q, err := t.Session(ctx)
	if err != nil {
		return nil, err
	}
	f, err := q.OpenFlow()
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	return f, nil
}

// MaxUDPPayload is the largest UDP payload (iperf3 -l) a flow carries in
// one QUIC datagram now, without fragments (larger ones, up to
// tunnel.MaxDatagram, are split), tunnel.MinFlowPayload before the QUIC
// session exists.
func (t *Tunnel) MaxUDPPayload() int {
	t.mu.Lock()
	q := t.quic
	t.mu.Unlock()
	if q == nil {
		return tunnel.MinFlowPayload
	}
	if n := q.MaxFlowPayload(); n > 0 {
		return n
	}
	return tunnel.MinFlowPayload
}

// DatagramStats returns the datagram counters of the tunnel's QUIC
// session on this end (zero before the session exists).
func (t *Tunnel) DatagramStats() tunnel.SessionStats {
	t.mu.Lock()
	q := t.quic
	t.mu.Unlock()
	if q == nil {
		return tunnel.SessionStats{}
	}
	return q.Stats()
}

// Close closes the QUIC session, if any. TCP streams are closed by their
// users.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	q := t.quic
	t.quic = nil
	t.mu.Unlock()
	if q != nil {
		return q.Close()
	}
	return nil
}
