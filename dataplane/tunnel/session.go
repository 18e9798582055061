package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Flow limits.
const (
	// FlowQueueLen bounds each flow's receive queue, in datagrams. A
	// datagram arriving at a full queue is dropped and counted, as a full
	// socket buffer would drop it: loss stays visible and one slow flow
	// never holds up another.
	FlowQueueLen = 512
	// MaxFlows bounds the flows of one session (iperf3's 128 streams and
	// one spare).
	MaxFlows = 129
	// acceptQueueLen bounds the new flows waiting for AcceptUDP.
	acceptQueueLen = 32
	// MinFlowPayload is the flow payload that fits one QUIC datagram on
	// any path QUIC runs over (1,200-byte packets, quic-go v0.65.0's
	// overhead estimate and the 2-byte framing): larger datagrams, up to
	// MaxDatagram, are split into fragments.
	MinFlowPayload = 1161
	// probeSize is larger than any QUIC datagram can be, so SendDatagram
	// refuses it and reports the current maximum without sending.
	probeSize = 1 << 16
)

// ErrSessionClosed is wrapped by flow operations after their session
// closed; it wraps net.ErrClosed.
var ErrSessionClosed = fmt.Errorf("tunnel quic session closed: %w", net.ErrClosed)

// DatagramTooLargeError is returned by FlowConn.Write for a payload that
// does not fit MaxFragments QUIC datagrams on the current path (or is
// larger than MaxDatagram).
type DatagramTooLargeError struct {
	// Size is the payload length written; Max the largest carried now.
	Size, Max int
}

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("tunnel flow: datagram payload of %d bytes is too large for the tunnel (max %d now): use a smaller UDP length (iperf3 -l %d)", e.Size, e.Max, e.Max)
}

// SessionStats are a session's datagram counters. Dropped, QueueDropped
// and Incomplete are losses inside this end, not on the path.
type SessionStats struct {
	// Dropped counts datagrams dropped on full flow or accept queues.
	Dropped uint64
	// QueueDropped counts QUIC datagrams quic-go discarded on its full
	// receive queue (128 entries) before the session's reader took them;
	// counted on sessions of a QUICListener only (0 on DialQUIC's).
	QueueDropped uint64
	// RecvQueueDropped counts fragments dropped on the session's own
	// full receive queue (RecvQueueLen) before reassembly.
	RecvQueueDropped uint64
	// Incomplete counts fragmented datagrams given up with pieces missing
	// (lost on the path or in QueueDropped, or pushed out of the bounded
	// reassembly).
	Incomplete uint64
	// Reassembled counts fragmented datagrams received whole.
	Reassembled uint64
	// Fragmented counts datagrams this end sent in fragments.
	Fragmented uint64
	// Unknown counts datagrams for flows that are closed or not open (on
	// the client side, where flows are only opened by Flow).
	Unknown uint64
	// Malformed counts QUIC datagrams that break the framing.
	Malformed uint64
	// PacketsLost is quic-go's count of this side's QUIC packets declared
	// lost (datagrams inside them are not retransmitted).
	PacketsLost uint64
	// SmoothedRTT is QUIC's RTT estimate for the path.
	SmoothedRTT time.Duration
}

type acceptItem struct {
	f     *FlowConn
	first []byte
}

// QUICSession is one attached QUIC connection carrying datagram flows. Its
// methods are safe for concurrent use.
type QUICSession struct {
	conn    *quic.Conn
	server  bool
	request []byte

	mu       sync.Mutex
	flows    map[uint8]*FlowConn
	accepts  chan acceptItem
	started  bool
	nextFlow int
	demuxEnd chan struct{}

	rx      *rxQueue
	readEnd chan struct{} // closed when the reader stops

	reasm                                                reassembler
	drops                                                *dropCounter
	dropped, unknown, malformed, reassembled, fragmented atomic.Uint64
}

func newSession(c *quic.Conn, server bool, request []byte) *QUICSession {
	s := &QUICSession{
		conn:     c,
		server:   server,
		request:  request,
		flows:    make(map[uint8]*FlowConn),
		accepts:  make(chan acceptItem, acceptQueueLen),
		demuxEnd: make(chan struct{}),
		rx:       newRxQueue(),
		readEnd:  make(chan struct{}),
		reasm:    reassembler{now: time.Now},
		drops:    lookupDropCounter(c),
	}
	if server {
		s.start()
	}
	return s
}

