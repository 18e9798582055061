package tunnel

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// BatchConn wraps the TCP connection under a *tls.Conn so that the TLS
// records of one large Write leave in one write(2) (per batchMax bytes)
// instead of one write(2) per 16 KiB record. Outside a batch (handshake, alerts) it
// passes writes straight through. Build the TLS connection over it and
// write through BatchTLS:
//
//	raw, _ := dialer.DialContext(ctx, "tcp", addr)
//	tc := tls.Client(tunnel.NewBatchConn(raw), conf)   // or tls.Server
//	conn := tunnel.BatchTLS(tc)                         // use conn for data
type BatchConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte

	// readAhead is switched on by BatchTLS: from then on rbuf holds bytes
	// read from the socket in large chunks and not yet consumed by the
	// TLS layer, rbuf[roff:]. Before (handshake, pp-link frames) reads
	// pass straight through and cost no buffer.
	readAhead atomic.Bool
	rbuf      []byte
	roff      int
}

// readChunk is the size of one socket read of a BatchConn.
const readChunk = 128 << 10

// batchMax bounds a batch; a larger Write is sent in several batches.
const batchMax = 256 << 10

// NewBatchConn wraps c.
func NewBatchConn(c net.Conn) *BatchConn { return &BatchConn{Conn: c} }

// Write implements net.Conn: inside a batch it appends to the batch.
func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		c.buf = append(c.buf, p...)
		var err error
		if len(c.buf) >= batchMax {
			_, err = c.Conn.Write(c.buf)
			c.buf = c.buf[:0]
		}
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Read implements net.Conn. Once BatchTLS has switched read-ahead on it
// reads the socket in chunks of readChunk, so the TLS layer above, which
// asks for little more than a record at a time, costs one system call per
// chunk rather than per record. Reads are not safe for concurrent use (the
// TLS layer serialises them).
func (c *BatchConn) Read(p []byte) (int, error) {
	if c.roff < len(c.rbuf) {
		n := copy(p, c.rbuf[c.roff:])
		c.roff += n
		return n, nil
	}
	if !c.readAhead.Load() || len(p) >= readChunk {
		return c.Conn.Read(p)
	}
	if c.rbuf == nil {
		c.rbuf = make([]byte, readChunk)
	}
	n, err := c.Conn.Read(c.rbuf[:readChunk])
	c.rbuf, c.roff = c.rbuf[:n], 0
	m := copy(p, c.rbuf)
	c.roff = m
	return m, err
}

// Buffered reports how many bytes were read from the socket and not yet
// consumed; Pipe uses it to gather several TLS records per write.
func (c *BatchConn) Buffered() int { return len(c.rbuf) - c.roff }

// CloseWrite half-closes the underlying connection when it can.
func (c *BatchConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// cork starts a batch.
func (c *BatchConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// flush ends the batch and writes what it gathered in one call.
func (c *BatchConn) flush() error {
	c.mu.Lock()
	c.corked = false
	b := c.buf
	c.buf = c.buf[:0]
	c.mu.Unlock()
	if len(b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(b)
	return err
}

// batchedTLS is a *tls.Conn whose Writes are batched by its BatchConn.
type batchedTLS struct {
	*tls.Conn
	raw *BatchConn
	wmu sync.Mutex
}

// BatchTLS returns tc with batched writes and read-ahead when tc runs over
// a *BatchConn, else tc itself. Call it when tc becomes a data connection
// (after the tunnel attach), not before: read-ahead costs a 128 KiB
// buffer. The result is a net.Conn that also has CloseWrite,
// ConnectionState and NetConn (the *tls.Conn).
func BatchTLS(tc *tls.Conn) net.Conn {
	raw, ok := tc.NetConn().(*BatchConn)
	if !ok {
		return tc
	}
	raw.readAhead.Store(true)
	return &batchedTLS{Conn: tc, raw: raw}
}

// Write encrypts p into records gathered by the BatchConn and sends them
// in one system call.
func (c *batchedTLS) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.raw.cork()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.flush(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

// NetConn returns the TLS connection.
func (c *batchedTLS) NetConn() net.Conn { return c.Conn }
