package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// PipeBufferSize is the size of each pooled copy buffer of Pipe: large
// enough that a TLS side fills several 16 KiB records per Write and a TCP
// side moves a socket buffer's worth per syscall.
const PipeBufferSize = 128 << 10

var pipeBufs = sync.Pool{New: func() any { b := make([]byte, PipeBufferSize); return &b }}

// closeWriter is implemented by *net.TCPConn, *net.UnixConn and *tls.Conn.
type closeWriter interface{ CloseWrite() error }

// PipeCounters are the live byte counts of a Pipe, readable while it runs.
type PipeCounters struct {
	// AToB counts bytes read from a and written to b; BToA the reverse.
	AToB, BToA atomic.Int64
}

// Pipe copies a to b and b to a until both directions have ended, then
// closes both connections. When one side ends its sending (EOF), the other
// is half-closed with CloseWrite where supported (TCP, TLS), so the
// half-close reaches the far end and the opposite direction keeps flowing;
// a side without CloseWrite is closed outright. An error in either
// direction, or the end of ctx, closes both connections at once. It
// returns the bytes copied each way and the first error other than a clean
// EOF (ctx's error when ctx ended the pipe).
func Pipe(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	var c PipeCounters
	return PipeCount(ctx, a, b, &c)
}

// PipeCount is Pipe with counters the caller can read while it runs (for
// quotas and progress).
func PipeCount(ctx context.Context, a, b net.Conn, c *PipeCounters) (aToB, bToA int64, err error) {
	var (
		once     sync.Once
		firstErr error
	)
	closeBoth := func() {
		_ = a.Close()
		_ = b.Close()
	}
	fail := func(e error) {
		once.Do(func() { firstErr = e })
		closeBoth()
	}
	stop := context.AfterFunc(ctx, func() { fail(ctx.Err()) })
	defer stop()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		aToB = pump(b, a, &c.AToB, fail)
	}()
	go func() {
		defer wg.Done()
		bToA = pump(a, b, &c.BToA, fail)
	}()
	wg.Wait()
	closeBoth()
	once.Do(func() {})
	return aToB, bToA, firstErr
}

// maxRecord is the largest TLS record plaintext.
const maxRecord = 16 << 10

// gatherer returns the BatchConn under a TLS source, or nil.
func gatherer(src net.Conn) *BatchConn {
	switch c := src.(type) {
	case *batchedTLS:
		return c.raw
	case *tls.Conn:
		bc, _ := c.NetConn().(*BatchConn)
		return bc
	}
	return nil
}

// pump copies src to dst until EOF, then half-closes dst; on an error it
// calls fail. It returns the bytes copied.
func pump(dst, src net.Conn, n *atomic.Int64, fail func(error)) int64 {
	bp := pipeBufs.Get().(*[]byte)
	defer pipeBufs.Put(bp)
	buf := *bp
	var total int64
	gather := gatherer(src)
	for {
		nr, rerr := src.Read(buf)
		// A TLS source yields one record (<= 16 KiB) per Read: while more
		// bytes already sit in its BatchConn, take further records so the
		// write below moves up to a whole buffer in one call. The sender
		// writes whole records, so a buffered byte means the rest of its
		// record is already on the way.
		for gather != nil && rerr == nil && nr+maxRecord <= len(buf) && gather.Buffered() > 0 {
			var m int
			m, rerr = src.Read(buf[nr:])
			nr += m
		}
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			total += int64(nw)
			n.Add(int64(nw))
			if werr != nil {
				fail(fmt.Errorf("tunnel pipe: write %s: %w", dst.RemoteAddr(), werr))
				return total
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				fail(fmt.Errorf("tunnel pipe: read %s: %w", src.RemoteAddr(), rerr))
				return total
			}
			if cw, ok := dst.(closeWriter); ok {
				if err := cw.CloseWrite(); err != nil {
					fail(fmt.Errorf("tunnel pipe: half-close %s: %w", dst.RemoteAddr(), err))
				}
				return total
			}
			fail(nil)
			return total
		}
	}
}
