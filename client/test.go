package client

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// resultWait bounds how long the runners wait for the reflector to finish
// its side of a test before asking for its result.
const resultWait = 5 * time.Second

// ThroughputOptions describe a throughput test (iperf3 flags in brackets).
type ThroughputOptions struct {
	Duration time.Duration // -t, whole seconds
	Streams  int           // -P; 0 lets the reflector choose
	Reverse  bool          // -R: the reflector sends
	UDP      bool          // -u
	// Bitrate is the target rate per stream in bits per second (-b); 0 is
	// iperf3's default (unlimited for TCP, 1 Mbit/s for UDP).
	Bitrate uint64
}

// ThroughputReport is the outcome of RunThroughput.
type ThroughputReport struct {
	Grant link.SessionGrant
	// Client is what the native iperf3 client measured.
	Client *iperf3proto.ClientResult
	// Server is the reflector's own view (get_test_result); nil when the
	// reflector did not answer it.
	Server *link.TestResult
}

// EchoOptions describe a UDP echo test.
type EchoOptions struct {
	Duration    time.Duration
	Rate        int // probes per second
	Size        int // datagram bytes, at least echo.HeaderLen
	Timestamped bool
	Spin        time.Duration // echo.ProbeConfig.Spin
}

// EchoReport is the outcome of RunEcho.
type EchoReport struct {
	Grant  link.SessionGrant
	Client *echo.ProbeResult
	Server *link.TestResult
}

// seconds rounds d up to whole seconds, at least one.
func seconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}

// grantAddr is where a direct_ephemeral grant's port is reached: the
// control host at the granted port.
func grantAddr(host string, g *link.SessionGrant) (string, error) {
	if g.Mode != link.ModeDirectEphemeral {
		return "", fmt.Errorf("grant with unknown mode %q", g.Mode)
	}
	if g.Port <= 0 || g.Port > 65535 {
		return "", fmt.Errorf("grant with invalid port %d", g.Port)
	}
	return net.JoinHostPort(host, strconv.Itoa(g.Port)), nil
}

// RunThroughput asks the reflector for a throughput session and runs it
// with the native iperf3 client against host (the reflector's address
// without port), calling progress once a second. A refusal is a
// *DeniedError. The client runs the granted duration and stream count. A
// tunneled grant runs through the control port (Tunnel); UDP blocks are
// then sized to fit the tunnel's datagrams.
func (c *Client) RunThroughput(ctx context.Context, host string, o ThroughputOptions, progress func(iperf3proto.Interval)) (*ThroughputReport, error) {
	proto := link.ProtocolTCP
	if o.UDP {
		proto = link.ProtocolUDP
	}
	p := link.TestParams{DurationSec: seconds(o.Duration), Protocol: &proto, Reverse: &o.Reverse}
	if o.Streams > 0 {
		p.Streams = &o.Streams
	}
	if o.Bitrate > 0 {
		b := int64(o.Bitrate)
		p.BitrateBps = &b
	}
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: p})
	if err != nil {
		return nil, err
	}
	rep := &ThroughputReport{Grant: *g}
	var d iperf3proto.Dialer
	var addr string
	blockLen := 0
	if g.Mode == link.ModeTunneled {
		t, err := c.Tunnel(g)
		if err != nil {
			_ = c.CloseSession(g.TestID)
			return rep, err
		}
		if o.UDP {
			// Attach the QUIC session first: a UDP port that does not
			// answer fails here, and the datagram size is known.
			if _, err := t.Session(ctx); err != nil {
				_ = c.CloseSession(g.TestID)
				return rep, err
			}
			blockLen = t.MaxUDPPayload()
		}
		defer t.Close()
		d, addr = t, "tunnel "+t.Addr()
	} else {
		if addr, err = grantAddr(host, g); err != nil {
			_ = c.CloseSession(g.TestID)
			return rep, err
		}
		d = &iperf3proto.NetDialer{Address: addr}
	}
	cfg := iperf3proto.ClientConfig{
		BlockLen: blockLen,
		UDP:      o.UDP, Duration: time.Duration(p.DurationSec) * time.Second,
		Parallel: max(o.Streams, 1), Reverse: o.Reverse, Bandwidth: o.Bitrate,
	}
	if g.DurationSec > 0 {
		cfg.Duration = time.Duration(g.DurationSec) * time.Second
	}
	if g.Streams > 0 {
		cfg.Parallel = g.Streams
	}
	rep.Client, err = iperf3proto.RunClient(ctx, d, cfg, progress)
	if err != nil {
		// Say why when the reflector ended the test (quota, deadline).
		rep.Server = c.finalResult(ctx, g.TestID)
		if rep.Server == nil || rep.Server.State == link.StateRunning {
			_ = c.CloseSession(g.TestID)
		}
		if rep.Server != nil && rep.Server.EndReason != "" {
			return rep, fmt.Errorf("iperf3 test on %s: %w (the reflector's end reason: %s)", addr, err, rep.Server.EndReason)
		}
		return rep, fmt.Errorf("iperf3 test on %s: %w", addr, err)
	}
	rep.Server = c.finalResult(ctx, g.TestID)
	return rep, nil
}

