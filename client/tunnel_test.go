package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// tunneledClient starts a tunneled reflector and returns an authorized
// client that said hello.
func tunneledClient(t *testing.T) *client.Client {
	t.Helper()
	h := servertest.Start(t, func(c *config.Config) {
		c.Network.Mode = config.ModeTunneled
		c.Quotas.CooldownSec = 0
		c.Quotas.MaxTestsPerHourPerPeer = 100
		c.Quotas.MaxBytesPerDayPerPeer = 1 << 50
	}, server.Options{NewSessions: session.NewSessions})
	key := servertest.NewKey(t)
	h.Authorize(key)
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTunnelForwardNativeClient: a tunneled grant's Tunnel.Forward carries
// an iperf3 client pointed at the local listener (TCP -P 2 --bidir, then
// UDP with a 32 KiB length, which the tunnel splits into fragments), and
// the reflector counts exactly the bytes its iperf3 server received.
func TestTunnelForwardNativeClient(t *testing.T) {
	c := tunneledClient(t)
	cases := []struct {
		name string
		req  link.TestParams
		cfg  iperf3proto.ClientConfig
	}{
		{"tcp-bidir", link.TestParams{DurationSec: 1, Streams: ptr(2), Bidir: ptr(true)},
			iperf3proto.ClientConfig{Duration: time.Second, Parallel: 2, Bidir: true}},
		{"udp-32k", link.TestParams{DurationSec: 1, Protocol: ptr(link.ProtocolUDP), Streams: ptr(1)},
			iperf3proto.ClientConfig{UDP: true, Duration: time.Second, BlockLen: 32 << 10, Bandwidth: 50_000_000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: tc.req})
			if err != nil {
				t.Fatal(err)
			}
			tun, err := c.Tunnel(g)
			if err != nil {
				t.Fatal(err)
			}
			defer tun.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var uc *net.UDPConn
			if tc.cfg.UDP {
				if uc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); tun.Forward(ctx, ln, uc) }()
			defer func() { cancel(); <-done }()
			res, err := iperf3proto.RunClient(context.Background(), &iperf3proto.NetDialer{Address: ln.Addr().String()}, tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var r *link.TestResult
			testutil.Eventually(t, 15*time.Second, "the session ends", func() bool {
				r, err = c.TestResult(g.TestID)
				return err != nil || r.State != link.StateRunning
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: upload received %d bytes by the reflector's count, %d by iperf3's", tc.name, r.BytesReceived, res.Upload.ReceivedBytes)
			if r.State != link.StateCompleted || res.Upload.ReceivedBytes <= 0 || r.BytesReceived != res.Upload.ReceivedBytes {
				t.Fatalf("result %+v, upload %+v: want completed, the same bytes received", r, res.Upload)
			}
			if tc.cfg.UDP {
				if st := tun.DatagramStats(); st.Fragmented == 0 || res.Upload.ReceivedBytes%(32<<10) != 0 {
					t.Fatalf("UDP: stats %+v, received %d bytes: want fragmented whole 32 KiB datagrams", st, res.Upload.ReceivedBytes)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
