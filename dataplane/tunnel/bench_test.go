package tunnel

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/echo"
)

// benchChunk is what the application writes per benchmark op, iperf3's
// default TCP block.
const benchChunk = 128 << 10

// benchStream writes benchChunk per op into w while a goroutine drains r;
// it waits for the drain so every op's bytes arrived.
func benchStream(b *testing.B, w io.Writer, r io.Reader, closeW func()) {
	b.Helper()
	buf := make([]byte, benchChunk)
	done := make(chan int64, 1)
	go func() { done <- drain(r) }()
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	var ops int64
	cpu0 := processCPU(b)
	for b.Loop() {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
		ops++
	}
	closeW()
	if n := <-done; n != ops*benchChunk {
		b.Fatalf("received %d bytes, sent %d", n, ops*benchChunk)
	}
	// CPU time per KiB moved is what matters on a shared machine, where
	// wall-clock throughput depends on the neighbours.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(ops*benchChunk>>10), "cpu-ns/KiB")
}

// drain reads r to EOF in PipeBufferSize reads and returns the count. It
// reads directly: io.CopyBuffer into io.Discard would read 8 KiB at a time
// (io.Discard's ReadFrom, or a TCP source's WriteTo, ignores the buffer),
// which made the receiver the bottleneck of every benchmark here.
func drain(r io.Reader) int64 {
	buf := make([]byte, PipeBufferSize)
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if err != nil {
			return total
		}
	}
}

// processCPU returns the process's user+system CPU time in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRawTCP is the baseline: loopback TCP, no TLS, no pipe.
func BenchmarkRawTCP(b *testing.B) {
	w, r := tcpPair(b)
	benchStream(b, w, r, func() { _ = w.CloseWrite() })
}

// BenchmarkTLS is one loopback mTLS connection, no pipe: the cost of the
// encryption alone.
func BenchmarkTLS(b *testing.B) {
	srvConf, cliConf := testTLS(b)
	r, w := tlsPair(b, srvConf, cliConf)
	benchStream(b, w, r, func() { _ = w.CloseWrite() })
}

func batched(c net.Conn) net.Conn { return NewBatchConn(c) }

// BenchmarkPipeTLSUploadBatched is BenchmarkPipeTLSUpload with both TLS
// ends over a BatchConn (one write per Pipe chunk instead of per record).
func BenchmarkPipeTLSUploadBatched(b *testing.B) {
	app, a := tcpPair(b)
	srvConf, cliConf := testTLS(b)
	far, tb := tlsPairOver(b, srvConf, cliConf, batched)
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		_, _, _ = Pipe(context.Background(), a, BatchTLS(tb))
	}()
	benchStream(b, app, BatchTLS(far), func() { _ = app.CloseWrite() })
	_ = app.Close()
	_ = far.Close()
	<-pipeDone
}

// BenchmarkPipeTLSDownloadBatched is BenchmarkPipeTLSDownload with both
// TLS ends over a BatchConn.
func BenchmarkPipeTLSDownloadBatched(b *testing.B) {
	app, a := tcpPair(b)
	srvConf, cliConf := testTLS(b)
	far, tb := tlsPairOver(b, srvConf, cliConf, batched)
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		_, _, _ = Pipe(context.Background(), a, BatchTLS(tb))
	}()
	farB := BatchTLS(far)
	benchStream(b, farB, app, func() { _ = far.CloseWrite() })
	_ = app.Close()
	_ = far.Close()
	<-pipeDone
}

// BenchmarkPipeTLSUpload is the appliance side of a tunneled upload: the
// application writes to a local TCP connection, Pipe encrypts it onto a
// TLS connection, the reflector end reads and decrypts. All on this
// machine, so both TLS ends cost CPU here.
func BenchmarkPipeTLSUpload(b *testing.B) {
	app, a := tcpPair(b)
	srvConf, cliConf := testTLS(b)
	far, tb := tlsPair(b, srvConf, cliConf)
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		_, _, _ = Pipe(context.Background(), a, tb)
	}()
	benchStream(b, app, far, func() { _ = app.CloseWrite() })
	_ = app.Close()
	_ = far.Close()
	<-pipeDone
}

