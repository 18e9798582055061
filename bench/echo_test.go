package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/dataplane/udpbatch"
)

const (
	// echoSize is the datagram size of the echo benchmarks.
	echoSize = 64
	// echoPerOp is how many datagrams one BenchmarkEchoPPS op echoes.
	echoPerOp = 100_000
	// latencyRate and latencyPerOp shape BenchmarkEchoLatency: one second
	// of probes at a fixed rate per op.
	latencyRate  = 10_000
	latencyPerOp = 10_000
)

// echoWindows are the numbers of datagrams the load generator keeps in
// flight: a light queue and one deep enough for full batches.
var echoWindows = []int{256, 1024}

// echoServers are the two engines compared: ours and a plain loop doing
// one datagram per system call.
var echoServers = []struct {
	name  string
	start func(b *testing.B) *net.UDPAddr
}{
	{"plain", startPlainEcho},
	{"batched", startBatchedEcho},
}

// startBatchedEcho runs dataplane/echo on loopback until the benchmark ends.
func startBatchedEcho(b *testing.B) *net.UDPAddr {
	b.Helper()
	e, err := echo.Listen(context.Background(), "127.0.0.1:0", echo.Config{Allowed: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve(context.Background()) }()
	b.Cleanup(func() {
		e.Close()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return e.Addr().(*net.UDPAddr)
}

// startPlainEcho runs the baseline: ReadFromUDPAddrPort/WriteToUDPAddrPort,
// one datagram per system call, same socket buffers as the engine.
func startPlainEcho(b *testing.B) *net.UDPAddr {
	b.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.SetReadBuffer(echo.SocketBuffer); err != nil {
		b.Fatal(err)
	}
	if err := c.SetWriteBuffer(echo.SocketBuffer); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, udpbatch.DefaultBufSize)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := c.WriteToUDPAddrPort(buf[:n], from); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	b.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr)
}

// loadgen is a batched client keeping a fixed window of datagrams in
// flight against one echo server.
type loadgen struct {
	c       *udpbatch.Conn
	out, in *udpbatch.Batch
	window  int
	lost    int
}

func newLoadgen(b *testing.B, dst *net.UDPAddr, window int) *loadgen {
	b.Helper()
	uc, err := net.DialUDP("udp4", nil, dst)
	if err != nil {
		b.Fatal(err)
	}
	if err := uc.SetReadBuffer(echo.SocketBuffer); err != nil {
		b.Fatal(err)
	}
	c := udpbatch.New(uc, udpbatch.DefaultBatch)
	g := &loadgen{c: c, out: c.Get(), in: c.Get(), window: window}
	for i := range g.out.Msgs {
		g.out.Msgs[i].N = echoSize
	}
	b.Cleanup(func() { c.Close() })
	return g
}

// run echoes total datagrams. A window that goes quiet for 100 ms counts
// as lost and is sent again, so a drop can never hang the benchmark.
func (g *loadgen) run(b *testing.B, total int) {
	inflight, sent, recv := 0, 0, 0
	for recv < total {
		for inflight < g.window && sent < total {
			k := min(g.window-inflight, len(g.out.Msgs), total-sent)
			n, err := g.c.WriteBatch(g.out.Msgs[:k])
			if err != nil {
				b.Fatalf("load generator send: %v", err)
			}
			sent += n
			inflight += n
		}
		if err := g.c.UDPConn().SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			b.Fatal(err)
		}
		n, err := g.c.ReadBatch(g.in.Msgs)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			g.lost += inflight
			sent -= inflight
			inflight = 0
			if g.lost > total/10 {
				b.Fatalf("load generator: %d of %d datagrams lost", g.lost, total)
			}
			continue
		}
		if err != nil {
			b.Fatalf("load generator receive: %v", err)
		}
		recv += n
		inflight -= n
	}
}

// BenchmarkEchoPPS measures echo throughput for 64-byte datagrams: our
// batched engine against a one-datagram-per-syscall loop, driven by the
// same batched load generator at each window. Besides pps it reports the
// process CPU time (load generator plus server) per echoed datagram, which
// is steadier than wall time on a shared machine.
func BenchmarkEchoPPS(b *testing.B) {
	for _, w := range echoWindows {
		for _, srv := range echoServers {
			b.Run(fmt.Sprintf("window=%d/%s", w, srv.name), func(b *testing.B) {
				g := newLoadgen(b, srv.start(b), w)
				g.run(b, w) // warm up
				g.lost = 0
				b.SetBytes(echoPerOp * echoSize)
				b.ReportAllocs()
				cpu0 := processCPU(b)
				for b.Loop() {
					g.run(b, echoPerOp)
				}
				cpu := processCPU(b) - cpu0
				b.ReportMetric(float64(echoPerOp*b.N)/b.Elapsed().Seconds(), "pps")
				b.ReportMetric(float64(cpu)/float64(echoPerOp*b.N), "cpu-ns/pkt")
				b.ReportMetric(float64(g.lost)/float64(b.N), "lost/op")
			})
		}
	}
}

// processCPU returns the user plus system CPU time of this process.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEchoLatency measures the round trip through each engine at a
// fixed 10,000 pps with echo.Probe.
func BenchmarkEchoLatency(b *testing.B) {
	for _, srv := range echoServers {
		b.Run(srv.name, func(b *testing.B) {
			c, err := net.DialUDP("udp4", nil, srv.start(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			cfg := echo.ProbeConfig{Rate: latencyRate, Size: echoSize, Count: latencyPerOp, Timeout: time.Second}
			var p50, p99 time.Duration
			var lost uint64
			b.SetBytes(latencyPerOp * echoSize)
			for b.Loop() {
				res, err := echo.Probe(context.Background(), c, cfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				if res.Corrupt != 0 {
					b.Fatalf("%d corrupt replies", res.Corrupt)
				}
				p50 += res.RTTP50
				p99 += res.RTTP99
				lost += res.Lost
			}
			n := time.Duration(b.N)
			b.ReportMetric(float64(p50/n)/float64(time.Microsecond), "p50-µs")
			b.ReportMetric(float64(p99/n)/float64(time.Microsecond), "p99-µs")
			b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
		})
	}
}
