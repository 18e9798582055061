package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/dataplane/echo"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// exitDenied is the exit code of `reflector test` when the reflector
// refused the session.
const exitDenied = 3

// testUsage is the synopsis of `reflector test`.
const testUsage = `Usage:
  reflector test --peer HOST:PORT [--identity FILE] [--expect-id ID] [--json] throughput [-t 10] [-P 4] [-R] [-u] [-b RATE]
  reflector test --peer HOST:PORT [--identity FILE] [--expect-id ID] [--json] udp-echo [-t 10] [--rate 100] [--size 64] [--timestamped] [--spin 0]

Runs a whole test against a reflector with this machine's client identity:
asks for a session, runs the native iperf3 client (throughput) or the echo
prober (udp-echo) on the granted port (a tunneled grant: through the
reflector's control port, TCP streams over TLS and UDP over QUIC on the
same port number), and prints a summary (one JSON document with --json). Progress lines go to stderr when it is a terminal.
A refused session exits with status 3 and says why and when to retry.
`

func runTest(e *env, args []string) error {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.SortFlags = false
	fs.SetInterspersed(false)
	fs.Usage = func() {
		fmt.Fprint(e.stdout, testUsage, "\nFlags:\n")
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(e.stderr)
	}
	peer := fs.String("peer", "", "reflector address HOST:PORT (required)")
	keyPath := fs.String("identity", "", "client key file, created if missing (default $XDG_CONFIG_HOME/reflector/client.ed25519)")
	expect := fs.String("expect-id", "", "refuse a reflector whose Endpoint ID differs")
	asJSON := fs.Bool("json", false, "print one JSON document instead of the summary")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *peer == "" {
		return usagef("test: --peer is required")
	}
	host, _, err := net.SplitHostPort(*peer)
	if err != nil {
		return usagef("test: --peer %q: want HOST:PORT: %v", *peer, err)
	}
	var want identity.EndpointID
	if *expect != "" {
		if want, err = identity.ParseEndpointID(*expect); err != nil {
			return usagef("test: --expect-id: %v", err)
		}
	}
	if fs.NArg() == 0 {
		return usagef("test: name the test: throughput or udp-echo")
	}
	kind, rest := fs.Arg(0), fs.Args()[1:]
	var tp client.ThroughputOptions
	var eo client.EchoOptions
	switch kind {
	case "throughput":
		if tp, err = throughputFlags(e, rest); err != nil {
			return err
		}
	case "udp-echo":
		if eo, err = echoFlags(e, rest); err != nil {
			return err
		}
	default:
		return usagef("test: unknown test %q (want throughput or udp-echo)", kind)
	}

	key, err := loadClientKey(e, *keyPath)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, client.HandshakeTimeout)
	c, err := client.Dial(dctx, *peer, key, want)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Hello(); err != nil {
		return fmt.Errorf("hello: %w", err)
	}

	out := &testOutput{e: e, json: *asJSON, progress: stderrIsTerminal(e)}
	out.doc.Reflector = *peer
	out.doc.ServerID = c.ServerID().String()
	out.doc.ClientID = idOf(key).String()
	if kind == "throughput" {
		out.doc.TestType = link.TestThroughput
		rep, err := c.RunThroughput(ctx, host, tp, out.throughputProgress)
		return out.throughput(rep, err)
	}
	out.doc.TestType = link.TestUDPEcho
	rep, err := c.RunEcho(ctx, host, eo, out.echoProgress)
	return out.echo(rep, err)
}

// stderrIsTerminal says whether progress lines should be shown.
func stderrIsTerminal(e *env) bool {
	f, ok := e.stderr.(*os.File)
	return ok && isTerminal(f)
}

// subFlags returns the flag set of a test kind; its --help goes to stdout.
func subFlags(e *env, kind string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("test "+kind, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: reflector test --peer HOST:PORT [...] %s [flags]\n\nFlags:\n", kind)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(e.stderr)
	}
	return fs
}

func throughputFlags(e *env, args []string) (client.ThroughputOptions, error) {
	fs := subFlags(e, "throughput")
	t := fs.IntP("time", "t", 10, "test duration in seconds")
	p := fs.IntP("parallel", "P", 4, "parallel streams")
	r := fs.BoolP("reverse", "R", false, "reverse: the reflector sends (download)")
	u := fs.BoolP("udp", "u", false, "UDP instead of TCP")
	b := fs.StringP("bitrate", "b", "", "target bitrate per stream, bits/s with optional K, M, G suffix (iperf3 -b)")
	if err := parse(fs, args); err != nil {
		return client.ThroughputOptions{}, err
	}
	if err := noArgs(fs); err != nil {
		return client.ThroughputOptions{}, err
	}
	if *t <= 0 || *p <= 0 {
		return client.ThroughputOptions{}, usagef("test throughput: -t and -P must be positive")
	}
	o := client.ThroughputOptions{Duration: time.Duration(*t) * time.Second, Streams: *p, Reverse: *r, UDP: *u}
	if *b != "" {
		rate, err := parseBitrate(*b)
		if err != nil {
			return o, usagef("test throughput: -b %q: %v", *b, err)
		}
		o.Bitrate = rate
	}
	return o, nil
}

