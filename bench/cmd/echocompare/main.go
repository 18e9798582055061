// Command echocompare measures UDP echo round-trip times on loopback two
// ways in the same run: `reflector test udp-echo` against our own
// `reflector serve` (direct_ephemeral mode, one granted echo port per test)
// and `sockperf ping-pong` against `sockperf server`, alternating between
// them round by round, at each packet rate. It prints, per rate, the median
// over the rounds of each side's RTT p50 and p99 and the ratios ours/sockperf.
// It is what `make echo-compare` runs.
//
//	go run ./bench/cmd/echocompare -reflector bin/reflector [-rounds 3] [-t 5]
//	    [-rates 1000,10000] [-size 64] [-spin 200us] [-json]
//
// sockperf reports one-way latency, half the measured round trip, unless
// given --full-rtt; this tool runs it without that flag and doubles its
// figures, so both columns are round-trip times. With -timestamped our runs
// use the reflector's timestamped echo and the table adds our server's mean
// time from the kernel's receive stamp to the send, its share of the round
// trip (sockperf's server cannot be pointed at by our client, nor ours by
// sockperf's: it expects its server to mark the reply, which RFC 862 echo
// does not). sockperf's ping-pong client busy-polls (a whole CPU while it
// runs), so ours runs with --spin (-spin, 200us by default: it polls after
// each probe until the reply, 200 us or the next send); -spin 0 shows our
// sleeping prober, whose wake-ups cost tens of microseconds on a VM. A
// long spin hurts on two CPUs: at 1k pps, -spin 1ms put ours' p99 at the
// spin length (about 1,050 us: the spinning prober holds the CPU the
// server's thread needs), 200us gave p99 ratio 1.26 (3 rounds). It
// needs sockperf (Debian:
// apt-get install sockperf) and installs nothing. Both servers start once and
// stay up for the whole run; everything started is stopped at the end.
// Results are informational: the exit status is 0 unless something failed to
// run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/packetparamedic/reflector/bench/internal/iperfrun"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	reflector string
	sockperf  string
	rounds    int
	seconds   int
	rates     []int
	size      int
	json      bool
	// timestamped runs ours with --timestamped (server time column).
	timestamped bool
	// spin is ours' --spin: sockperf's ping-pong client busy-polls all
	// the time, so by default ours polls for each reply too.
	spin    time.Duration
	timeout time.Duration
}

// maxRate is the highest rate accepted: the reflector's default
// quotas.echo_max_pps, above which our server would clamp.
const maxRate = 20000

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("echocompare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var rates string
	fs.StringVar(&o.reflector, "reflector", "", "path of the reflector binary (required)")
	fs.StringVar(&o.sockperf, "sockperf", "sockperf", "sockperf binary (server and ping-pong client)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds per rate; each round runs ours once and sockperf once")
	fs.IntVar(&o.seconds, "t", 5, "seconds per run")
	fs.StringVar(&rates, "rates", "1000,10000", "comma-separated packet rates (packets per second)")
	fs.IntVar(&o.size, "size", 64, "datagram size in bytes")
	fs.BoolVar(&o.json, "json", false, "print the results, with every run, as JSON instead of a table")
	fs.BoolVar(&o.timestamped, "timestamped", false, "run ours in timestamped mode and report our server's mean receive-to-send time")
	fs.DurationVar(&o.spin, "spin", 200*time.Microsecond, "ours' --spin (poll for each reply without sleeping for up to this long; sockperf's client always spins); 0 makes ours sleep")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole comparison")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.reflector == "" {
		return o, errors.New("-reflector is required (build it with `make build`)")
	}
	if o.rounds < 1 || o.seconds < 1 {
		return o, errors.New("-rounds and -t must be at least 1")
	}
	// sockperf's minimum message is 14 bytes, ours 64 KiB at most.
	if o.size < 14 || o.size > 65507 {
		return o, fmt.Errorf("-size %d: want 14..65507", o.size)
	}
	for _, f := range strings.Split(rates, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.Atoi(f)
		if err != nil || r < 1 || r > maxRate {
			return o, fmt.Errorf("-rates: %q is not a rate in 1..%d", f, maxRate)
		}
		o.rates = append(o.rates, r)
	}
	if len(o.rates) == 0 {
		return o, errors.New("-rates names no rate")
	}
	return o, nil
}

// minProbes is the fewest probes a run sends: a low rate runs longer than
// -t, so its p99 rests on enough samples (10 s at 1k pps).
const minProbes = 10000

// runSeconds is the duration of one run at rate.
func runSeconds(seconds, rate int) int {
	return max(seconds, (minProbes+rate-1)/rate)
}

// errNoSockperf is returned when the sockperf binary is not found.
var errNoSockperf = errors.New("sockperf not found: install it (Debian/Ubuntu: apt-get install -y sockperf) or pass -sockperf PATH")

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "echocompare:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	results, err := compare(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "echocompare:", err)
		return 1
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			fmt.Fprintln(stderr, "echocompare:", err)
			return 1
		}
		return 0
	}
	printTable(stdout, results, o)
	return 0
}

// rtt is one run's round-trip percentiles, in microseconds.
type rtt struct {
	Round int     `json:"round"`
	P50us float64 `json:"rtt_p50_us"`
	P99us float64 `json:"rtt_p99_us"`
	// Sent and Received count the probes of the measured interval.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// ServerUs is our server's mean receive-to-send time (-timestamped).
	ServerUs float64 `json:"server_time_us,omitempty"`
}

// side is one tool's runs at one rate.
type side struct {
	MedianP50us    float64 `json:"median_rtt_p50_us"`
	MedianP99us    float64 `json:"median_rtt_p99_us"`
	MedianServerUs float64 `json:"median_server_time_us,omitempty"`
	Runs           []rtt   `json:"runs"`
}

