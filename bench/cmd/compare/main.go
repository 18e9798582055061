// Command compare runs the stock iperf3 client on loopback against stock
// `iperf3 -s` and against our native server (`reflector iperf3-server`),
// alternating between them round by round, and prints per case the median
// receiver throughput of each, the ratio ours/stock, and the servers' CPU
// seconds per GB moved (from /proc/<pid>/stat), against the goals of the
// native data plane. It is what `make bench-compare` runs.
//
//	go run ./bench/cmd/compare -reflector bin/reflector [-rounds 5] [-t 3]
//	    [-cases '-P 1,-P 4,-R,-u -b 0 -l 1400,-u -R -b 0 -l 1400'] [-json]
//	    [-iperf3 iperf3-upstream]   (3.20+ client and server, for --gsro cases)
//
// Each case prints the median of each side, the spread (min-max) of each
// side and of the per-round ratios ours/stock, and the load average at the
// start and end of the run (the machine may be shared).
//
// Both servers start once, on distinct free ports, and stay up for the whole
// run. Within a round the order alternates (stock first in even rounds, ours
// first in odd ones) so that warm-up and background load fall on both alike.
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
	"net"
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
	"github.com/packetparamedic/reflector/internal/freeport"
)

// Goals from the acceptance of the native data plane, on loopback in the
// same run.
const (
	receiveGoal = 1.10 // ours/stock throughput for "-P 1" (server receives)
	udpGoal     = 1.20 // ours/stock throughput for "-u" without -R or --gsro
	otherGoal   = 1.0  // ours/stock throughput for every other case
	cpuGoal     = 0.6  // ours/stock server CPU seconds per GB, at most (TCP)
	udpCPUGoal  = 0.5  // the same for UDP without --gsro
	gsroCPUGoal = 1.0  // the same for UDP --gsro (against an upstream server)
)

const defaultCases = "-P 1,-P 4,-R,-u -b 0 -l 1400,-u -R -b 0 -l 1400"

// attempts is how often one client run is tried before the tool gives up; a
// server still tearing down the previous test may answer "busy" once.
const attempts = 3

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	reflector string
	iperf3    string
	rounds    int
	seconds   int
	cases     []caseSpec
	json      bool
	timeout   time.Duration
	load      string // load averages at the start and end, for the report
}

type caseSpec struct {
	Name    string   `json:"case"`
	Args    []string `json:"args"`
	Goal    float64  `json:"goal_ratio"`
	CPUGoal float64  `json:"goal_cpu_ratio"`
}

// newCase returns the case for a client argument set, with its goals.
func newCase(f []string) caseSpec {
	c := caseSpec{Name: strings.Join(f, " "), Args: f, Goal: otherGoal, CPUGoal: cpuGoal}
	udp, rev, gsro := slices.Contains(f, "-u"), slices.Contains(f, "-R"), slices.Contains(f, "--gsro")
	switch {
	case slices.Equal(f, []string{"-P", "1"}):
		c.Goal = receiveGoal
	case udp && gsro:
		c.CPUGoal = gsroCPUGoal
	case udp && !rev:
		c.Goal, c.CPUGoal = udpGoal, udpCPUGoal
	case udp:
		c.CPUGoal = udpCPUGoal
	}
	return c
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var cases string
	fs.StringVar(&o.reflector, "reflector", "", "path of the reflector binary (required)")
	fs.StringVar(&o.iperf3, "iperf3", "iperf3", "stock iperf3 binary (client, and the stock server)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds per case; each round runs stock once and ours once")
	fs.IntVar(&o.seconds, "t", 3, "seconds per client run (iperf3 -t)")
	fs.StringVar(&cases, "cases", defaultCases, "comma-separated iperf3 client argument sets, one per case")
	fs.BoolVar(&o.json, "json", false, "print the results, with every run, as JSON instead of a table")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "bound on the whole comparison")
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
	for _, c := range strings.Split(cases, ",") {
		f := strings.Fields(c)
		if len(f) == 0 {
			continue
		}
		o.cases = append(o.cases, newCase(f))
	}
	if len(o.cases) == 0 {
		return o, errors.New("-cases names no case")
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "compare:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	loadBefore := loadAverage()
	results, err := compare(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return 1
	}
	o.load = loadBefore + " -> " + loadAverage()
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			fmt.Fprintln(stderr, "compare:", err)
			return 1
		}
		return 0
	}
	printTable(stdout, results, o)
	return 0
}

// server is one of the two long-running servers under comparison.
type server struct {
	name string
	port int
	proc *iperfrun.Process
}