// parseBitrate reads an iperf3-style rate: a number with an optional K, M,
// G or T suffix (powers of 1000), in bits per second.
func parseBitrate(s string) (uint64, error) {
	mult := 1.0
	num := s
	if n := len(s); n > 0 {
		switch strings.ToUpper(s[n-1:]) {
		case "K":
			mult, num = 1e3, s[:n-1]
		case "M":
			mult, num = 1e6, s[:n-1]
		case "G":
			mult, num = 1e9, s[:n-1]
		case "T":
			mult, num = 1e12, s[:n-1]
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*mult > 1e15 {
		return 0, errors.New("want a rate such as 100M, 1.5G or 250000")
	}
	return uint64(v * mult), nil
}

func echoFlags(e *env, args []string) (client.EchoOptions, error) {
	fs := subFlags(e, "udp-echo")
	t := fs.IntP("time", "t", 10, "test duration in seconds")
	rate := fs.Int("rate", 100, "probes per second")
	size := fs.Int("size", 64, fmt.Sprintf("datagram size in bytes (%d-%d)", echo.HeaderLen, echo.MaxProbeSize))
	ts := fs.Bool("timestamped", false, "ask the reflector to stamp its receive and send times (separates server time from network time)")
	spin := fs.Duration("spin", 0, fmt.Sprintf("after each probe, poll for its reply without sleeping for up to this long (at most %v; costs CPU, saves the wake-up latency of a sleeping thread)", echo.MaxProbeSpin))
	if err := parse(fs, args); err != nil {
		return client.EchoOptions{}, err
	}
	if err := noArgs(fs); err != nil {
		return client.EchoOptions{}, err
	}
	switch {
	case *t <= 0:
		return client.EchoOptions{}, usagef("test udp-echo: -t must be positive")
	case *rate <= 0 || *rate > echo.MaxProbeRate:
		return client.EchoOptions{}, usagef("test udp-echo: --rate must be 1-%d", echo.MaxProbeRate)
	case *size < echo.HeaderLen || *size > echo.MaxProbeSize:
		return client.EchoOptions{}, usagef("test udp-echo: --size must be %d-%d", echo.HeaderLen, echo.MaxProbeSize)
	case *spin < 0 || *spin > echo.MaxProbeSpin:
		return client.EchoOptions{}, usagef("test udp-echo: --spin must be 0-%v", echo.MaxProbeSpin)
	}
	return client.EchoOptions{Duration: time.Duration(*t) * time.Second, Rate: *rate, Size: *size, Timestamped: *ts, Spin: *spin}, nil
}

// testDoc is the --json document.
type testDoc struct {
	Reflector  string             `json:"reflector"`
	ServerID   string             `json:"server_id"`
	ClientID   string             `json:"client_id"`
	TestType   string             `json:"test_type"`
	Grant      *link.SessionGrant `json:"grant,omitempty"`
	Denied     *link.SessionDeny  `json:"denied,omitempty"`
	Error      string             `json:"error,omitempty"`
	Throughput *throughputJSON    `json:"throughput,omitempty"`
	Echo       *echoJSON          `json:"echo,omitempty"`
	Server     *link.TestResult   `json:"server,omitempty"`
}

// directionJSON is one direction of a throughput test.
type directionJSON struct {
	Streams         int     `json:"streams"`
	SentBytes       int64   `json:"sent_bytes"`
	ReceivedBytes   int64   `json:"received_bytes"`
	Seconds         float64 `json:"seconds"`
	BitsPerSecond   float64 `json:"bits_per_second"`
	Retransmits     *int64  `json:"retransmits,omitempty"`
	Packets         int64   `json:"packets,omitempty"`
	LostPackets     int64   `json:"lost_packets,omitempty"`
	OutOfOrder      int64   `json:"out_of_order,omitempty"`
	JitterMs        float64 `json:"jitter_ms,omitempty"`
	LostPercent     float64 `json:"lost_percent,omitempty"`
	ReceiverSeconds float64 `json:"receiver_seconds"`
}

type throughputJSON struct {
	Protocol string         `json:"protocol"`
	Seconds  float64        `json:"seconds"`
	Upload   *directionJSON `json:"upload,omitempty"`
	Download *directionJSON `json:"download,omitempty"`
}

// echoJSON is the prober's result; durations in milliseconds.
type echoJSON struct {
	Sent          uint64  `json:"sent"`
	Received      uint64  `json:"received"`
	Lost          uint64  `json:"lost"`
	LossPercent   float64 `json:"loss_percent"`
	Duplicates    uint64  `json:"duplicates"`
	Reordered     uint64  `json:"reordered"`
	Corrupt       uint64  `json:"corrupt"`
	RTTMinMs      float64 `json:"rtt_min_ms"`
	RTTAvgMs      float64 `json:"rtt_avg_ms"`
	RTTP50Ms      float64 `json:"rtt_p50_ms"`
	RTTP90Ms      float64 `json:"rtt_p90_ms"`
	RTTP99Ms      float64 `json:"rtt_p99_ms"`
	RTTMaxMs      float64 `json:"rtt_max_ms"`
	JitterMs      float64 `json:"jitter_rfc3550_ms"`
	ServerTimeMs  float64 `json:"server_time_ms,omitempty"`
	ElapsedSecond float64 `json:"elapsed_sec"`
}

// testOutput prints progress, the summary or the JSON document.
type testOutput struct {
	e        *env
	json     bool
	progress bool
	doc      testDoc
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// human renders bits per second like iperf3.
func human(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.2f Mbit/s", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.2f Kbit/s", bps/1e3)
	}
	return fmt.Sprintf("%.0f bit/s", bps)
}

func (o *testOutput) throughputProgress(iv iperf3proto.Interval) {
	if !o.progress {
		return
	}
	secs := (iv.End - iv.Start).Seconds()
	if secs <= 0 {
		return
	}
	line := fmt.Sprintf("[%5.2f-%5.2f s]", iv.Start.Seconds(), iv.End.Seconds())
	if iv.BytesSent > 0 {
		line += "  sent " + human(float64(iv.BytesSent)*8/secs)
	}
	if iv.BytesReceived > 0 {
		line += "  received " + human(float64(iv.BytesReceived)*8/secs)
	}
	if iv.Omitted {
		line += "  (omitted)"
	}
	fmt.Fprintln(o.e.stderr, line)
}

func (o *testOutput) echoProgress(iv echo.ProbeInterval) {
	if !o.progress {
		return
	}
	fmt.Fprintf(o.e.stderr, "[%5.2f-%5.2f s]  sent %d  received %d  rtt min/avg/max %.3f/%.3f/%.3f ms\n",
		iv.Start.Seconds(), iv.End.Seconds(), iv.Sent, iv.Received, ms(iv.RTTMin), ms(iv.RTTAvg), ms(iv.RTTMax))
}

// failure records a denial or error, prints it, and returns the error
// with its exit code.
func (o *testOutput) failure(err error) error {
	var d *client.DeniedError
	if errors.As(err, &d) {
		o.doc.Denied = &d.Deny
	}
	o.doc.Error = err.Error()
	if o.json {
		_ = o.writeJSON()
	}
	if d != nil {
		return &exitError{code: exitDenied, err: err}
	}
	return err
}

func (o *testOutput) writeJSON() error {
	enc := json.NewEncoder(o.e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&o.doc)
}

func direction(d *iperf3proto.DirectionResult, udp bool) *directionJSON {
	if d == nil {
		return nil
	}
	j := &directionJSON{
		Streams: d.Streams, SentBytes: d.SentBytes, ReceivedBytes: d.ReceivedBytes,
		Seconds: d.SenderSeconds, ReceiverSeconds: d.ReceiverSeconds, BitsPerSecond: d.ReceiverBitsPerSecond(),
	}
	if d.Retransmits >= 0 && !udp {
		r := d.Retransmits
		j.Retransmits = &r
	}
	if udp {
		j.Packets, j.LostPackets, j.OutOfOrder, j.JitterMs = d.Packets, d.Lost, d.OutOfOrder, d.Jitter*1000
		if d.Packets > 0 {
			j.LostPercent = float64(d.Lost) * 100 / float64(d.Packets)
		}
	}
	return j
}

func (o *testOutput) throughput(rep *client.ThroughputReport, err error) error {
	if rep != nil {
		o.doc.Grant = &rep.Grant
		o.doc.Server = rep.Server
	}
	if err != nil {
		return o.failure(err)
	}
	res := rep.Client
	udp := res.Params.UDP
	t := &throughputJSON{Protocol: "tcp", Seconds: res.Duration.Seconds(),
		Upload: direction(res.Upload, udp), Download: direction(res.Download, udp)}
	if udp {
		t.Protocol = "udp"
	}
	o.doc.Throughput = t
	if o.json {
		return o.writeJSON()
	}
	w := o.e.stdout
	fmt.Fprintf(w, "Reflector %s (%s), test %s on port %d, %s, %d stream(s), %.1f s\n",
		o.doc.Reflector, o.doc.ServerID, rep.Grant.TestID, rep.Grant.Port, t.Protocol, res.Params.Streams(), t.Seconds)
	if rep.Grant.Clamped {
		fmt.Fprintf(w, "The reflector lowered the request: %d s, %d stream(s)\n", rep.Grant.DurationSec, rep.Grant.Streams)
	}
	printDirection(w, "Upload  ", t.Upload)
	printDirection(w, "Download", t.Download)
	printServer(w, rep.Server)
	return nil
}

func printDirection(w io.Writer, name string, d *directionJSON) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "%s %s  (%d bytes received in %.2f s)", name, human(d.BitsPerSecond), d.ReceivedBytes, d.ReceiverSeconds)
	if d.Retransmits != nil {
		fmt.Fprintf(w, ", %d retransmits", *d.Retransmits)
	}
	if d.Packets > 0 {
		fmt.Fprintf(w, ", lost %d/%d (%.2f%%), jitter %.3f ms, out of order %d", d.LostPackets, d.Packets, d.LostPercent, d.JitterMs, d.OutOfOrder)
	}
	fmt.Fprintln(w)
}

