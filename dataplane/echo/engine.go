package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpbatch"
	"github.com/packetparamedic/reflector/internal/ratelimit"
)

// SocketBuffer is the receive and send buffer size requested for every
// engine socket, so bursts at line rate are not dropped by the kernel.
const SocketBuffer = 4 << 20

// maxReadErrors is how many consecutive failed reads a reader tolerates
// before Serve gives up with the error.
const maxReadErrors = 100

// Errors returned by the engine.
var (
	// ErrServing reports a second call of Serve.
	ErrServing = errors.New("echo engine already serving")
	// ErrConfig reports an invalid Config or ProbeConfig.
	ErrConfig = errors.New("invalid echo configuration")
)

// Config sets up an Engine for one session.
type Config struct {
	// Allowed is the only source address echoed; datagrams from others
	// are dropped and counted. The zero Addr echoes anyone (tests only).
	// IPv4 and IPv4-mapped IPv6 forms match each other; zones are ignored.
	Allowed netip.Addr
	// MaxPPS clamps the echo rate with a token bucket holding a tenth of
	// a second's worth (at least one datagram); 0 means unlimited.
	MaxPPS int
	// Timestamped makes the engine stamp conforming probes (see the
	// package documentation) instead of echoing them unmodified.
	Timestamped bool
	// Readers is the number of SO_REUSEPORT sockets, each with its own
	// reader goroutine; values below 1 mean 1. Where SO_REUSEPORT is
	// unavailable the engine uses one socket.
	Readers int
}

// Stats are the engine's counters. Received counts every datagram read;
// each ends in exactly one of the other datagram counters.
type Stats struct {
	// Received counts datagrams read from the sockets.
	Received uint64
	// Echoed counts datagrams sent back.
	Echoed uint64
	// Bytes counts payload bytes sent back.
	Bytes uint64
	// DroppedForeign counts datagrams from a source other than Allowed.
	DroppedForeign uint64
	// DroppedRate counts datagrams over the MaxPPS clamp.
	DroppedRate uint64
	// DroppedTruncated counts datagrams longer than udpbatch.DefaultBufSize,
	// which cannot be echoed unmodified.
	DroppedTruncated uint64
	// SendErrors counts datagrams the kernel refused to send.
	SendErrors uint64
}

// Engine echoes datagrams for one session. Its methods are safe for
// concurrent use.
type Engine struct {
	cfg     Config
	allowed netip.Addr // unmapped, zoneless; invalid = anyone
	conns   []*udpbatch.Detached
	bucket  *ratelimit.Bucket
	now     func() time.Time

	serving   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	received, echoed, bytes         atomic.Uint64
	foreign, rate, trunc, sendError atomic.Uint64
}

// Listen binds the engine's sockets on addr ("host:port"; port 0 picks
// one) and returns the engine ready to Serve. ctx bounds the binding only.
func Listen(ctx context.Context, addr string, cfg Config) (*Engine, error) {
	if cfg.MaxPPS < 0 {
		return nil, fmt.Errorf("echo listen %s: %w: MaxPPS %d", addr, ErrConfig, cfg.MaxPPS)
	}
	readers := max(cfg.Readers, 1)
	e := &Engine{cfg: cfg, now: time.Now}
	if cfg.Allowed.IsValid() {
		e.allowed = cfg.Allowed.Unmap().WithZone("")
	}
	if cfg.MaxPPS > 0 {
		e.bucket = ratelimit.NewBucket(cfg.MaxPPS, max(cfg.MaxPPS/10, 1), e.now())
	}
	first, err := listenOne(ctx, addr, readers > 1)
	if errors.Is(err, errors.ErrUnsupported) {
		readers = 1
		first, err = listenOne(ctx, addr, false)
	}
	if err != nil {
		return nil, err
	}
	e.conns = append(e.conns, first)
	bound := first.UDPConn().LocalAddr().String()
	for len(e.conns) < readers {
		c, err := listenOne(ctx, bound, true)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.conns = append(e.conns, c)
	}
	e.cfg.Readers = readers
	if cfg.Timestamped {
		for _, c := range e.conns {
			// Best effort: without kernel stamps RxTime stays 0 and the
			// batch's read time is used instead.
			_ = c.EnableRxTimestamps()
		}
	}
	return e, nil
}

func listenOne(ctx context.Context, addr string, reuse bool) (*udpbatch.Detached, error) {
	var lc net.ListenConfig
	if reuse {
		lc.Control = reusePortControl
	}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo listen %s: %w", addr, err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("echo listen %s: %w: not a UDP socket", addr, ErrConfig)
	}
	if err := uc.SetReadBuffer(SocketBuffer); err != nil {
		uc.Close()
		return nil, fmt.Errorf("echo listen %s: set receive buffer: %w", addr, err)
	}
	if err := uc.SetWriteBuffer(SocketBuffer); err != nil {
		uc.Close()
		return nil, fmt.Errorf("echo listen %s: set send buffer: %w", addr, err)
	}
	// Out of the netpoller: each reader sleeps in the kernel on a thread
	// of its own, and a datagram wakes it directly. Blocking, it sleeps
	// in recvmmsg itself: a probe costs one receive and one send system
	// call, as in a plain blocking echo loop (polling took a receive
	// that found nothing, a ppoll and the receive again).
	d, err := udpbatch.Detach(uc, udpbatch.DefaultBatch)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("echo listen %s: %w", addr, err)
	}
	if err := d.SetBlocking(); err != nil {
		d.Close()
		return nil, fmt.Errorf("echo listen %s: %w", addr, err)
	}
	return d, nil
}

