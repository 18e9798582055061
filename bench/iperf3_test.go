package bench

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpaccept"
	"github.com/packetparamedic/reflector/iperf3proto"
)

const (
	// iperf3BenchBytes is what one benchmark op moves (the client's -n), so
	// ns/op is the time of a fixed transfer, handshake and results included.
	iperf3BenchBytes = 64 << 20
	// iperf3BenchUDPBytes is the UDP op's transfer. Larger than the TCP
	// one: at 30 Gbit/s 64 MiB leave in about 15 ms, and a server that
	// handles TEST_END before its receiver thread first ran (a loaded
	// machine) counts nothing, as stock iperf3 does with what is still
	// queued at TEST_END; 512 MiB keep that tail a small fraction.
	iperf3BenchUDPBytes = 512 << 20
	// iperf3BenchUDPLen is the UDP payload size (-l), as in bench-compare.
	iperf3BenchUDPLen = 1400
	// iperf3OpTimeout bounds one op; 512 MiB take well under a second on
	// loopback even on a loaded machine.
	iperf3OpTimeout = 30 * time.Second
)

// BenchmarkTCPReceive: our client sends, our server receives (splice to
// /dev/null on Linux).
func BenchmarkTCPReceive(b *testing.B) {
	benchIperf3(b, iperf3proto.ClientConfig{Bytes: iperf3BenchBytes}, nil)
}

// BenchmarkTCPSend: our server sends (-R), our client receives.
func BenchmarkTCPSend(b *testing.B) {
	benchIperf3(b, iperf3proto.ClientConfig{Bytes: iperf3BenchBytes, Reverse: true}, nil)
}

// BenchmarkUDPReceive: our client sends UDP unpaced (-b 0, -l 1400), our
// server receives; the receiver's throughput and loss are reported.
func BenchmarkUDPReceive(b *testing.B) {
	benchIperf3(b, iperf3proto.ClientConfig{UDP: true, Bytes: iperf3BenchUDPBytes, BlockLen: iperf3BenchUDPLen}, udpAcceptor)
}

// udpAcceptor opens the UDP side of an iperf3 port (the same address as
// its TCP listener) for the benchmark's lifetime.
func udpAcceptor(tb testing.TB, addr string) iperf3proto.UDPAcceptor {
	tb.Helper()
	a, err := udpaccept.NewAcceptor(context.Background(), addr, nil)
	if err != nil {
		tb.Fatalf("udp acceptor on %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = a.Close() })
	return a
}

// benchIperf3 runs one test per op: our server serves exactly one test
// (ServeOne) while our client runs it, and the op ends when both are done,
// so the server's setup and teardown are part of the op. It reports the
// receiver's throughput (Gbit/s) and, for UDP, its loss.
func benchIperf3(b *testing.B, cfg iperf3proto.ClientConfig, newUDP func(testing.TB, string) iperf3proto.UDPAcceptor) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	var udp iperf3proto.UDPAcceptor // nil for TCP tests, which never use it
	if newUDP != nil {
		udp = newUDP(b, ln.Addr().String())
	}
	srv := iperf3proto.NewServer(iperf3proto.ServerConfig{})
	d := &iperf3proto.NetDialer{Address: ln.Addr().String()}
	b.SetBytes(cfg.Bytes)
	b.ReportAllocs()
	var received, packets, lost int64
	var seconds float64
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), iperf3OpTimeout)
		served := make(chan error, 1)
		go func() {
			res, err := srv.ServeOne(ctx, ln, udp)
			if err == nil && res.Err != nil {
				err = fmt.Errorf("test ended %s: %w", res.EndReason, res.Err)
			}
			served <- err
		}()
		res, err := iperf3proto.RunClient(ctx, d, cfg, nil)
		serr := <-served
		cancel()
		if err != nil {
			b.Fatalf("RunClient: %v", err)
		}
		if serr != nil {
			b.Fatalf("ServeOne: %v", serr)
		}
		dir := res.Upload
		if cfg.Reverse {
			dir = res.Download
		}
		if dir == nil || dir.ReceivedBytes <= 0 || dir.ReceiverSeconds <= 0 {
			b.Fatalf("no receiver result: %+v", dir)
		}
		if dir.ReceivedBytes > dir.SentBytes {
			b.Fatalf("receiver counted %d bytes, more than the %d sent", dir.ReceivedBytes, dir.SentBytes)
		}
		received += dir.ReceivedBytes
		seconds += dir.ReceiverSeconds
		packets += dir.Packets
		lost += dir.Lost
	}
	b.ReportMetric(float64(received)*8/seconds/1e9, "Gbit/s")
	if cfg.UDP && packets > 0 {
		b.ReportMetric(100*float64(lost)/float64(packets), "loss%")
	}
}
