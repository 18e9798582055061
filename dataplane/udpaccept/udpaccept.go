// Package udpaccept accepts iperf3 UDP streams on a shared port the way the
// C iperf3 server does: the first datagram of a stream arrives on an
// unconnected socket bound to the port; that socket is connect()ed to the
// sender and becomes the stream's socket, and a fresh socket is bound to
// the same port (SO_REUSEPORT) for the next stream. The kernel then
// delivers each sender's packets to its own connected socket.
package udpaccept

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ErrNotSupported is returned by NewAcceptor on platforms without the
// socket semantics the acceptor needs (everything but Linux).
var ErrNotSupported = errors.New("udpaccept: not supported on this platform")

// maxDatagram bounds one received datagram (the largest UDP payload).
const maxDatagram = 64 << 10

// maxStash bounds how many datagrams from other senders, found queued on a
// socket when it is connected, are kept for later AcceptUDP calls.
const maxStash = 64

// datagram is one received packet and its sender.
type datagram struct {
	from netip.AddrPort
	data []byte
}

// Acceptor hands out one connected UDP socket per stream. AcceptUDP calls
// are serialized; Dropped, Addr and Close may be called concurrently with
// them.
type Acceptor struct {
	addr    *net.UDPAddr
	allow   func(netip.AddrPort) bool
	dropped atomic.Uint64

	acceptMu sync.Mutex // serializes AcceptUDP; guards buf and stash
	buf      []byte
	stash    []datagram

	mu     sync.Mutex
	cur    *net.UDPConn // unconnected socket that receives new streams
	closed bool
}

// Dropped returns how many datagrams from senders that allow rejected were
// thrown away.
func (a *Acceptor) Dropped() uint64 { return a.dropped.Load() }

// Addr returns the address the acceptor listens on, with the port the
// kernel chose when the requested port was 0.
func (a *Acceptor) Addr() net.Addr { return a.addr }

// allowed applies the allow function to a sender, IPv4-mapped addresses
// unmapped.
func (a *Acceptor) allowed(from netip.AddrPort) bool {
	return a.allow == nil || a.allow(unmap(from))
}

// unmap turns an IPv4-mapped IPv6 sender into its IPv4 form.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// isClosed reports whether Close was called.
func (a *Acceptor) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}
