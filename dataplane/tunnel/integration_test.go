package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/internal/testutil"
	"github.com/packetparamedic/reflector/iperf3proto"
)

func TestEchoProbeOverFlow(t *testing.T) {
	cli, srv := attached(t)
	e := NewFlowEcho(srv.Flow(0), echo.Config{Timestamped: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- e.Serve(ctx) }()
	res, err := echo.Probe(ctx, cli.Flow(0), echo.ProbeConfig{Rate: 1000, Size: 200, Count: 500, Timestamped: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 500 || res.Received == 0 || res.Corrupt != 0 || res.Duplicates != 0 || res.ServerTime <= 0 {
		t.Fatalf("probe over a QUIC flow: %+v", res)
	}
	if res.Lost > res.Sent/10 {
		t.Fatalf("%d of %d lost on loopback", res.Lost, res.Sent)
	}
	st := e.Stats()
	if st.Echoed < res.Received || st.Echoed > res.Sent || st.Received != st.Echoed || st.Bytes != st.Echoed*200 {
		t.Fatalf("engine stats %+v vs probe %+v", st, res)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Logf("echo over QUIC flow: %d/%d, RTT p50 %v p99 %v", res.Received, res.Sent, res.RTTP50, res.RTTP99)
}

func TestFlowEchoClamp(t *testing.T) {
	cli, srv := attached(t)
	e := NewFlowEcho(srv.Flow(0), echo.Config{MaxPPS: 100})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = e.Serve(ctx) }()
	res, err := echo.Probe(ctx, cli.Flow(0), echo.ProbeConfig{Rate: 2000, Size: 64, Count: 1000, Timeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "engine accounts for every datagram", func() bool {
		st := e.Stats()
		return st.Received > 0 && st.Received == st.Echoed+st.DroppedRate+st.SendErrors
	})
	st := e.Stats()
	// 0.5 s at 2000 pps against a 100 pps clamp with a 10-datagram burst.
	if st.DroppedRate == 0 || st.Echoed > 200 || res.Received != st.Echoed {
		t.Fatalf("clamp: engine %+v, probe received %d", st, res.Received)
	}
}

// tunnelServer is the server side of a tunneled test as the session
// manager wires it: TLS connections to the control port are handed to a
// ConnListener, the QUIC session to a FlowAcceptor, and one in-process
// iperf3 server serves both.
type tunnelServer struct {
	tlsAddr, quicAddr string
	result            chan *iperf3proto.TestResult
	flows             *FlowAcceptor
}

func startTunnelServer(t *testing.T, srvConf *tls.Config) *tunnelServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := NewConnListener(tcpLn.Addr())
	flows := NewFlowAcceptor()
	var wg sync.WaitGroup
	// The pp-link listener's part: after the (here omitted) tunnel_attach
	// exchange each TLS connection is handed off until the engine closes it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := tcpLn.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(NewBatchConn(raw), srvConf)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.HandshakeContext(ctx); err != nil {
					_ = tc.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				_ = conns.Handoff(ctx, BatchTLS(tc))
			}()
		}
	}()
	serve := func(s *QUICSession) {
		if err := flows.Attach(s); err != nil {
			return
		}
		select {
		case <-s.Context().Done():
		case <-ctx.Done():
		}
	}
	qln, err := ListenQUIC(ctx, "127.0.0.1:0", srvConf, func(context.Context, *x509.Certificate, net.Addr, []byte) ([]byte, func(*QUICSession), error) {
		return []byte("attached"), serve, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tunnelServer{tlsAddr: tcpLn.Addr().String(), quicAddr: qln.Addr().String(), result: make(chan *iperf3proto.TestResult, 1), flows: flows}
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv := iperf3proto.NewServer(iperf3proto.ServerConfig{AllowedSource: netip.MustParseAddr("127.0.0.1"), TestTimeout: 30 * time.Second})
		res, err := srv.ServeOne(ctx, conns, flows)
		if err != nil {
			res = &iperf3proto.TestResult{Err: err}
		}
		ts.result <- res
	}()
	t.Cleanup(func() {
		cancel()
		_ = tcpLn.Close()
		_ = conns.Close()
		_ = flows.Close()
		_ = qln.Close()
		wg.Wait()
	})
	return ts
}

// tunnelDialer is the client side: each TCP connection is a fresh TLS
// connection, UDP streams are flows of one QUIC session opened on first
// use.
type tunnelDialer struct {
	ts      *tunnelServer
	cliConf *tls.Config

	mu sync.Mutex
	s  *QUICSession
}

func (d *tunnelDialer) DialTCP(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", d.ts.tlsAddr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(NewBatchConn(raw), d.cliConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return BatchTLS(tc), nil
}

func (d *tunnelDialer) DialUDP(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.s == nil {
		s, err := DialQUIC(ctx, d.ts.quicAddr, d.cliConf)
		if err != nil {
			return nil, err
		}
		if _, err := s.Attach(ctx, []byte("attach")); err != nil {
			_ = s.Close()
			return nil, err
		}
		d.s = s
	}
	return d.s.OpenFlow()
}

func (d *tunnelDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.s != nil {
		_ = d.s.Close()
	}
}

func TestIperf3ThroughTunnel(t *testing.T) {
	// Its own servers on :0, beside the tests that only wait; the cases
	// stay sequential (the UDP ones check loss).
	t.Parallel()
	const sec = time.Second
	cases := []struct {
		name string
		cfg  iperf3proto.ClientConfig
	}{
		{"tcp_P2", iperf3proto.ClientConfig{Duration: sec, Parallel: 2}},
		{"tcp_R", iperf3proto.ClientConfig{Duration: sec, Reverse: true}},
		{"udp_P2_b20M", iperf3proto.ClientConfig{Duration: sec, UDP: true, Parallel: 2, Bandwidth: 20e6, BlockLen: 1100}},
		{"udp_R_b20M", iperf3proto.ClientConfig{Duration: sec, UDP: true, Reverse: true, Bandwidth: 20e6, BlockLen: 1100}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srvConf, cliConf := testTLS(t)
			ts := startTunnelServer(t, srvConf)
			d := &tunnelDialer{ts: ts, cliConf: cliConf}
			defer d.close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := iperf3proto.RunClient(ctx, d, tc.cfg, nil)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			var srvRes *iperf3proto.TestResult
			select {
			case srvRes = <-ts.result:
			case <-ctx.Done():
				t.Fatal("server test did not end")
			}
			if srvRes.Err != nil {
				t.Fatalf("server: %v", srvRes.Err)
			}
			dir := res.Upload
			if tc.cfg.Reverse {
				dir = res.Download
			}
			if dir == nil || dir.ReceivedBytes == 0 || dir.SentBytes == 0 {
				t.Fatalf("no traffic: %+v", dir)
			}
			if srvRes.Streams != max(tc.cfg.Parallel, 1) {
				t.Fatalf("server saw %d streams", srvRes.Streams)
			}
			msg := fmt.Sprintf("%s: sent %d received %d bytes, %.1f Mbit/s", tc.name, dir.SentBytes, dir.ReceivedBytes, dir.ReceiverBitsPerSecond()/1e6)
			if tc.cfg.UDP {
				msg += fmt.Sprintf(", %d packets, %d lost, jitter %.3f ms", dir.Packets, dir.Lost, dir.Jitter*1e3)
				if s := ts.flows.Session(); s != nil {
					msg += fmt.Sprintf(", server tunnel drops %+v", s.Stats())
				}
				if dir.Packets == 0 || dir.Lost > dir.Packets/5 {
					t.Fatalf("UDP through the tunnel: %s", msg)
				}
			}
			t.Log(msg)
		})
	}
}