func (s *side) summarize() {
	var p50, p99, srv []float64
	for _, r := range s.Runs {
		p50 = append(p50, r.P50us)
		p99 = append(p99, r.P99us)
		srv = append(srv, r.ServerUs)
	}
	s.MedianP50us, s.MedianP99us, s.MedianServerUs = iperfrun.Median(p50), iperfrun.Median(p99), iperfrun.Median(srv)
}

// rateResult is the comparison at one rate.
type rateResult struct {
	Rate     int     `json:"rate_pps"`
	Size     int     `json:"size"`
	Ours     side    `json:"ours"`
	Sockperf side    `json:"sockperf"`
	RatioP50 float64 `json:"ratio_p50"`
	RatioP99 float64 `json:"ratio_p99"`
	// Spread* are the lowest and highest ratio of one round's runs.
	SpreadP50 [2]float64 `json:"ratio_p50_range"`
	SpreadP99 [2]float64 `json:"ratio_p99_range"`
}

// spread returns the range of the per-round ratios of ours to sockperf.
func spread(ours, stock []rtt, pick func(rtt) float64) [2]float64 {
	var rs []float64
	for i := range min(len(ours), len(stock)) {
		rs = append(rs, iperfrun.Ratio(pick(ours[i]), pick(stock[i])))
	}
	if len(rs) == 0 {
		return [2]float64{}
	}
	return [2]float64{slices.Min(rs), slices.Max(rs)}
}

// prober is one of the two measurements under comparison.
type prober interface {
	name() string
	measure(ctx context.Context, rate int) (rtt, error)
}

func compare(ctx context.Context, o options, log io.Writer) ([]rateResult, error) {
	sp, err := exec.LookPath(o.sockperf)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errNoSockperf, err)
	}
	if _, err := os.Stat(o.reflector); err != nil {
		return nil, fmt.Errorf("reflector binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "echocompare-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	ours, err := startOurs(ctx, o, dir)
	if err != nil {
		return nil, err
	}
	defer ours.stop()
	fmt.Fprintf(log, "ours: reflector serve on %s, data ports %d-%d\n", ours.addr, ours.portLo, ours.portHi)
	stock, err := startSockperf(ctx, o, sp)
	if err != nil {
		return nil, err
	}
	defer stock.stop()
	fmt.Fprintf(log, "sockperf: server on 127.0.0.1:%d\n", stock.port)

	var results []rateResult
	for _, rate := range o.rates {
		res := rateResult{Rate: rate, Size: o.size}
		for r := range o.rounds {
			order := []prober{ours, stock}
			if r%2 == 1 {
				order = []prober{stock, ours}
			}
			for _, p := range order {
				m, err := p.measure(ctx, rate)
				if err != nil {
					return nil, fmt.Errorf("rate %d round %d, %s: %w", rate, r+1, p.name(), err)
				}
				m.Round = r + 1
				fmt.Fprintf(log, "%6d pps  round %d  %-8s RTT p50 %8.1f us  p99 %8.1f us  (%d/%d probes)\n",
					rate, r+1, p.name(), m.P50us, m.P99us, m.Received, m.Sent)
				if p == prober(ours) {
					res.Ours.Runs = append(res.Ours.Runs, m)
				} else {
					res.Sockperf.Runs = append(res.Sockperf.Runs, m)
				}
			}
		}
		res.Ours.summarize()
		res.Sockperf.summarize()
		res.RatioP50 = iperfrun.Ratio(res.Ours.MedianP50us, res.Sockperf.MedianP50us)
		res.RatioP99 = iperfrun.Ratio(res.Ours.MedianP99us, res.Sockperf.MedianP99us)
		res.SpreadP50 = spread(res.Ours.Runs, res.Sockperf.Runs, func(r rtt) float64 { return r.P50us })
		res.SpreadP99 = spread(res.Ours.Runs, res.Sockperf.Runs, func(r rtt) float64 { return r.P99us })
		results = append(results, res)
	}
	return results, nil
}

func printTable(w io.Writer, results []rateResult, o options) {
	fmt.Fprintf(w, "\nUDP echo on loopback, %d-byte datagrams, %d rounds of -t %d (at least %d probes) per side and rate, alternating; medians over the rounds, [range of the per-round ratios].\n", o.size, o.rounds, o.seconds, minProbes)
	fmt.Fprintf(w, "ours = reflector test udp-echo against reflector serve (direct_ephemeral); sockperf = sockperf ping-pong against sockperf server.\n")
	fmt.Fprintf(w, "All figures are round-trip times: sockperf's one-way latency (RTT/2) is doubled. ratio = ours / sockperf.\n")
	if o.timestamped {
		fmt.Fprintf(w, "ours ran timestamped; ours server us = our server's mean time from the kernel's receive stamp to the send.\n")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "rate pps\tours RTT p50 us\tours RTT p99 us\tsockperf RTT p50 us\tsockperf RTT p99 us\tratio p50\tratio p99\tp50 range\tp99 range\t"
	if o.timestamped {
		head += "ours server us\t"
	}
	fmt.Fprintln(tw, head)
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f-%.2f\t%.2f-%.2f\t", r.Rate,
			r.Ours.MedianP50us, r.Ours.MedianP99us, r.Sockperf.MedianP50us, r.Sockperf.MedianP99us,
			r.RatioP50, r.RatioP99, r.SpreadP50[0], r.SpreadP50[1], r.SpreadP99[0], r.SpreadP99[1])
		if o.timestamped {
			fmt.Fprintf(tw, "%.1f\t", r.Ours.MedianServerUs)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}
