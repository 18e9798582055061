package tunnel

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// quic-go discards a received DATAGRAM frame when its receive queue (128
// frames) is full and says so only in its qlog trace. dropTracer is a
// quic.Config.Tracer that counts those discards per connection: each
// connection's recorder registers itself under the connection's address
// pair when quic-go records the connection's start, and a QUICSession
// finds its counter there.

// dropCounter counts one connection's discarded datagrams.
type dropCounter struct {
	n atomic.Uint64
}

func (d *dropCounter) load() uint64 {
	if d == nil {
		return 0
	}
	return d.n.Load()
}

// dropCounters maps an address pair (tupleKey) to its connection's
// counter, from the connection's start to its end. Two connections on one
// address pair at once (not something our clients do) would share the
// later one's counter.
var dropCounters sync.Map

// dropTracer implements quic.Config.Tracer.
func dropTracer(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	return dropTrace{}
}

type dropTrace struct{}

func (dropTrace) AddProducer() qlogwriter.Recorder { return &dropRecorder{} }

// dropRecorder counts one connection's discarded datagrams.
type dropRecorder struct {
	key string
	c   dropCounter
}

// RecordEvent implements qlogwriter.Recorder. quic-go calls it from the
// connection's goroutine, never concurrently with Close.
func (r *dropRecorder) RecordEvent(ev qlogwriter.Event) {
	switch e := ev.(type) {
	case qlog.DatagramDropped:
		if e.Direction == qlog.DirectionReceiving {
			r.c.n.Add(1)
		}
	case qlog.StartedConnection:
		if r.key == "" {
			r.key = eventKey(e)
			dropCounters.Store(r.key, &r.c)
		}
	}
}

// Close implements qlogwriter.Recorder.
func (r *dropRecorder) Close() error {
	if r.key != "" {
		dropCounters.CompareAndDelete(r.key, &r.c)
	}
	return nil
}

// tupleKey names a connection by its local port and remote address (the
// local IP is left out: quic-go's qlog and Conn.LocalAddr spell an
// unspecified one differently).
func tupleKey(localPort int, remote netip.AddrPort) string {
	return strconv.Itoa(localPort) + "|" + remote.String()
}

// eventKey is tupleKey of a StartedConnection event.
func eventKey(e qlog.StartedConnection) string {
	local, remote := e.Local.IPv4, e.Remote.IPv4
	if !local.IsValid() {
		local = e.Local.IPv6
	}
	if !remote.IsValid() {
		remote = e.Remote.IPv6
	}
	return tupleKey(int(local.Port()), unmapped(remote))
}

func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// lookupDropCounter returns c's counter, or nil when c was made without
// dropTracer (nil counts nothing).
func lookupDropCounter(c *quic.Conn) *dropCounter {
	la, lok := c.LocalAddr().(*net.UDPAddr)
	ra, rok := c.RemoteAddr().(*net.UDPAddr)
	if !lok || !rok {
		return nil
	}
	v, ok := dropCounters.Load(tupleKey(la.Port, unmapped(ra.AddrPort())))
	if !ok {
		return nil
	}
	return v.(*dropCounter)
}
