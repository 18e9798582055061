package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/dataplane/sockopt"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// tunnelUsage is the synopsis of `reflector tunnel`.
const tunnelUsage = `Usage:
  reflector tunnel --peer HOST:PORT [--identity FILE] [--expect-id ID] [--listen 127.0.0.1:5201] [-t 10] [-P 4] [-R] [--bidir] [-u] [-b RATE]

Asks the reflector for a throughput session with these parameters and
listens on --listen (TCP, and UDP with -u) so that a stock iperf3 client
runs the test through the reflector's control port: every local TCP
connection is carried by a fresh mutual-TLS connection to the control
port, every local UDP stream by datagrams of one QUIC session on the same
port number over UDP (datagrams larger than one QUIC datagram are split
and reassembled, so iperf3's default -l works). When the reflector grants
direct mode instead, the local streams are forwarded to the granted port.
A local connection that sends nothing is never forwarded. It prints the
iperf3 command to run and exits when the session ends.
`

// tunnelPoll is how often the session's state is checked.
const tunnelPoll = 500 * time.Millisecond

// tunnelOptions are the parsed flags of `reflector tunnel`.
type tunnelOptions struct {
	peer, keyPath, listen string
	expect                identity.EndpointID
	seconds, streams      int
	reverse, bidir, udp   bool
	bitrate               uint64
}

func parseTunnelFlags(e *env, args []string) (*tunnelOptions, error) {
	fs := pflag.NewFlagSet("tunnel", pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprint(e.stdout, tunnelUsage, "\nFlags:\n")
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(e.stderr)
	}
	o := &tunnelOptions{}
	fs.StringVar(&o.peer, "peer", "", "reflector address HOST:PORT (required)")
	fs.StringVar(&o.keyPath, "identity", "", "client key file, created if missing (default $XDG_CONFIG_HOME/reflector/client.ed25519)")
	expect := fs.String("expect-id", "", "refuse a reflector whose Endpoint ID differs")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:5201", "local address for the iperf3 client (TCP, and UDP with -u)")
	fs.IntVarP(&o.seconds, "time", "t", 10, "test duration in seconds")
	fs.IntVarP(&o.streams, "parallel", "P", 1, "parallel streams")
	fs.BoolVarP(&o.reverse, "reverse", "R", false, "reverse: the reflector sends (download)")
	fs.BoolVar(&o.bidir, "bidir", false, "both directions at once")
	fs.BoolVarP(&o.udp, "udp", "u", false, "UDP instead of TCP")
	b := fs.StringP("bitrate", "b", "", "target bitrate per stream (iperf3 -b), bits/s with optional K, M, G suffix")
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if o.peer == "" {
		return nil, usagef("tunnel: --peer is required")
	}
	if _, _, err := net.SplitHostPort(o.peer); err != nil {
		return nil, usagef("tunnel: --peer %q: want HOST:PORT: %v", o.peer, err)
	}
	if _, err := netip.ParseAddrPort(o.listen); err != nil {
		return nil, usagef("tunnel: --listen %q: want IP:PORT: %v", o.listen, err)
	}
	if o.seconds <= 0 || o.streams <= 0 {
		return nil, usagef("tunnel: -t and -P must be positive")
	}
	if o.reverse && o.bidir {
		return nil, usagef("tunnel: -R and --bidir are exclusive")
	}
	if *expect != "" {
		id, err := identity.ParseEndpointID(*expect)
		if err != nil {
			return nil, usagef("tunnel: --expect-id: %v", err)
		}
		o.expect = id
	}
	if *b != "" {
		rate, err := parseBitrate(*b)
		if err != nil {
			return nil, usagef("tunnel: -b %q: %v", *b, err)
		}
		o.bitrate = rate
	}
	return o, nil
}

