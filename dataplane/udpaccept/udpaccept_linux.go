package udpaccept

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/packetparamedic/reflector/dataplane/sockopt"
)

// rebind opens the next listening socket; tests replace it to fail.
var rebind = sockopt.ListenUDPReusePort

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
	broken error // set when a hand-off left no listening socket
}

// Dropped returns how many datagrams were thrown away: those from senders
// allow rejected, and queued strays beyond the bound kept for later
// streams.
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

// NewAcceptor listens on addr ("127.0.0.1:5201", "[::]:5201"; port 0 picks
// one) with SO_REUSEADDR and SO_REUSEPORT. allow decides which senders
// (IPv4-mapped addresses unmapped) may open streams; nil allows all.
// Datagrams from other senders are dropped and counted in Dropped.
func NewAcceptor(ctx context.Context, addr string, allow func(netip.AddrPort) bool) (*Acceptor, error) {
	cur, err := sockopt.ListenUDPReusePort(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("udp acceptor: %w", err)
	}
	return &Acceptor{
		addr:  cur.LocalAddr().(*net.UDPAddr),
		allow: allow,
		buf:   make([]byte, maxDatagram),
		cur:   cur,
	}, nil
}

// AcceptUDP waits for the first datagram of a new stream from an allowed
// sender and returns a *net.UDPConn connected to that sender (RemoteAddr
// is the sender) plus the datagram. Anything the sender sent before the
// socket was connected (e.g. a retried connect datagram) is read from conn
// afterwards. The caller owns conn and must close it.
//
// AcceptUDP returns net.ErrClosed after Close and ctx's error when ctx is
// done. Concurrent calls are served one at a time (a call waiting for
// another to finish does not watch its own ctx).
func (a *Acceptor) AcceptUDP(ctx context.Context) (net.Conn, []byte, error) {
	a.acceptMu.Lock()
	defer a.acceptMu.Unlock()
	for {
		cur, err := a.current()
		if err != nil {
			return nil, nil, err
		}
		var d datagram
		if len(a.stash) > 0 {
			d = a.popStash()
		} else {
			d, err = a.read(ctx, cur)
			if err != nil {
				return nil, nil, err
			}
			if !a.allowed(d.from) {
				a.dropped.Add(1)
				continue
			}
			d.data = append([]byte(nil), d.data...)
		}
		conn, err := a.handOff(cur, d.from)
		if err != nil {
			return nil, nil, err
		}
		return conn, d.data, nil
	}
}

// current returns the listening socket, or net.ErrClosed, or the error
// that broke the acceptor.
func (a *Acceptor) current() (*net.UDPConn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, net.ErrClosed
	}
	if a.broken != nil {
		return nil, a.broken
	}
	return a.cur, nil
}

// breakWith records that the listening socket is unusable (connected but
// not replaced), so every later AcceptUDP fails with err until Close.
func (a *Acceptor) breakWith(err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return net.ErrClosed
	}
	a.broken = fmt.Errorf("udp acceptor on %s unusable: %w", a.addr, err)
	return a.broken
}

// popStash takes the oldest stashed datagram and forgets the others from
// the same sender (retries of a connect datagram that would otherwise open
// phantom streams).
func (a *Acceptor) popStash() datagram {
	d := a.stash[0]
	keep := a.stash[:0]
	for _, s := range a.stash[1:] {
		if unmap(s.from) != unmap(d.from) {
			keep = append(keep, s)
		}
	}
	clear(a.stash[len(keep):])
	a.stash = keep
	return d
}

// aLongTimeAgo is a read deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// read receives one datagram on cur, giving up when ctx is done.
func (a *Acceptor) read(ctx context.Context, cur *net.UDPConn) (datagram, error) {
	woke := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = cur.SetReadDeadline(aLongTimeAgo)
		close(woke)
	})
	n, from, err := cur.ReadFromUDPAddrPort(a.buf)
	if !stop() {
		<-woke
		_ = cur.SetReadDeadline(time.Time{})
	}
	if err != nil {
		if a.isClosed() {
			return datagram{}, net.ErrClosed
		}
		if ctx.Err() != nil {
			return datagram{}, ctx.Err()
		}
		return datagram{}, fmt.Errorf("udp accept read on %s: %w", a.addr, err)
	}
	return datagram{from: from, data: a.buf[:n]}, nil
}