// BenchmarkPipeTLSDownload is the reverse (iperf3 -R): the reflector end
// encrypts, Pipe decrypts onto the local TCP connection.
func BenchmarkPipeTLSDownload(b *testing.B) {
	app, a := tcpPair(b)
	srvConf, cliConf := testTLS(b)
	far, tb := tlsPair(b, srvConf, cliConf)
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		_, _, _ = Pipe(context.Background(), a, tb)
	}()
	benchStream(b, far, app, func() { _ = far.CloseWrite() })
	_ = app.Close()
	_ = far.Close()
	<-pipeDone
}

// BenchmarkPipeTCP is Pipe between two plain TCP connections: the pump's
// own cost without TLS.
func BenchmarkPipeTCP(b *testing.B) {
	app, a := tcpPair(b)
	bb, far := tcpPair(b)
	pipeDone := make(chan struct{})
	go func() {
		defer close(pipeDone)
		_, _, _ = Pipe(context.Background(), a, bb)
	}()
	benchStream(b, app, far, func() { _ = app.CloseWrite() })
	_ = app.Close()
	_ = far.Close()
	<-pipeDone
}

// benchProbe runs one 2,000-probe run at 10 kpps per op over conn and
// reports the RTT percentiles of the last run.
func benchProbe(b *testing.B, conn net.Conn) {
	b.Helper()
	var res *echo.ProbeResult
	for b.Loop() {
		var err error
		res, err = echo.Probe(context.Background(), conn, echo.ProbeConfig{Rate: 10000, Size: 64, Count: 2000, Timestamped: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(res.RTTP50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.RTTP99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(res.Lost)/float64(res.Sent)*100, "loss-%")
}

// BenchmarkEchoRTTDirect is udp_echo without the tunnel: echo.Engine on a
// loopback UDP socket.
func BenchmarkEchoRTTDirect(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := echo.Listen(ctx, "127.0.0.1:0", echo.Config{Timestamped: true})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = e.Serve(ctx) }()
	conn, err := net.Dial("udp", e.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	benchProbe(b, conn)
}

// BenchmarkEchoRTTTunnel is udp_echo through the tunnel: FlowEcho on a
// QUIC flow over loopback.
func BenchmarkEchoRTTTunnel(b *testing.B) {
	srvConf, cliConf := testTLS(b)
	sessions := make(chan *QUICSession, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := func(s *QUICSession) {
		sessions <- s
		_ = NewFlowEcho(s.Flow(0), echo.Config{Timestamped: true}).Serve(ctx)
	}
	ln, err := ListenQUIC(ctx, "127.0.0.1:0", srvConf,
		func(context.Context, *x509.Certificate, net.Addr, []byte) ([]byte, func(*QUICSession), error) {
			return []byte("ok"), serve, nil
		})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); _ = ln.Close() }()
	cli, err := DialQUIC(ctx, ln.Addr().String(), cliConf)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	if _, err := cli.Attach(ctx, []byte("attach")); err != nil {
		b.Fatal(err)
	}
	<-sessions
	benchProbe(b, cli.Flow(0))
}

// BenchmarkFlowDatagrams32K sends 32 KiB datagrams (iperf3's default UDP
// length on loopback, 28 fragments each) through a flow as fast as the
// QUIC send queue takes them and reports what arrived whole and what
// each end dropped inside.
func BenchmarkFlowDatagrams32K(b *testing.B) {
	cli, srv := attachedB(b)
	cf := cli.Flow(1)
	sf := srv.Flow(1)
	p := make([]byte, 32<<10)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			_ = sf.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := sf.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := cf.Write(p); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	st := srv.Stats()
	b.ReportMetric(float64(got.Load())/float64(b.N)*100, "delivered-%")
	b.ReportMetric(float64(st.QueueDropped)/float64(b.N), "quic-queue-drops/op")
	b.ReportMetric(float64(st.Incomplete)/float64(b.N), "incomplete/op")
}

// attachedB is an attached client and server session for a benchmark.
func attachedB(b *testing.B) (cli, srv *QUICSession) {
	srvConf, cliConf := testTLS(b)
	sessions := make(chan *QUICSession, 1)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	ln, err := ListenQUIC(ctx, "127.0.0.1:0", srvConf,
		func(context.Context, *x509.Certificate, net.Addr, []byte) ([]byte, func(*QUICSession), error) {
			return []byte("ok"), func(s *QUICSession) { sessions <- s; <-s.Context().Done() }, nil
		})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	cli, err = DialQUIC(ctx, ln.Addr().String(), cliConf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cli.Close() })
	if _, err := cli.Attach(ctx, []byte("attach")); err != nil {
		b.Fatal(err)
	}
	return cli, <-sessions
}