// Addr returns the bound local address.
func (e *Engine) Addr() net.Addr { return e.conns[0].UDPConn().LocalAddr() }

// Readers returns the number of sockets actually serving.
func (e *Engine) Readers() int { return len(e.conns) }

// Serve echoes until ctx is done or Close is called, then returns nil
// (and the engine is closed). It returns an error if a socket keeps failing
// or if Serve was already called.
func (e *Engine) Serve(ctx context.Context) error {
	if !e.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	stop := context.AfterFunc(ctx, func() { e.Close() })
	defer stop()
	errc := make(chan error, len(e.conns))
	for _, c := range e.conns {
		go func() { errc <- e.serveConn(c) }()
	}
	var first error
	for range e.conns {
		if err := <-errc; err != nil && first == nil {
			first = err
			e.Close()
		}
	}
	return first
}

// serveConn is one reader: read a batch, filter, stamp, write it back. It
// keeps its thread, which sleeps in the kernel until a datagram arrives.
func (e *Engine) serveConn(c *udpbatch.Detached) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b := c.Get()
	defer c.Put(b)
	msgs := b.Msgs
	failures := 0
	for {
		n, err := c.ReadBatch(msgs)
		if err != nil {
			if e.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if failures++; failures > maxReadErrors {
				return fmt.Errorf("echo read on %v: %w", c.UDPConn().LocalAddr(), err)
			}
			continue
		}
		failures = 0
		if err := e.echoBatch(c, msgs[:n]); err != nil {
			return err
		}
	}
}

// echoBatch filters msgs in place (kept messages move to the front, so
// every slot keeps its own buffer), applies the clamp and writes the rest.
func (e *Engine) echoBatch(c *udpbatch.Detached, msgs []udpbatch.Message) error {
	var foreign, trunc uint64
	keep := 0
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Truncated:
			trunc++
		case e.allowed.IsValid() && m.Addr.Addr().Unmap().WithZone("") != e.allowed:
			foreign++
		default:
			if keep != i {
				msgs[keep], msgs[i] = msgs[i], msgs[keep]
			}
			keep++
		}
	}
	var now time.Time
	if e.bucket != nil || e.cfg.Timestamped {
		now = e.now()
	}
	var limited uint64
	if e.bucket != nil && keep > 0 {
		granted := e.bucket.Take(keep, now)
		limited = uint64(keep - granted)
		keep = granted
	}
	e.received.Add(uint64(len(msgs)))
	e.foreign.Add(foreign)
	e.trunc.Add(trunc)
	e.rate.Add(limited)
	if keep == 0 {
		return nil
	}
	out := msgs[:keep]
	if e.cfg.Timestamped {
		batchRx := now.UnixNano()
		tx := e.now().UnixNano()
		for i := range out {
			m := &out[i]
			rx := batchRx
			if m.RxTime != 0 {
				rx = m.RxTime
			}
			stamp(m.Buf[:m.N], rx, tx)
		}
	}
	var echoed, bytes, failed uint64
	for len(out) > 0 {
		w, err := c.WriteBatch(out)
		for _, m := range out[:w] {
			bytes += uint64(m.N)
		}
		echoed += uint64(w)
		if err == nil {
			break
		}
		if e.closed.Load() || errors.Is(err, net.ErrClosed) {
			failed += uint64(len(out) - w)
			break
		}
		failed++
		out = out[w+1:]
	}
	e.echoed.Add(echoed)
	e.bytes.Add(bytes)
	e.sendError.Add(failed)
	return nil
}

// Stats returns a snapshot of the counters; it is safe to call while the
// engine serves. Counters are read one by one, so a snapshot taken under
// load may be off by an in-flight batch.
func (e *Engine) Stats() Stats {
	return Stats{
		Received:         e.received.Load(),
		Echoed:           e.echoed.Load(),
		Bytes:            e.bytes.Load(),
		DroppedForeign:   e.foreign.Load(),
		DroppedRate:      e.rate.Load(),
		DroppedTruncated: e.trunc.Load(),
		SendErrors:       e.sendError.Load(),
	}
}

// Close closes the sockets, which ends Serve. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		var errs []error
		for _, c := range e.conns {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			e.closeErr = fmt.Errorf("close echo engine: %w", err)
		}
	})
	return e.closeErr
}
