// Package udpbatch reads and writes UDP datagrams in batches.
//
// On Linux a batch is one recvmmsg(2) or sendmmsg(2) system call, issued
// through the socket's syscall.RawConn so the Go netpoller still handles
// readiness and deadlines. Elsewhere the same API moves one datagram per
// system call. The kernel message headers, I/O vectors, address and control
// buffers of a Conn are allocated once in New and reused, and source
// addresses are decoded straight into netip.AddrPort values, so a batch
// costs no heap allocation per datagram.
//
// The package talks to the kernel through golang.org/x/sys rather than the
// batch API of golang.org/x/net/ipv4: that API hands back every source
// address as a freshly allocated *net.UDPAddr and wants one for every
// destination, which is an allocation per datagram on both paths of an echo
// loop, and it would need separate ipv4 and ipv6 wrappers for one socket.
package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// DefaultBatch is the number of messages moved per system call when New is
// given a non-positive batch size.
const DefaultBatch = 64

// DefaultBufSize is the buffer size of each message handed out by Get: large
// enough for any datagram on a standard 1500-byte Ethernet path.
const DefaultBufSize = 2048

// ErrUnsupported reports a facility this platform does not provide. It
// matches errors.ErrUnsupported.
var ErrUnsupported = errors.ErrUnsupported

// ErrBadLength reports a Message whose N is negative or beyond its buffer.
var ErrBadLength = errors.New("message length out of buffer")

// ErrAddrFamily reports an IPv6 destination on an IPv4 socket.
var ErrAddrFamily = errors.New("address family does not match socket")

// Message is one datagram of a batch.
type Message struct {
	// Buf holds the datagram. ReadBatch fills it up to len(Buf);
	// WriteBatch sends Buf[:N].
	Buf []byte
	// N is the datagram's length.
	N int
	// Addr is the peer: the source after ReadBatch, the destination for
	// WriteBatch. On a connected socket WriteBatch accepts the zero
	// AddrPort. IPv4 peers of a dual-stack socket are reported unmapped.
	Addr netip.AddrPort
	// RxTime is the kernel's receive time in nanoseconds since the Unix
	// epoch, set by ReadBatch when EnableRxTimestamps succeeded, else 0.
	RxTime int64
	// Truncated reports that the datagram was longer than Buf and was cut.
	Truncated bool
	// Seg, when positive, is the size of each datagram in Buf[:N]: the
	// message carries several back to back (see EnableGSO, EnableGRO).
	Seg int
}

// Batch is a reusable set of messages with buffers, handed out by Conn.Get.
type Batch struct {
	// Msgs has the Conn's batch size of messages, each with a buffer of
	// DefaultBufSize bytes.
	Msgs []Message
}

// Conn wraps a *net.UDPConn (IPv4, IPv6 or dual stack) with batched reads
// and writes. ReadBatch and WriteBatch may run concurrently with each other;
// concurrent calls of the same method are serialized.
type Conn struct {
	uc    *net.UDPConn
	batch int
	pool  sync.Pool
	sys   sysConn
}

// New wraps c. batch is the largest number of messages moved per system
// call (DefaultBatch if batch <= 0); longer slices passed to ReadBatch or
// WriteBatch are handled batch messages at a time.
func New(c *net.UDPConn, batch int) *Conn {
	if batch <= 0 {
		batch = DefaultBatch
	}
	bc := &Conn{uc: c, batch: batch}
	bc.pool.New = func() any {
		b := &Batch{Msgs: make([]Message, batch)}
		buf := make([]byte, batch*DefaultBufSize)
		for i := range b.Msgs {
			b.Msgs[i].Buf = buf[i*DefaultBufSize : (i+1)*DefaultBufSize : (i+1)*DefaultBufSize]
		}
		return b
	}
	bc.sys.init(c, batch)
	return bc
}

// BatchSize returns the number of messages moved per system call.
func (c *Conn) BatchSize() int { return c.batch }

// UDPConn returns the wrapped socket.
func (c *Conn) UDPConn() *net.UDPConn { return c.uc }

// Get returns a batch of BatchSize messages whose buffers have their full
// DefaultBufSize length, ready for ReadBatch. Return it with Put.
func (c *Conn) Get() *Batch {
	return c.pool.Get().(*Batch)
}

// Put resets b's messages (buffers back to full length, lengths and
// addresses cleared) and returns it to the pool. b must not be used after.
func (c *Conn) Put(b *Batch) {
	for i := range b.Msgs {
		m := &b.Msgs[i]
		m.Buf = m.Buf[:cap(m.Buf)]
		m.N, m.Addr, m.RxTime, m.Truncated, m.Seg = 0, netip.AddrPort{}, 0, false, 0
	}
	c.pool.Put(b)
}

// ReadBatch blocks until at least one datagram arrives (or the read deadline
// passes, or the socket is closed), then fills as many of msgs as the kernel
// has queued, up to BatchSize, and returns how many it filled. After Close
// the error matches net.ErrClosed.
func (c *Conn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if len(msgs) > c.batch {
		msgs = msgs[:c.batch]
	}
	return c.sys.readBatch(c.uc, msgs)
}

// WriteBatch sends msgs[i].Buf[:msgs[i].N] to msgs[i].Addr for every
// message, looping over partial sends. It returns how many messages were
// sent; when that is less than len(msgs) the error belongs to message n, and
// the caller may skip it and call again with msgs[n+1:].
func (c *Conn) WriteBatch(msgs []Message) (int, error) {
	sent := 0
	for sent < len(msgs) {
		chunk := msgs[sent:]
		if len(chunk) > c.batch {
			chunk = chunk[:c.batch]
		}
		n, err := c.sys.writeBatch(c.uc, chunk)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// EnableRxTimestamps asks the kernel to stamp received datagrams
// (SO_TIMESTAMPNS); ReadBatch then reports the time in Message.RxTime. Where
// that is not available the error matches ErrUnsupported and RxTime stays 0.
func (c *Conn) EnableRxTimestamps() error {
	return c.sys.enableTimestamps(c.uc)
}

// Close closes the wrapped socket.
func (c *Conn) Close() error { return c.uc.Close() }