// start runs the datagram reader and demultiplexer once.
func (s *QUICSession) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	go s.read()
	go s.demux()
}

// Attach sends request (a pp-link tunnel_attach envelope) as the first
// frame of the session's first stream and returns the server's reply
// frame; the caller decodes it. Datagram flows work from then on. On a
// refusal the server closes the session soon after its reply.
func (s *QUICSession) Attach(ctx context.Context, request []byte) ([]byte, error) {
	if s.server {
		return nil, errors.New("tunnel attach: called on a server session")
	}
	ctx, cancel := context.WithTimeout(ctx, AttachTimeout)
	defer cancel()
	str, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("tunnel attach: open stream: %w", err)
	}
	dl, _ := ctx.Deadline()
	_ = str.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = str.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeAttachFrame(str, request); err != nil {
		return nil, fmt.Errorf("tunnel attach: %w", err)
	}
	reply, err := readAttachFrame(str)
	if err != nil {
		return nil, fmt.Errorf("tunnel attach: %w", err)
	}
	_ = str.SetDeadline(time.Time{})
	s.start()
	return reply, nil
}

// AttachRequest returns the attach request the session was accepted with
// (server side; nil on the client).
func (s *QUICSession) AttachRequest() []byte { return s.request }

// PeerCertificate returns the peer's certificate.
func (s *QUICSession) PeerCertificate() *x509.Certificate {
	certs := s.conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	return certs[0]
}

// Context ends when the session closes.
func (s *QUICSession) Context() context.Context { return s.conn.Context() }

// LocalAddr returns the local UDP address.
func (s *QUICSession) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (s *QUICSession) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Stats returns the session's datagram counters.
func (s *QUICSession) Stats() SessionStats {
	cs := s.conn.ConnectionStats()
	return SessionStats{
		Dropped:          s.dropped.Load(),
		QueueDropped:     s.drops.load(),
		RecvQueueDropped: s.rx.dropped.Load(),
		Incomplete:       s.reasm.incomplete.Load(),
		Reassembled:      s.reassembled.Load(),
		Fragmented:       s.fragmented.Load(),
		Unknown:          s.unknown.Load(),
		Malformed:        s.malformed.Load() + s.reasm.malformed.Load(),
		PacketsLost:      cs.PacketsLost,
		SmoothedRTT:      cs.SmoothedRTT,
	}
}

// MaxFlowPayload returns the largest payload a FlowConn.Write sends in
// one QUIC datagram now, without fragments. It starts near 1,150 bytes (a
// 1,200-byte QUIC packet) and grows as path MTU discovery finds a larger
// path MTU, to at most about 1,410 bytes (quic-go's 1,452-byte packets).
// It returns 0 when the session cannot carry datagrams.
func (s *QUICSession) MaxFlowPayload() int {
	return max(s.maxDatagram()-wholeHeaderLen, 0)
}

// probe is larger than any QUIC datagram can be: SendDatagram refuses it
// before reading it and reports the current maximum.
var probe = make([]byte, probeSize)

// maxDatagram returns the largest QUIC datagram payload sendable now.
func (s *QUICSession) maxDatagram() int {
	var tl *quic.DatagramTooLargeError
	if err := s.conn.SendDatagram(probe); errors.As(err, &tl) {
		return int(tl.MaxDatagramPayloadSize)
	}
	return 0
}

// Close closes the session and all its flows. It is idempotent.
func (s *QUICSession) Close() error {
	_ = s.conn.CloseWithError(CodeDone, "")
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		<-s.demuxEnd
	}
	return nil
}

// Flow returns the datagram connection for flow id, opening it when it is
// not open (or was closed). Both ends of a flow use the same id.
func (s *QUICSession) Flow(id uint8) *FlowConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flows[id]; f != nil && !f.isClosed() {
		return f
	}
	f := newFlow(s, id)
	s.flows[id] = f
	return f
}

// ErrNoFreeFlow is returned by OpenFlow when every flow id is in use.
var ErrNoFreeFlow = errors.New("tunnel: no free flow id in this session")