// RunEcho asks the reflector for a udp_echo session, probes it, closes
// the session and fetches the reflector's counters.
func (c *Client) RunEcho(ctx context.Context, host string, o EchoOptions, progress func(echo.ProbeInterval)) (*EchoReport, error) {
	p := link.TestParams{DurationSec: seconds(o.Duration)}
	if o.Timestamped {
		p.Timestamped = &o.Timestamped
	}
	g, err := c.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho, Params: p})
	if err != nil {
		return nil, err
	}
	rep := &EchoReport{Grant: *g}
	conn, addr, err := c.echoConn(ctx, host, g)
	if err != nil {
		_ = c.CloseSession(g.TestID)
		return rep, err
	}
	defer conn.Close()
	dur := time.Duration(p.DurationSec) * time.Second
	if g.DurationSec > 0 {
		dur = time.Duration(g.DurationSec) * time.Second
	}
	size := o.Size
	if f, ok := conn.(*tunnelFlow); ok && size > f.max {
		size = f.max
	}
	rep.Client, err = echo.Probe(ctx, conn, echo.ProbeConfig{
		Rate: o.Rate, Size: size, Duration: dur, Timestamped: o.Timestamped, Spin: o.Spin,
	}, progress)
	// The probe has run its duration: end the session now rather than at
	// its deadline.
	closeErr := c.CloseSession(g.TestID)
	if err != nil {
		return rep, fmt.Errorf("echo probe %s: %w", addr, err)
	}
	if closeErr != nil {
		return rep, fmt.Errorf("close echo session: %w", closeErr)
	}
	rep.Server = c.finalResult(ctx, g.TestID)
	return rep, nil
}

// tunnelFlow is the echo flow of a tunneled udp_echo test; closing it
// closes its QUIC session.
type tunnelFlow struct {
	net.Conn
	t   *Tunnel
	max int // the largest datagram the flow carries
}

func (f *tunnelFlow) Close() error {
	_ = f.Conn.Close()
	return f.t.Close()
}

// echoConn opens the datagram connection of an echo grant: a UDP socket
// to the granted port, or flow 0 of the tunnel's QUIC session. addr names
// it for errors.
func (c *Client) echoConn(ctx context.Context, host string, g *link.SessionGrant) (net.Conn, string, error) {
	if g.Mode == link.ModeTunneled {
		t, err := c.Tunnel(g)
		if err != nil {
			return nil, "", err
		}
		q, err := t.Session(ctx)
		if err != nil {
			return nil, "", err
		}
		return &tunnelFlow{Conn: q.Flow(0), t: t, max: t.MaxUDPPayload()}, "tunnel " + t.Addr(), nil
	}
	addr, err := grantAddr(host, g)
	if err != nil {
		return nil, "", err
	}
	conn, err := echo.DialUDP(ctx, addr)
	if err != nil {
		return nil, "", err
	}
	return conn, addr, nil
}

// finalResult asks for the reflector's result until the test is no longer
// running there (bounded by resultWait); nil when it does not answer.
func (c *Client) finalResult(ctx context.Context, testID string) *link.TestResult {
	deadline := time.Now().Add(resultWait)
	wait := 20 * time.Millisecond
	for {
		r, err := c.TestResult(testID)
		if err != nil {
			return nil
		}
		if r.State != link.StateRunning || time.Now().After(deadline) {
			return r
		}
		select {
		case <-ctx.Done():
			return r
		case <-time.After(wait):
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
}
