package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// QUIC transport parameters.
const (
	// QUICHandshakeTimeout is how long DialQUIC waits for any answer from
	// the server before giving up with a *UDPUnreachableError.
	QUICHandshakeTimeout = 3 * time.Second
	// QUICMaxIdleTimeout closes a session that has heard nothing from its
	// peer for this long.
	QUICMaxIdleTimeout = 30 * time.Second
	// QUICKeepAlive is the keep-alive period, well inside the idle timeout
	// and short enough to hold a NAT mapping open.
	QUICKeepAlive = 10 * time.Second
	// AttachTimeout bounds the attach exchange on both sides.
	AttachTimeout = 10 * time.Second
	// refuseLinger is how long a server keeps a refused session open so
	// the client reads the reply before the connection closes.
	refuseLinger = 2 * time.Second
)

// Application error codes sent in QUIC CONNECTION_CLOSE frames.
const (
	// CodeDone closes a session normally.
	CodeDone quic.ApplicationErrorCode = 0
	// CodeAttachRefused closes a session whose attach was refused.
	CodeAttachRefused quic.ApplicationErrorCode = 0x100
	// CodeAttachFailed closes a session whose attach exchange failed
	// (timeout, malformed frame).
	CodeAttachFailed quic.ApplicationErrorCode = 0x101
)

// AttachFunc decides on a session's attach request (the payload of the
// first frame on its first stream; a pp-link tunnel_attach envelope in
// practice). peer is the client's certificate, already checked by the TLS
// configuration. reply, when not nil, is sent back as one frame whatever
// the decision. A nil error accepts the session: serve is then called with
// it in the session's goroutine, and the session is closed when serve
// returns. A non-nil error (or a nil serve) refuses it: the session is
// closed with CodeAttachRefused after the reply. ctx ends after
// AttachTimeout.
type AttachFunc func(ctx context.Context, peer *x509.Certificate, remote net.Addr, request []byte) (reply []byte, serve func(*QUICSession), err error)

// UDPUnreachableError reports that a QUIC handshake got no answer at all:
// nothing listens on the UDP port, or a firewall drops the packets.
type UDPUnreachableError struct {
	// Addr is the address dialed ("host:port").
	Addr string
	// Err is quic-go's timeout error.
	Err error
}

func (e *UDPUnreachableError) Error() string {
	_, port, err := net.SplitHostPort(e.Addr)
	if err != nil {
		port = e.Addr
	}
	return fmt.Sprintf("quic dial %s: no answer on %s/udp within %v: open UDP port %s on the reflector's firewall (tunneled UDP tests ride QUIC datagrams on it)",
		e.Addr, port, QUICHandshakeTimeout, port)
}

func (e *UDPUnreachableError) Unwrap() error { return e.Err }

func serverQUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  AttachTimeout / 2,
		MaxIdleTimeout:        QUICMaxIdleTimeout,
		KeepAlivePeriod:       QUICKeepAlive,
		MaxIncomingStreams:    1,
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true,
		// Counts what quic-go's receive queue discards inside the
		// reflector (QueueDropped). It makes quic-go build a qlog event
		// per packet: about a third less datagram throughput in
		// BenchmarkFlowDatagrams32K, so clients go without it.
		Tracer: dropTracer,
	}
}

func clientQUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  QUICHandshakeTimeout,
		MaxIdleTimeout:        QUICMaxIdleTimeout,
		KeepAlivePeriod:       QUICKeepAlive,
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
		EnableDatagrams:       true,
	}
}

// QUICGuard admits QUIC connection attempts before their handshake runs,
// so a server can apply to 4000/udp the limits it applies to 4000/tcp.
// Its methods are called from quic-go's packet handling and must be quick
// and safe for concurrent use.
type QUICGuard interface {
	// NeedRetry reports whether an Initial from addr, whose address is not
	// validated yet, must first be answered with a Retry (RFC 9000,
	// section 8.1.2). A Retry is smaller than the Initial it answers, so
	// a spoofed source draws no amplification, and the client proves its
	// address at the cost of one round trip: ask for it under load.
	NeedRetry(addr net.Addr) bool
	// Admit decides on a handshake from addr; verified says the address
	// was validated (Retry or a token). A non-nil error refuses it (the
	// client gets CONNECTION_REFUSED). An admitted handshake holds what
	// Admit gave it until done is called, exactly once, with whether the
	// handshake completed.
	Admit(addr net.Addr, verified bool) (done func(completed bool), err error)
}

// handshakeDoneKey keys the done function of an admitted handshake in
// the connection's context.
type handshakeDoneKey struct{}

// QUICListener accepts tunnel sessions on a UDP port.
type QUICListener struct {
	tr     *quic.Transport
	udp    net.PacketConn
	ln     *quic.Listener
	attach AttachFunc

	wg       sync.WaitGroup
	mu       sync.Mutex
	sessions map[*quic.Conn]struct{}
	closed   bool
}

// ListenQUIC listens on addr (UDP, "host:port") with tlsConf (the same
// configuration as the pp-link TCP listener: TLS 1.3, client certificate
// required, ALPN pp-link/1). For every connection it reads the attach
// request from the first bidirectional stream within AttachTimeout and
// asks attach, which answers and, accepting, names the function that
// serves the session. The listener stops when ctx ends or Close is called.
func ListenQUIC(ctx context.Context, addr string, tlsConf *tls.Config, attach AttachFunc) (*QUICListener, error) {
	return ListenQUICGuarded(ctx, addr, tlsConf, attach, nil)
}