// runResult is one client run against one server.
type runResult struct {
	Round         int     `json:"round"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Bytes         int64   `json:"bytes"`
	CPUSeconds    float64 `json:"server_cpu_seconds"`
	LossPercent   float64 `json:"loss_percent"`
}

// side is one server's results for one case.
type side struct {
	MedianBitsPerSecond float64     `json:"median_bits_per_second"`
	MinBitsPerSecond    float64     `json:"min_bits_per_second"`
	MaxBitsPerSecond    float64     `json:"max_bits_per_second"`
	CPUSecondsPerGB     float64     `json:"cpu_seconds_per_gb"`
	MedianLossPercent   float64     `json:"median_loss_percent"`
	Runs                []runResult `json:"runs"`
}

// caseResult is the comparison for one case.
type caseResult struct {
	caseSpec
	UDP   bool    `json:"udp"`
	Stock side    `json:"stock"`
	Ours  side    `json:"ours"`
	Ratio float64 `json:"ratio"`
	// MinRatio and MaxRatio are the spread of the per-round ratios.
	MinRatio float64 `json:"min_round_ratio"`
	MaxRatio float64 `json:"max_round_ratio"`
	CPURatio float64 `json:"cpu_ratio"`
}

// roundRatios sets the spread of the ratios ours/stock of each round.
func (r *caseResult) roundRatios() {
	for i := range min(len(r.Ours.Runs), len(r.Stock.Runs)) {
		q := iperfrun.Ratio(r.Ours.Runs[i].BitsPerSecond, r.Stock.Runs[i].BitsPerSecond)
		if i == 0 || q < r.MinRatio {
			r.MinRatio = q
		}
		if i == 0 || q > r.MaxRatio {
			r.MaxRatio = q
		}
	}
}

func compare(ctx context.Context, o options, log io.Writer) ([]caseResult, error) {
	iperf3, err := exec.LookPath(o.iperf3)
	if err != nil {
		return nil, fmt.Errorf("find stock iperf3: %w", err)
	}
	if _, err := os.Stat(o.reflector); err != nil {
		return nil, fmt.Errorf("reflector binary: %w", err)
	}
	stockPort, err := freeport.Port(true)
	if err != nil {
		return nil, err
	}
	oursPort, err := freeport.Port(true)
	if err != nil {
		return nil, err
	}
	for oursPort == stockPort {
		if oursPort, err = freeport.Port(true); err != nil {
			return nil, err
		}
	}
	stock, err := startServer(ctx, "stock", stockPort,
		iperf3, "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(stockPort))
	if err != nil {
		return nil, err
	}
	defer stock.proc.Stop()
	ours, err := startServer(ctx, "ours", oursPort,
		o.reflector, "iperf3-server", "--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(oursPort)))
	if err != nil {
		return nil, err
	}
	defer ours.proc.Stop()

	client := iperfrun.Client{Binary: iperf3}
	var results []caseResult
	for _, c := range o.cases {
		res := caseResult{caseSpec: c}
		for r := range o.rounds {
			order := []*server{stock, ours}
			if r%2 == 1 {
				order = []*server{ours, stock}
			}
			for _, s := range order {
				rr, udp, err := measure(ctx, log, client, s, o.seconds, c.Args)
				if err != nil {
					return nil, fmt.Errorf("case %q round %d against %s: %w", c.Name, r+1, s.name, err)
				}
				rr.Round = r + 1
				res.UDP = udp
				fmt.Fprintf(log, "%-18s round %d %-5s %7.2f Gbit/s  cpu %.2fs  %.2f GB\n",
					c.Name, r+1, s.name, rr.BitsPerSecond/1e9, rr.CPUSeconds, float64(rr.Bytes)/1e9)
				if s == stock {
					res.Stock.Runs = append(res.Stock.Runs, rr)
				} else {
					res.Ours.Runs = append(res.Ours.Runs, rr)
				}
			}
		}
		res.Stock.summarize()
		res.Ours.summarize()
		res.Ratio = iperfrun.Ratio(res.Ours.MedianBitsPerSecond, res.Stock.MedianBitsPerSecond)
		res.CPURatio = iperfrun.Ratio(res.Ours.CPUSecondsPerGB, res.Stock.CPUSecondsPerGB)
		res.roundRatios()
		results = append(results, res)
	}
	return results, nil
}

func startServer(ctx context.Context, name string, port int, argv ...string) (*server, error) {
	p, err := iperfrun.Start(argv...)
	if err != nil {
		return nil, fmt.Errorf("%s server: %w", name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := iperfrun.WaitTCP(wctx, p, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s server not ready: %w", name, err)
	}
	return &server{name: name, port: port, proc: p}, nil
}

// measure runs one client test against s and charges the server's CPU time
// over the run to it. A failed run is retried (a server may still be tearing
// down the previous test) unless the server has exited.
func measure(ctx context.Context, log io.Writer, client iperfrun.Client, s *server, seconds int, args []string) (runResult, bool, error) {
	var lastErr error
	for attempt := range attempts {
		if attempt > 0 {
			fmt.Fprintf(log, "retrying against %s after: %v\n", s.name, lastErr)
			t := time.NewTimer(time.Duration(attempt) * 250 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return runResult{}, false, errors.Join(lastErr, ctx.Err())
			case <-s.proc.Exited():
				t.Stop()
				return runResult{}, false, fmt.Errorf("%w; server exited: %s", lastErr, s.proc.Output())
			case <-t.C:
			}
		}
		before, err := iperfrun.ProcessCPU(s.proc.Pid())
		if err != nil {
			return runResult{}, false, err
		}
		rep, err := client.Run(ctx, "127.0.0.1", s.port, seconds, args...)
		if err != nil {
			lastErr = err
			continue
		}
		after, err := iperfrun.ProcessCPU(s.proc.Pid())
		if err != nil {
			return runResult{}, false, err
		}
		if rep.ReceivedBytes <= 0 {
			lastErr = fmt.Errorf("receiver counted %d bytes", rep.ReceivedBytes)
			continue
		}
		return runResult{
			BitsPerSecond: rep.ReceivedBitsPerSecond,
			Bytes:         rep.ReceivedBytes,
			CPUSeconds:    (after - before).Seconds(),
			LossPercent:   rep.LossPercent,
		}, rep.UDP, nil
	}
	return runResult{}, false, fmt.Errorf("%d attempts failed, last: %w", attempts, lastErr)
}

// summarize fills the medians and the CPU per GB, taken as total CPU over
// total bytes of all runs (steadier than a median of per-run ratios, whose
// CPU time comes in clock ticks).
func (s *side) summarize() {
	var bps, loss []float64
	var cpu float64
	var bytes int64
	for _, r := range s.Runs {
		bps = append(bps, r.BitsPerSecond)
		loss = append(loss, r.LossPercent)
		cpu += r.CPUSeconds
		bytes += r.Bytes
	}
	s.MedianBitsPerSecond = iperfrun.Median(bps)
	if len(bps) > 0 {
		s.MinBitsPerSecond, s.MaxBitsPerSecond = slices.Min(bps), slices.Max(bps)
	}
	s.MedianLossPercent = iperfrun.Median(loss)
	s.CPUSecondsPerGB = iperfrun.Ratio(cpu, float64(bytes)/1e9)
}

// verdict says whether a case met its goals: throughput ratio at least the
// case's goal, and server CPU per GB at most the case's CPU goal.
func verdict(r caseResult) string {
	var missed []string
	if r.Ratio < r.Goal {
		missed = append(missed, "throughput")
	}
	if r.CPURatio > r.CPUGoal || r.CPURatio == 0 {
		missed = append(missed, "cpu")
	}
	if len(missed) == 0 {
		return "PASS"
	}
	return "MISS (" + strings.Join(missed, ", ") + ")"
}

func printTable(w io.Writer, results []caseResult, o options) {
	fmt.Fprintf(w, "\n%d rounds of -t %d per server and case, alternating; throughput = median receiver bits/s from the client's -J;\n", o.rounds, o.seconds)
	fmt.Fprintf(w, "CPU s/GB = server utime+stime over all runs / receiver bytes over all runs; (min-max) over the rounds.\n")
	fmt.Fprintf(w, "Load average (1, 5, 15 min) at start -> end: %s\n\n", o.load)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tstock Gbit/s\tours Gbit/s\tratio (rounds)\tstock CPU s/GB\tours CPU s/GB\tcpu ratio\tstock loss%\tours loss%\tgoal\tresult")
	for _, r := range results {
		stockLoss, oursLoss := "-", "-"
		if r.UDP {
			stockLoss = strconv.FormatFloat(r.Stock.MedianLossPercent, 'f', 2, 64)
			oursLoss = strconv.FormatFloat(r.Ours.MedianLossPercent, 'f', 2, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f (%.2f-%.2f)\t%.3f\t%.3f\t%.2f\t%s\t%s\tratio>=%.2f cpu<=%.1f\t%s\n",
			r.Name, gbits(r.Stock), gbits(r.Ours), r.Ratio, r.MinRatio, r.MaxRatio,
			r.Stock.CPUSecondsPerGB, r.Ours.CPUSecondsPerGB, r.CPURatio,
			stockLoss, oursLoss, r.Goal, r.CPUGoal, verdict(r))
	}
	_ = tw.Flush()
}

// gbits formats a side's median and spread in Gbit/s.
func gbits(s side) string {
	return fmt.Sprintf("%.2f (%.2f-%.2f)", s.MedianBitsPerSecond/1e9, s.MinBitsPerSecond/1e9, s.MaxBitsPerSecond/1e9)
}

// loadAverage returns the first three fields of /proc/loadavg, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
