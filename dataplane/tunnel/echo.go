package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetparamedic/reflector/dataplane/echo"
)

// echoBufSize is FlowEcho's read buffer: larger than any QUIC datagram, so
// a datagram that fills it was truncated.
const echoBufSize = 64 << 10

// FlowEcho is the udp_echo engine of tunneled mode: it echoes the
// datagrams of one connected datagram conn (a FlowConn) the way
// echo.Engine echoes a UDP socket's, with the same rate clamp, probe
// stamping and counters. Its methods are safe for concurrent use.
type FlowEcho struct {
	conn net.Conn
	cfg  echo.Config

	mu       sync.Mutex
	credit   time.Duration // send credit, capped at a tenth of a second's worth
	cost     time.Duration // credit one datagram takes
	last     time.Time
	received atomic.Uint64
	echoed   atomic.Uint64
	bytes    atomic.Uint64
	rate     atomic.Uint64
	trunc    atomic.Uint64
	sendErr  atomic.Uint64
}

// NewFlowEcho returns an echo loop over conn. Of cfg it uses MaxPPS and
// Timestamped; Allowed and Readers do not apply (the flow belongs to an
// authenticated, attached session).
func NewFlowEcho(conn net.Conn, cfg echo.Config) *FlowEcho {
	e := &FlowEcho{conn: conn, cfg: cfg, last: time.Now()}
	if cfg.MaxPPS > 0 {
		e.cost = time.Second / time.Duration(cfg.MaxPPS)
		e.credit = e.burst()
	}
	return e
}

// burst is the bucket's size: a tenth of a second, at least one datagram.
func (e *FlowEcho) burst() time.Duration { return max(time.Second/10, e.cost) }

// allow takes one datagram's credit at now, reporting whether there was
// enough.
func (e *FlowEcho) allow(now time.Time) bool {
	if e.cost == 0 {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if el := now.Sub(e.last); el > 0 {
		e.credit = min(e.credit+el, e.burst())
		e.last = now
	}
	if e.credit < e.cost {
		return false
	}
	e.credit -= e.cost
	return true
}

// Serve echoes until ctx is done or conn is closed, then returns nil; any
// other read error ends it with that error. It does not close conn. On a
// *FlowConn it echoes in the session's demultiplexer (FlowConn.Handle),
// after the datagrams already queued.
func (e *FlowEcho) Serve(ctx context.Context) error {
	if fc, ok := e.conn.(*FlowConn); ok {
		return e.serveInline(ctx, fc)
	}
	stop := context.AfterFunc(ctx, func() { _ = e.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, echoBufSize)
	for {
		n, err := e.conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("flow echo read: %w", err)
		}
		if n == len(buf) {
			e.received.Add(1)
			e.trunc.Add(1)
			continue
		}
		e.echo(buf[:n])
	}
}

// serveInline echoes fc's datagrams as the demultiplexer delivers them.
func (e *FlowEcho) serveInline(ctx context.Context, fc *FlowConn) error {
	fc.Handle(e.echo)
	defer fc.Handle(nil)
	for drained := false; !drained; {
		select {
		case p := <-fc.q:
			e.echo(p)
		default:
			drained = true
		}
	}
	select {
	case <-ctx.Done():
	case <-fc.closed:
	case <-fc.s.demuxEnd:
	}
	return nil
}

// echo answers one datagram b (stamped in place).
func (e *FlowEcho) echo(b []byte) {
	e.received.Add(1)
	now := time.Now()
	if !e.allow(now) {
		e.rate.Add(1)
		return
	}
	if e.cfg.Timestamped {
		if h, err := echo.ParseHeader(b); err == nil {
			h.Flags |= echo.FlagStamped
			h.ServerRx = now.UnixNano()
			h.ServerTx = time.Now().UnixNano()
			_ = h.Encode(b)
		}
	}
	if _, err := e.conn.Write(b); err != nil {
		if !errors.Is(err, net.ErrClosed) {
			e.sendErr.Add(1)
		}
		return
	}
	e.echoed.Add(1)
	e.bytes.Add(uint64(len(b)))
}

// Stats returns the counters, with the meaning echo.Engine gives them
// (DroppedForeign stays 0).
func (e *FlowEcho) Stats() echo.Stats {
	return echo.Stats{
		Received:         e.received.Load(),
		Echoed:           e.echoed.Load(),
		Bytes:            e.bytes.Load(),
		DroppedRate:      e.rate.Load(),
		DroppedTruncated: e.trunc.Load(),
		SendErrors:       e.sendErr.Load(),
	}
}
