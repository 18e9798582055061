package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// Forwarding limits.
const (
	// FirstDataTimeout is how long a local TCP connection may stay silent
	// before it is dropped unforwarded. Every iperf3 connection sends its
	// cookie at once; a connection that sends nothing (a port probe)
	// never reaches the reflector, so it cannot end the session.
	FirstDataTimeout = 10 * time.Second
	// orderGrace is how long a silent connection keeps its place in the
	// attach order once a later one has arrived. iperf3 writes a stream's
	// cookie before it connects the next stream, so the earlier one has
	// normally spoken already.
	orderGrace = 250 * time.Millisecond
	// maxUDPSources bounds the local UDP sources carried (iperf3's 128
	// streams and one spare).
	maxUDPSources = tunnel.MaxFlows
	// maxUDPDatagram is the largest UDP payload read or written.
	maxUDPDatagram = 64 << 10
)

// Forwarder carries the connections and datagrams of a stock iperf3 client
// on this host to a reflector's test: local TCP connections through
// Dialer.DialTCP, each local UDP source through one Dialer.DialUDP
// connection. The Dialer is a *Tunnel for a tunneled grant, or an
// iperf3proto.NetDialer on the granted port of a direct one.
type Forwarder struct {
	// Dialer opens the reflector side of each stream.
	Dialer iperf3proto.Dialer
	// OnError, when set, is called with each error that ends the
	// forwarding of one connection or UDP source (not Serve). It may be
	// called from several goroutines at once.
	OnError func(error)

	tcpForwarded, tcpSilent, udpSources, udpWriteErrors atomic.Uint64
}

// ForwardStats are a Forwarder's counters.
type ForwardStats struct {
	// TCPForwarded counts local TCP connections carried to the reflector;
	// TCPSilent those dropped because they sent nothing (probes).
	TCPForwarded, TCPSilent uint64
	// UDPSources counts local UDP sources carried; UDPWriteErrors the
	// datagrams the reflector side refused.
	UDPSources, UDPWriteErrors uint64
}

// Stats returns the counters so far.
func (f *Forwarder) Stats() ForwardStats {
	return ForwardStats{
		TCPForwarded: f.tcpForwarded.Load(), TCPSilent: f.tcpSilent.Load(),
		UDPSources: f.udpSources.Load(), UDPWriteErrors: f.udpWriteErrors.Load(),
	}
}

// Forward carries local connections on ln and datagrams on uc (nil for a
// TCP test) through t until ctx ends; see Forwarder.Serve.
func (t *Tunnel) Forward(ctx context.Context, ln net.Listener, uc *net.UDPConn) {
	(&Forwarder{Dialer: t}).Serve(ctx, ln, uc)
}

// Serve forwards until ctx ends, then closes ln and uc (nil for a TCP test)
// and every forwarded connection, and returns once all have ended. When
// ln fails (or is closed by someone else) forwarding ends the same way.
//
// TCP connections reach the reflector in the order they were accepted:
// the iperf3 server assigns stream roles by accept order (with --bidir the
// first N streams are its receivers, the next N its senders). A connection
// is attached once it has sent its first bytes; one silent for
// FirstDataTimeout, or closed before sending anything, is dropped without
// reaching the reflector.
func (f *Forwarder) Serve(ctx context.Context, ln net.Listener, uc *net.UDPConn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		if uc != nil {
			_ = uc.Close()
		}
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	if uc != nil {
		wg.Go(func() { f.serveUDP(ctx, uc) })
	}
	queue := make(chan *localConn, 16)
	wg.Go(func() { f.attachInOrder(ctx, queue, &wg) })
	for {
		c, err := ln.Accept()
		if err != nil {
			close(queue)
			cancel()
			return
		}
		lc := &localConn{c: c, spoke: make(chan struct{})}
		wg.Go(func() { lc.readFirst(ctx) })
		queue <- lc
	}
}

func (f *Forwarder) report(err error) {
	if f.OnError != nil {
		f.OnError(err)
	}
}