func runTunnel(e *env, args []string) error {
	o, err := parseTunnelFlags(e, args)
	if err != nil {
		return err
	}
	key, err := loadClientKey(e, o.keyPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, client.HandshakeTimeout)
	c, err := client.Dial(dctx, o.peer, key, o.expect)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Hello(); err != nil {
		return fmt.Errorf("hello: %w", err)
	}

	// Bind the local side before asking, so a busy port costs no session.
	var lc net.ListenConfig
	tln, err := lc.Listen(ctx, "tcp", o.listen)
	if err != nil {
		return fmt.Errorf("tunnel: listen %s: %w", o.listen, err)
	}
	defer tln.Close()
	var uconn *net.UDPConn
	if o.udp {
		// The same port as TCP, as iperf3 expects (--listen may say :0).
		uaddr := tln.Addr().String()
		pc, err := lc.ListenPacket(ctx, "udp", uaddr)
		if err != nil {
			return fmt.Errorf("tunnel: listen %s/udp: %w", uaddr, err)
		}
		uconn = pc.(*net.UDPConn)
		defer uconn.Close()
	}

	g, err := c.RequestSession(o.request())
	if err != nil {
		var d *client.DeniedError
		if errors.As(err, &d) {
			return &exitError{code: exitDenied, err: err}
		}
		return err
	}
	dialer, closeDialer, err := o.dialer(ctx, c, g)
	if err != nil {
		_ = c.CloseSession(g.TestID)
		return err
	}
	defer closeDialer()

	fmt.Fprintf(e.stdout, "%s test %s through %s (%s), %d s, %d stream(s); listening on %s\n",
		modeTitle(g.Mode), g.TestID, o.peer, c.ServerID(), g.DurationSec, g.Streams, tln.Addr())
	fmt.Fprintf(e.stdout, "Run: %s\n", o.iperf3Command(tln.Addr().(*net.TCPAddr), g))

	fw := &client.Forwarder{Dialer: dialer, OnError: func(err error) { fmt.Fprintf(e.stderr, "tunnel: %v\n", err) }}
	fctx, fcancel := context.WithCancel(ctx)
	fwDone := make(chan struct{})
	go func() { defer close(fwDone); fw.Serve(fctx, tln, uconn) }()
	res, werr := waitSession(ctx, c, g.TestID)
	sockDrops := localDrops(uconn) // before the forwarder closes the socket
	fcancel()
	<-fwDone
	if werr != nil {
		// Interrupted (or the control connection failed): end the session.
		_ = c.CloseSession(g.TestID)
		return werr
	}
	fmt.Fprintf(e.stdout, "Session %s ended: %s (%s), reflector sent %d and received %d bytes in %.1f s\n",
		g.TestID, res.State, res.EndReason, res.BytesSent, res.BytesReceived, res.DurationSec)
	if t, ok := dialer.(*client.Tunnel); ok && o.udp {
		st := t.DatagramStats()
		fmt.Fprintf(e.stdout, "Tunnel datagrams on this end: %d sent and %d received in fragments, %d incomplete, %d dropped on full queues\n",
			st.Fragmented, st.Reassembled, st.Incomplete, st.Dropped)
		if sockDrops > 0 {
			fmt.Fprintf(e.stdout, "%d datagrams of the local iperf3 client were dropped by this machine's full UDP socket before the tunnel (iperf3 counts them as lost): try a lower -b\n", sockDrops)
		}
	}
	if st := fw.Stats(); st.UDPWriteErrors > 0 {
		fmt.Fprintf(e.stderr, "%d UDP datagrams could not be forwarded\n", st.UDPWriteErrors)
	}
	if res.State != link.StateCompleted {
		return fmt.Errorf("tunnel: the test did not complete: %s", res.EndReason)
	}
	return nil
}

// localDrops returns the datagrams the kernel dropped on the local UDP
// socket (0 without one, or where it cannot tell).
func localDrops(uc *net.UDPConn) uint64 {
	if uc == nil {
		return 0
	}
	n, _ := sockopt.Drops(uc)
	return n
}

// modeTitle names the grant's mode in the banner.
func modeTitle(mode string) string {
	if mode == link.ModeTunneled {
		return "Tunneled"
	}
	return "Direct (forwarded)"
}

// dialer returns what carries the local streams for grant g: the tunnel
// of a tunneled grant (its QUIC session attached at once for UDP, so a
// blocked UDP port is reported before iperf3 runs), or, when the
// reflector granted direct mode, plain connections to the granted port on
// the peer's host. The returned function releases it.
func (o *tunnelOptions) dialer(ctx context.Context, c *client.Client, g *link.SessionGrant) (iperf3proto.Dialer, func(), error) {
	if g.Mode == link.ModeDirectEphemeral {
		if g.Port <= 0 || g.Port > 65535 {
			return nil, nil, fmt.Errorf("tunnel: direct grant with invalid port %d", g.Port)
		}
		host, _, _ := net.SplitHostPort(o.peer)
		return &iperf3proto.NetDialer{Address: net.JoinHostPort(host, strconv.Itoa(g.Port))}, func() {}, nil
	}
	t, err := c.Tunnel(g)
	if err != nil {
		return nil, nil, err
	}
	if o.udp {
		if _, err := t.Session(ctx); err != nil {
			_ = t.Close()
			return nil, nil, err
		}
	}
	return t, func() { _ = t.Close() }, nil
}

// request is the session_request of o.
func (o *tunnelOptions) request() link.SessionRequest {
	proto := link.ProtocolTCP
	if o.udp {
		proto = link.ProtocolUDP
	}
	p := link.TestParams{DurationSec: o.seconds, Protocol: &proto, Streams: &o.streams, Reverse: &o.reverse, Bidir: &o.bidir}
	if o.bitrate > 0 {
		b := int64(o.bitrate)
		p.BitrateBps = &b
	}
	return link.SessionRequest{TestType: link.TestThroughput, Params: p}
}

// iperf3Command is the stock client's command line for the granted test.
func (o *tunnelOptions) iperf3Command(local *net.TCPAddr, g *link.SessionGrant) string {
	args := []string{"iperf3", "-c", local.IP.String(), "-p", strconv.Itoa(local.Port), "-t", strconv.Itoa(g.DurationSec)}
	if g.Streams > 1 {
		args = append(args, "-P", strconv.Itoa(g.Streams))
	}
	if o.reverse {
		args = append(args, "-R")
	}
	if o.bidir {
		args = append(args, "--bidir")
	}
	if o.udp {
		args = append(args, "-u")
	}
	if o.bitrate > 0 {
		args = append(args, "-b", strconv.FormatUint(o.bitrate, 10))
	}
	return strings.Join(args, " ")
}

// waitSession polls the reflector until testID is no longer running.
func waitSession(ctx context.Context, c *client.Client, testID string) (*link.TestResult, error) {
	tick := time.NewTicker(tunnelPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tunnel: %w", ctx.Err())
		case <-tick.C:
		}
		r, err := c.TestResult(testID)
		if err != nil {
			return nil, fmt.Errorf("tunnel: ask for the test's state: %w", err)
		}
		if r.State != link.StateRunning {
			return r, nil
		}
	}
}