// OpenFlow opens a flow with an id never used before in this session
// (client side: one per iperf3 UDP stream; the server learns the id from
// the flow's first datagram). Ids are not reused, so late datagrams of a
// closed flow never reach a new one.
func (s *QUICSession) OpenFlow() (*FlowConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; s.nextFlow < 256; s.nextFlow++ {
		id := uint8(s.nextFlow)
		if s.flows[id] == nil {
			f := newFlow(s, id)
			s.flows[id] = f
			s.nextFlow++
			return f, nil
		}
	}
	return nil, ErrNoFreeFlow
}

// AcceptUDP implements iperf3proto.UDPAcceptor on the server side: it
// returns the next flow whose id had not been seen, with its first
// datagram. It returns an error wrapping net.ErrClosed once the session
// has closed, and ctx's error when ctx ends.
func (s *QUICSession) AcceptUDP(ctx context.Context) (net.Conn, []byte, error) {
	select {
	case it := <-s.accepts:
		return it.f, it.first, nil
	case <-s.demuxEnd:
		return nil, nil, ErrSessionClosed
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// read takes datagrams out of quic-go's receive queue, which discards
// beyond 128 frames, until the session ends. A whole flow datagram is
// routed at once (no allocation, no extra hand-off for the echo); a
// fragment goes to the session's own larger queue, so the reassembly
// (copies and allocations that draw GC assists) never stalls the reads.
func (s *QUICSession) read() {
	defer close(s.readEnd)
	ctx := s.conn.Context()
	for {
		b, err := s.conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		f, err := parseFragment(b)
		switch {
		case err != nil:
			s.malformed.Add(1)
		case f.whole:
			s.route(f.flow, f.data)
		default:
			s.rx.push(f)
		}
	}
}

// demux reassembles the fragments the reader queued, all that are queued
// at a time, until the reader has stopped and its queue is empty.
func (s *QUICSession) demux() {
	defer close(s.demuxEnd)
	for {
		select {
		case <-s.rx.ready:
		case <-s.readEnd:
			for _, f := range s.rx.take() {
				s.reassemble(f)
			}
			return
		}
		for _, f := range s.rx.take() {
			s.reassemble(f)
		}
	}
}

// reassemble adds fragment f and routes its datagram once complete.
func (s *QUICSession) reassemble(f fragment) {
	if whole := s.reasm.add(f); whole != nil {
		s.reassembled.Add(1)
		s.route(f.flow, whole)
	}
}

func (s *QUICSession) route(id uint8, p []byte) {
	s.mu.Lock()
	f := s.flows[id]
	if f == nil && s.server && len(s.flows) < MaxFlows {
		f = newFlow(s, id)
		select {
		case s.accepts <- acceptItem{f: f, first: p}:
			s.flows[id] = f
		default:
			s.dropped.Add(1)
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if f == nil || f.isClosed() {
		s.unknown.Add(1)
		return
	}
	f.deliver(p)
}

// FlowConn is one datagram flow of a QUICSession as a net.Conn: each Read
// returns one datagram (truncated to the buffer, as on a UDP socket), each
// Write sends one, in fragments when it does not fit one QUIC datagram.
// Deadlines work as on a socket, except that a Write blocked by a full
// QUIC send queue waits for the queue to drain.
type FlowConn struct {
	s  *QUICSession
	id uint8
	q  chan []byte

	closeOnce sync.Once
	closed    chan struct{}
	rd, wd    *deadline

	wmu  sync.Mutex
	wbuf []byte
	msg  uint16 // next fragmented datagram's number

	dropped atomic.Uint64
	handler atomic.Pointer[func([]byte)]
}

var _ net.Conn = (*FlowConn)(nil)

func newFlow(s *QUICSession, id uint8) *FlowConn {
	return &FlowConn{s: s, id: id, q: make(chan []byte, FlowQueueLen), closed: make(chan struct{}), rd: newDeadline(), wd: newDeadline()}
}

// ID returns the flow id.
func (f *FlowConn) ID() uint8 { return f.id }

// Dropped returns the datagrams of this flow dropped on a full queue.
func (f *FlowConn) Dropped() uint64 { return f.dropped.Load() }

func (f *FlowConn) isClosed() bool { return isClosed(f.closed) }

func (f *FlowConn) deliver(p []byte) {
	if h := f.handler.Load(); h != nil {
		(*h)(p)
		return
	}
	select {
	case f.q <- p:
	default:
		f.dropped.Add(1)
		f.s.dropped.Add(1)
	}
	// A handler set meanwhile may have drained the queue already.
	if h := f.handler.Load(); h != nil {
		for {
			select {
			case q := <-f.q:
				(*h)(q)
			default:
				return
			}
		}
	}
}

// Handle has the session's demultiplexer pass each datagram of the flow
// to h in its own goroutine, instead of queueing it for Read: one
// goroutine hand-off less per datagram, for a handler that answers at once
// (the echo). h owns p and must be safe for concurrent use (the caller
// of Handle hands it what was queued before). A slow h holds up every
// flow of the session. nil restores queueing.
func (f *FlowConn) Handle(h func(p []byte)) {
	if h == nil {
		f.handler.Store(nil)
		return
	}
	f.handler.Store(&h)
}

// Read implements net.Conn.
func (f *FlowConn) Read(b []byte) (int, error) {
	select {
	case p := <-f.q:
		return copy(b, p), nil
	default:
	}
	select {
	case p := <-f.q:
		return copy(b, p), nil
	case <-f.closed:
		return 0, f.opErr("read", net.ErrClosed)
	case <-f.s.demuxEnd:
		return 0, f.opErr("read", ErrSessionClosed)
	case <-f.rd.wait():
		return 0, f.opErr("read", os.ErrDeadlineExceeded)
	}
}

// Write implements net.Conn.
func (f *FlowConn) Write(b []byte) (int, error) {
	if f.isClosed() {
		return 0, f.opErr("write", net.ErrClosed)
	}
	if isClosed(f.wd.wait()) {
		return 0, f.opErr("write", os.ErrDeadlineExceeded)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	var err error
	if len(b) <= MinFlowPayload {
		err = f.send(appendWhole(f.wbuf[:0], f.id, b))
	} else {
		err = f.writeLarge(b)
	}
	if err == nil {
		return len(b), nil
	}
	var tl *DatagramTooLargeError
	if errors.As(err, &tl) {
		return 0, f.opErr("write", err)
	}
	if f.s.conn.Context().Err() != nil {
		return 0, f.opErr("write", ErrSessionClosed)
	}
	return 0, f.opErr("write", err)
}

// send sends one framed datagram, keeping its buffer for the next.
func (f *FlowConn) send(framed []byte) error {
	f.wbuf = framed
	return f.s.conn.SendDatagram(framed)
}

// writeLarge sends b whole when it fits one QUIC datagram now, else in
// fragments.
func (f *FlowConn) writeLarge(b []byte) error {
	m := f.s.maxDatagram()
	if len(b)+wholeHeaderLen <= m {
		return f.send(appendWhole(f.wbuf[:0], f.id, b))
	}
	size, count, ok := splitSizes(len(b), m)
	if !ok {
		return &DatagramTooLargeError{Size: len(b), Max: min(MaxDatagram, max(m-fragHeaderLen, 0)*MaxFragments)}
	}
	msg := f.msg
	f.msg++
	for i := range count {
		piece := b[i*size : min((i+1)*size, len(b))]
		if err := f.send(appendFragment(f.wbuf[:0], f.id, msg, i, count, piece)); err != nil {
			return err
		}
	}
	f.s.fragmented.Add(1)
	return nil
}

// Close closes the flow (not the session); datagrams arriving for it later
// are counted as Unknown. It is idempotent.
func (f *FlowConn) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

// LocalAddr returns the session's local UDP address.
func (f *FlowConn) LocalAddr() net.Addr { return f.s.conn.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (f *FlowConn) RemoteAddr() net.Addr { return f.s.conn.RemoteAddr() }

// SetDeadline implements net.Conn.
func (f *FlowConn) SetDeadline(t time.Time) error {
	f.rd.set(t)
	f.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (f *FlowConn) SetReadDeadline(t time.Time) error {
	f.rd.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (f *FlowConn) SetWriteDeadline(t time.Time) error {
	f.wd.set(t)
	return nil
}

func (f *FlowConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "quic-flow", Source: f.LocalAddr(), Addr: f.RemoteAddr(), Err: err}
}