// localConn is an accepted local connection waiting for its first bytes.
type localConn struct {
	c     net.Conn
	first []byte
	err   error
	spoke chan struct{} // closed when first or err is set
}

// readFirst waits up to FirstDataTimeout for the connection's first bytes.
func (l *localConn) readFirst(ctx context.Context) {
	defer close(l.spoke)
	_ = l.c.SetReadDeadline(time.Now().Add(FirstDataTimeout))
	stop := context.AfterFunc(ctx, func() { _ = l.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4<<10)
	n, err := l.c.Read(buf)
	if n == 0 && err == nil {
		err = io.ErrNoProgress
	}
	if n == 0 {
		l.err = err
		return
	}
	l.first = buf[:n]
	_ = l.c.SetReadDeadline(time.Time{})
}

// spokeWithin waits up to d for l's first bytes (or its end).
func (l *localConn) spokeWithin(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.spoke:
		return true
	case <-t.C:
		return false
	}
}

// attachInOrder attaches the queued connections one after another in
// accept order. A connection still silent when a later one arrives keeps
// its place for orderGrace, then is attached on its own whenever it
// speaks.
func (f *Forwarder) attachInOrder(ctx context.Context, queue <-chan *localConn, wg *sync.WaitGroup) {
	var held *localConn
	for {
		if held == nil {
			var ok bool
			if held, ok = <-queue; !ok {
				return
			}
		}
		select {
		case <-held.spoke:
			f.attach(ctx, held, wg)
			held = nil
		case next, ok := <-queue:
			h := held
			if h.spokeWithin(orderGrace) {
				f.attach(ctx, h, wg)
			} else {
				wg.Go(func() { <-h.spoke; f.attach(ctx, h, wg) })
			}
			held = next
			if !ok {
				held = nil
				return
			}
		}
	}
}

// attach carries l to the reflector once it has spoken, or drops it.
func (f *Forwarder) attach(ctx context.Context, l *localConn, wg *sync.WaitGroup) {
	if l.err != nil || ctx.Err() != nil {
		f.tcpSilent.Add(1)
		_ = l.c.Close()
		return
	}
	remote, err := f.Dialer.DialTCP(ctx)
	if err == nil {
		if _, err = remote.Write(l.first); err != nil {
			_ = remote.Close()
			err = fmt.Errorf("forward the first %d bytes: %w", len(l.first), err)
		}
	}
	if err != nil {
		_ = l.c.Close()
		f.report(err)
		return
	}
	f.tcpForwarded.Add(1)
	wg.Go(func() { _, _, _ = tunnel.Pipe(ctx, l.c, remote) })
}

// serveUDP carries the datagrams of each local UDP source through a
// connection of its own, and that connection's datagrams back to the
// source, until uc closes.
func (f *Forwarder) serveUDP(ctx context.Context, uc *net.UDPConn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	flows := map[netip.AddrPort]net.Conn{}
	defer func() {
		for _, fc := range flows {
			_ = fc.Close()
		}
	}()
	buf := make([]byte, maxUDPDatagram)
	for {
		n, src, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		fc := flows[src]
		if fc == nil {
			if len(flows) >= maxUDPSources {
				continue
			}
			if fc, err = f.Dialer.DialUDP(ctx); err != nil {
				f.report(err)
				return
			}
			f.udpSources.Add(1)
			flows[src] = fc
			wg.Go(func() { returnDatagrams(uc, fc, src) })
		}
		if _, err := fc.Write(buf[:n]); err != nil && f.udpWriteErrors.Add(1) == 1 {
			f.report(err)
		}
	}
}

// returnDatagrams writes what fc receives back to src until fc closes.
func returnDatagrams(uc *net.UDPConn, fc net.Conn, src netip.AddrPort) {
	back := make([]byte, maxUDPDatagram)
	for {
		m, err := fc.Read(back)
		if err != nil {
			return
		}
		_, _ = uc.WriteToUDPAddrPort(back[:m], src)
	}
}
