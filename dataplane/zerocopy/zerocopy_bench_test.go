package zerocopy

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// benchBytes is what one benchmark operation moves over loopback TCP.
const benchBytes = 128 << 20

// benchDiscard measures a receive path: each operation opens a loopback
// connection, a goroutine writes benchBytes from a 256 KiB buffer and
// closes, and recv consumes the stream.
func benchDiscard(b *testing.B, recv func(net.Conn) (int64, error)) {
	b.SetBytes(benchBytes)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	defer reportCPU(b, cpu0)
	for b.Loop() {
		c, s := tcpPair(b)
		errc := make(chan error, 1)
		go func() {
			err := writeN(c, benchBytes)
			_ = c.CloseWrite()
			errc <- err
		}()
		n, err := recv(s)
		if err != nil || n != benchBytes {
			b.Fatalf("received %d, %v", n, err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
		_ = s.Close()
	}
}

// reportCPU reports the CPU time (user+system, both ends of the
// connection, this process) spent per MiB moved since cpu0, when the
// platform measures it.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu0 == 0 || b.N == 0 {
		return
	}
	mib := float64(b.N) * benchBytes / (1 << 20)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/1e3/mib, "cpu-us/MiB")
}

// readLoop is a plain receive loop over a buffer of the given size.
func readLoop(size int) func(net.Conn) (int64, error) {
	return func(c net.Conn) (int64, error) {
		buf := make([]byte, size)
		var total int64
		for {
			n, err := c.Read(buf)
			total += int64(n)
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
	}
}

// BenchmarkDiscardSplice is Discard's fast path (splice to /dev/null on
// Linux).
func BenchmarkDiscardSplice(b *testing.B) {
	benchDiscard(b, func(c net.Conn) (int64, error) { return Discard(c, nil) })
}

// BenchmarkDiscardCopy is the copying fallback with its pooled
// CopyBufferSize buffer.
func BenchmarkDiscardCopy(b *testing.B) {
	benchDiscard(b, func(c net.Conn) (int64, error) { return discardCopy(c, noBytes) })
}

// BenchmarkDiscardRead compares plain read loops over other buffer sizes.
func BenchmarkDiscardRead(b *testing.B) {
	for _, size := range []int{64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dK", size>>10), func(b *testing.B) { benchDiscard(b, readLoop(size)) })
	}
}

// benchSend measures a send path: each operation opens a loopback
// connection read by a 256 KiB read loop, and send writes benchBytes in
// blocks of block bytes.
func benchSend(b *testing.B, block int, send func(p *Payload, c net.Conn) (int, error)) {
	p, err := NewPayload(block, false)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	b.SetBytes(benchBytes)
	b.ReportAllocs()
	recv := readLoop(256 << 10)
	cpu0 := cpuTime(b)
	defer reportCPU(b, cpu0)
	for b.Loop() {
		c, s := tcpPair(b)
		got := make(chan int64, 1)
		go func() {
			n, _ := recv(s)
			got <- n
		}()
		for left := benchBytes; left > 0; left -= block {
			if n, err := send(p, c); err != nil || n != block {
				b.Fatalf("sent %d, %v", n, err)
			}
		}
		_ = c.CloseWrite()
		if n := <-got; n != benchBytes {
			b.Fatalf("receiver got %d", n)
		}
		_ = c.Close()
		_ = s.Close()
	}
}

var benchBlocks = []int{128 << 10, 1 << 20}

// BenchmarkPayloadSendfile is Payload.Send's fast path (sendfile from the
// memfd on Linux).
func BenchmarkPayloadSendfile(b *testing.B) {
	for _, block := range benchBlocks {
		b.Run(fmt.Sprintf("%dK", block>>10), func(b *testing.B) {
			benchSend(b, block, func(p *Payload, c net.Conn) (int, error) { return p.Send(c, block) })
		})
	}
}

// BenchmarkWrite is the copying alternative, Payload.Write (conn.Write of
// the same block).
func BenchmarkWrite(b *testing.B) {
	for _, block := range benchBlocks {
		b.Run(fmt.Sprintf("%dK", block>>10), func(b *testing.B) {
			benchSend(b, block, func(p *Payload, c net.Conn) (int, error) { return p.Write(c, block) })
		})
	}
}