func printServer(w io.Writer, r *link.TestResult) {
	if r == nil {
		fmt.Fprintln(w, "Reflector result: not available")
		return
	}
	fmt.Fprintf(w, "Reflector measured: sent %d bytes, received %d bytes, %s (%s)\n", r.BytesSent, r.BytesReceived, r.State, r.EndReason)
}

func (o *testOutput) echo(rep *client.EchoReport, err error) error {
	if rep != nil {
		o.doc.Grant = &rep.Grant
		o.doc.Server = rep.Server
	}
	if err != nil {
		return o.failure(err)
	}
	r := rep.Client
	j := &echoJSON{
		Sent: r.Sent, Received: r.Received, Lost: r.Lost, Duplicates: r.Duplicates, Reordered: r.Reordered, Corrupt: r.Corrupt,
		RTTMinMs: ms(r.RTTMin), RTTAvgMs: ms(r.RTTAvg), RTTP50Ms: ms(r.RTTP50), RTTP90Ms: ms(r.RTTP90),
		RTTP99Ms: ms(r.RTTP99), RTTMaxMs: ms(r.RTTMax), JitterMs: ms(r.JitterRFC3550),
		ServerTimeMs: ms(r.ServerTime), ElapsedSecond: r.Elapsed.Seconds(),
	}
	if r.Sent > 0 {
		j.LossPercent = float64(r.Lost) * 100 / float64(r.Sent)
	}
	o.doc.Echo = j
	if o.json {
		return o.writeJSON()
	}
	w := o.e.stdout
	fmt.Fprintf(w, "Reflector %s (%s), UDP echo test %s on port %d\n", o.doc.Reflector, o.doc.ServerID, rep.Grant.TestID, rep.Grant.Port)
	fmt.Fprintf(w, "Probes: sent %d, received %d, lost %d (%.2f%%), duplicates %d, reordered %d, corrupt %d\n",
		j.Sent, j.Received, j.Lost, j.LossPercent, j.Duplicates, j.Reordered, j.Corrupt)
	fmt.Fprintf(w, "RTT ms: min %.3f  avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
		j.RTTMinMs, j.RTTAvgMs, j.RTTP50Ms, j.RTTP90Ms, j.RTTP99Ms, j.RTTMaxMs)
	fmt.Fprintf(w, "Jitter (RFC 3550): %.3f ms", j.JitterMs)
	if j.ServerTimeMs > 0 {
		fmt.Fprintf(w, ", reflector processing %.3f ms", j.ServerTimeMs)
	}
	fmt.Fprintln(w)
	printEchoServer(w, rep.Server)
	return nil
}

// echoServerSummary is the part of the reflector's udp_echo summary
// (test_result.summary, the same object as the audit record's
// details.summary) that the readable output shows.
type echoServerSummary struct {
	Received    uint64 `json:"received"`
	Echoed      uint64 `json:"echoed"`
	Bytes       uint64 `json:"bytes"`
	DroppedRate uint64 `json:"dropped_rate"`
}

// printEchoServer shows the reflector's own counts of an echo test in the
// audit record's terms: datagrams received and echoed, and the echoed
// bytes (its bytes_transferred). An echo reflector sends back what it
// receives, so "received 0 bytes" would be false.
func printEchoServer(w io.Writer, r *link.TestResult) {
	var s echoServerSummary
	if r == nil || len(r.Summary) == 0 || json.Unmarshal(r.Summary, &s) != nil {
		printServer(w, r)
		return
	}
	fmt.Fprintf(w, "Reflector measured: received %d datagrams, echoed %d (%d bytes)", s.Received, s.Echoed, s.Bytes)
	if s.DroppedRate > 0 {
		fmt.Fprintf(w, ", %d dropped over its rate limit", s.DroppedRate)
	}
	fmt.Fprintf(w, ", %s (%s)\n", r.State, r.EndReason)
}