// handOff connects cur to peer, binds the next listening socket and
// returns the stream's connection. It connects before binding, as the C
// server does, so a sender's packets never reach the next listener; a new
// sender's datagram arriving in between is refused by the kernel (iperf3
// clients open their next stream only after the server's reply, which the
// caller sends after AcceptUDP returns).
//
// When connect succeeds but the socket cannot be wrapped or replaced
// (descriptor limits), the acceptor has no listening socket left and
// reports that error from then on.
func (a *Acceptor) handOff(cur *net.UDPConn, peer netip.AddrPort) (net.Conn, error) {
	conn, connected, err := connectSocket(cur, peer)
	if err != nil {
		if a.isClosed() {
			return nil, net.ErrClosed
		}
		if connected {
			return nil, a.breakWith(err)
		}
		return nil, fmt.Errorf("udp accept: %w", err)
	}
	next, err := rebind(context.Background(), a.addr.String())
	if err != nil {
		_ = conn.Close()
		return nil, a.breakWith(fmt.Errorf("rebind: %w", err))
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		_ = next.Close()
		_ = conn.Close()
		return nil, net.ErrClosed
	}
	a.cur = next
	a.mu.Unlock()
	_ = cur.Close() // conn holds a duplicate of the now-connected socket
	a.takeStrays(conn, peer)
	return conn, nil
}

// connectSocket connect(2)s the bound socket under cur to peer and returns
// a new *net.UDPConn for it. The socket is duplicated (F_DUPFD_CLOEXEC) and
// wrapped with net.FilePacketConn so that the returned conn knows its
// remote address: a *net.UDPConn whose descriptor was connected behind its
// back reads and writes correctly but reports a nil RemoteAddr. The caller
// closes cur; the socket lives on in the returned conn. connected reports
// whether cur's socket is now connected (also when an error follows).
func connectSocket(cur *net.UDPConn, peer netip.AddrPort) (conn *net.UDPConn, connected bool, err error) {
	rc, err := cur.SyscallConn()
	if err != nil {
		return nil, false, fmt.Errorf("raw conn: %w", err)
	}
	dup := -1
	var cerr error
	err = rc.Control(func(fd uintptr) {
		domain, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			cerr = fmt.Errorf("get SO_DOMAIN: %w", err)
			return
		}
		sa, err := sockaddr(domain, peer)
		if err != nil {
			cerr = err
			return
		}
		if err := unix.Connect(int(fd), sa); err != nil {
			cerr = fmt.Errorf("connect to %s: %w", peer, err)
			return
		}
		connected = true
		dup, cerr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if cerr != nil {
			cerr = fmt.Errorf("dup connected socket: %w", cerr)
		}
	})
	if err != nil {
		return nil, connected, fmt.Errorf("socket control: %w", err)
	}
	if cerr != nil {
		return nil, connected, cerr
	}
	f := os.NewFile(uintptr(dup), "udp-stream")
	pc, err := net.FilePacketConn(f)
	_ = f.Close()
	if err != nil {
		return nil, true, fmt.Errorf("wrap connected socket: %w", err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		_ = pc.Close()
		return nil, true, fmt.Errorf("wrap connected socket: got %T", pc)
	}
	return uc, true, nil
}

// sockaddr builds the connect(2) address of peer for a socket of domain.
func sockaddr(domain int, peer netip.AddrPort) (unix.Sockaddr, error) {
	ip := peer.Addr()
	switch {
	case domain == unix.AF_INET && ip.Unmap().Is4():
		return &unix.SockaddrInet4{Port: int(peer.Port()), Addr: ip.Unmap().As4()}, nil
	case domain == unix.AF_INET6:
		sa := &unix.SockaddrInet6{Port: int(peer.Port()), Addr: ip.As16()}
		if z := ip.Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				sa.ZoneId = uint32(ifi.Index)
			} else if n, err := strconv.ParseUint(z, 10, 32); err == nil {
				sa.ZoneId = uint32(n)
			}
		}
		return sa, nil
	default:
		return nil, fmt.Errorf("connect to %s: address family does not match socket domain %d", peer, domain)
	}
}

// takeStrays moves datagrams from other senders that were queued on the
// socket before it was connected (they arrived between the first datagram
// and connect) off the front of conn's queue: allowed ones are stashed for
// the next AcceptUDP, others counted as dropped. It stops at the first
// datagram from peer, so the stream's own packets stay in order on conn.
func (a *Acceptor) takeStrays(conn *net.UDPConn, peer netip.AddrPort) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	var peek [1]byte
	_ = rc.Control(func(fd uintptr) {
		for {
			_, from, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if err != nil {
				return
			}
			src, ok := addrPort(from)
			if !ok || unmap(src) == unmap(peer) {
				return
			}
			n, _, err := unix.Recvfrom(int(fd), a.buf, unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			if !a.allowed(src) || len(a.stash) >= maxStash {
				a.dropped.Add(1)
				continue
			}
			a.stash = append(a.stash, datagram{from: src, data: append([]byte(nil), a.buf[:n]...)})
		}
	})
}

// addrPort converts a received sockaddr.
func addrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), true
	default:
		return netip.AddrPort{}, false
	}
}

// Close stops accepting: pending and later AcceptUDP calls return
// net.ErrClosed. Connections already handed out stay open.
func (a *Acceptor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	if err := a.cur.Close(); err != nil {
		return fmt.Errorf("close udp acceptor: %w", err)
	}
	return nil
}
