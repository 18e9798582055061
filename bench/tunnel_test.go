package bench

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
)

// The tunnel benchmarks run the whole reflector (control plane, session,
// in-process iperf3 server) twice in one process, once in direct_ephemeral
// and once in tunneled mode, and drive both with the Go client, so the
// tunneled/direct ratio comes from the same run on the same machine:
//
//	go test ./bench -run '^$' -bench 'Tunnel' -benchtime 1x
//
// Client and server share the machine's cores, as on a two-core loopback.

// tunnelBenchSeconds is each throughput test's duration.
const tunnelBenchSeconds = 3

// benchReflector starts a reflector in mode with one authorized client.
func benchReflector(b *testing.B, mode string) *client.Client {
	b.Helper()
	h := servertest.Start(b, func(c *config.Config) {
		c.Network.Mode = mode
		base := 20000 + rand.IntN(12000) // below the ephemeral range
		c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd = base, base+9
		c.Quotas.CooldownSec = 0
		c.Quotas.MaxTestsPerHourPerPeer = 1000
		c.Quotas.MaxBytesPerDayPerPeer = 1 << 50
		c.Iperf3.MaxStreams = 8
	}, server.Options{NewSessions: session.NewSessions})
	key := servertest.NewKey(b)
	h.Authorize(key)
	c := h.Dial(key)
	c.Timeout = 30 * time.Second
	if _, err := c.Hello(); err != nil {
		b.Fatal(err)
	}
	return c
}

// uploadBps runs one upload test and returns what the reflector received.
func uploadBps(b *testing.B, c *client.Client, streams int) float64 {
	b.Helper()
	rep, err := c.RunThroughput(context.Background(), "127.0.0.1", client.ThroughputOptions{
		Duration: tunnelBenchSeconds * time.Second, Streams: streams,
	}, nil)
	if err != nil {
		b.Fatalf("throughput (mode %s): %v", rep.Grant.Mode, err)
	}
	return rep.Client.Upload.ReceiverBitsPerSecond()
}

// BenchmarkTunnelTCPRatio reports direct and tunneled TCP upload
// throughput and their ratio for -P 1 and -P 4.
func BenchmarkTunnelTCPRatio(b *testing.B) {
	direct := benchReflector(b, config.ModeDirectEphemeral)
	tunneled := benchReflector(b, config.ModeTunneled)
	for _, streams := range []int{1, 4} {
		b.Run("P"+strconv.Itoa(streams), func(b *testing.B) {
			var d, t float64
			for range b.N {
				d += uploadBps(b, direct, streams)
				t += uploadBps(b, tunneled, streams)
			}
			n := float64(b.N)
			b.ReportMetric(d/n/1e6, "direct_Mbit/s")
			b.ReportMetric(t/n/1e6, "tunneled_Mbit/s")
			b.ReportMetric(t/d, "ratio")
		})
	}
}

// BenchmarkTunnelEchoRTT reports the udp_echo RTT percentiles direct and
// through the QUIC tunnel (1,000 timestamped 64-byte probes a second).
func BenchmarkTunnelEchoRTT(b *testing.B) {
	for _, mode := range []string{config.ModeDirectEphemeral, config.ModeTunneled} {
		b.Run(mode, func(b *testing.B) {
			c := benchReflector(b, mode)
			var p50, p99 time.Duration
			var lost, sent uint64
			for range b.N {
				rep, err := c.RunEcho(context.Background(), "127.0.0.1", client.EchoOptions{
					Duration: 2 * time.Second, Rate: 1000, Size: 64, Timestamped: true,
				}, nil)
				if err != nil {
					b.Fatalf("echo (mode %s): %v", mode, err)
				}
				p50 += rep.Client.RTTP50
				p99 += rep.Client.RTTP99
				sent += rep.Client.Sent
				lost += rep.Client.Lost
			}
			n := time.Duration(b.N)
			b.ReportMetric(float64(p50/n)/1e3, "p50_us")
			b.ReportMetric(float64(p99/n)/1e3, "p99_us")
			b.ReportMetric(float64(lost)/float64(max(sent, 1))*100, "loss_%")
		})
	}
}