// ListenQUICGuarded is ListenQUIC with guard (nil: none) deciding on every
// connection attempt before its handshake, and on source address
// validation.
func ListenQUICGuarded(ctx context.Context, addr string, tlsConf *tls.Config, attach AttachFunc, guard QUICGuard) (*QUICListener, error) {
	if attach == nil {
		return nil, errors.New("listen quic: an AttachFunc is required")
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen quic %s/udp: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	if guard != nil {
		tr.VerifySourceAddress = guard.NeedRetry
		tr.ConnContext = guardedContext(guard)
	}
	ln, err := tr.Listen(tlsConf, serverQUICConfig())
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("listen quic %s/udp: %w", addr, err)
	}
	l := &QUICListener{tr: tr, udp: udp, ln: ln, attach: attach, sessions: make(map[*quic.Conn]struct{})}
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer stop()
		l.acceptLoop()
	}()
	return l, nil
}

// guardedContext is the Transport's ConnContext for guard: it admits the
// attempt or refuses it, and arranges for done to be called once, when
// the handshake completes (acceptLoop) or the connection ends first.
func guardedContext(guard QUICGuard) func(context.Context, *quic.ClientInfo) (context.Context, error) {
	return func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
		done, err := guard.Admit(info.RemoteAddr, info.AddrVerified)
		if err != nil {
			return ctx, err
		}
		var once sync.Once
		finish := func(completed bool) { once.Do(func() { done(completed) }) }
		context.AfterFunc(ctx, func() { finish(false) })
		return context.WithValue(ctx, handshakeDoneKey{}, finish), nil
	}
}

// Addr returns the UDP address the listener is bound to.
func (l *QUICListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, closes every session and waits for their serve
// functions to return. It is idempotent.
func (l *QUICListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for c := range l.sessions {
		_ = c.CloseWithError(CodeDone, "listener closed")
	}
	l.mu.Unlock()
	err := errors.Join(l.ln.Close(), l.tr.Close(), l.udp.Close())
	l.wg.Wait()
	if err != nil {
		return fmt.Errorf("close quic listener: %w", err)
	}
	return nil
}

func (l *QUICListener) acceptLoop() {
	for {
		c, err := l.ln.Accept(context.Background())
		if err != nil {
			return
		}
		if done, ok := c.Context().Value(handshakeDoneKey{}).(func(bool)); ok {
			done(true)
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.CloseWithError(CodeDone, "listener closed")
			return
		}
		l.sessions[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			l.serve(c)
			l.mu.Lock()
			delete(l.sessions, c)
			l.mu.Unlock()
		}()
	}
}

// serve runs the attach exchange and then the session's serve function.
func (l *QUICListener) serve(c *quic.Conn) {
	ctx, cancel := context.WithTimeout(c.Context(), AttachTimeout)
	defer cancel()
	str, err := c.AcceptStream(ctx)
	if err != nil {
		_ = c.CloseWithError(CodeAttachFailed, "no attach stream")
		return
	}
	_ = str.SetDeadline(time.Now().Add(AttachTimeout))
	req, err := readAttachFrame(str)
	if err != nil {
		_ = c.CloseWithError(CodeAttachFailed, "bad attach frame")
		return
	}
	certs := c.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		_ = c.CloseWithError(CodeAttachFailed, "no client certificate")
		return
	}
	reply, serveSession, aerr := l.attach(ctx, certs[0], c.RemoteAddr(), req)
	if aerr == nil && serveSession == nil {
		aerr = errors.New("attach accepted without a serve function")
	}
	if reply != nil {
		if err := writeAttachFrame(str, reply); err != nil {
			_ = c.CloseWithError(CodeAttachFailed, "attach reply")
			return
		}
	}
	if aerr != nil {
		_ = str.Close()
		linger := time.NewTimer(refuseLinger)
		select {
		case <-c.Context().Done():
		case <-linger.C:
		}
		linger.Stop()
		_ = c.CloseWithError(CodeAttachRefused, "attach refused")
		return
	}
	_ = str.SetDeadline(time.Time{})
	s := newSession(c, true, req)
	defer func() { _ = s.Close() }()
	serveSession(s)
}

// DialQUIC opens a tunnel session to addr ("host:port", UDP) with tlsConf
// (the pp-link client configuration: TLS 1.3, client certificate, ALPN
// pp-link/1, the server's ID checked). When the server does not answer
// within QUICHandshakeTimeout it returns a *UDPUnreachableError naming the
// port. The session carries no flows until Attach succeeds.
func DialQUIC(ctx context.Context, addr string, tlsConf *tls.Config) (*QUICSession, error) {
	c, err := quic.DialAddr(ctx, addr, tlsConf, clientQUICConfig())
	if err != nil {
		var hto *quic.HandshakeTimeoutError
		var ito *quic.IdleTimeoutError
		if errors.As(err, &hto) || errors.As(err, &ito) {
			return nil, &UDPUnreachableError{Addr: addr, Err: err}
		}
		return nil, fmt.Errorf("quic dial %s/udp: %w", addr, err)
	}
	return newSession(c, false, nil), nil
}
