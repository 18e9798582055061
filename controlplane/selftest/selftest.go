// Package selftest checks whether this host can run the reflector for
// 1 Gbit/s tests: CPU, memory, NIC speeds, a loopback run of the native
// iperf3 engine and of a TLS tunnel, audit log speed, Ed25519 rate, clock
// sync, file descriptor and UDP buffer limits. Each check yields a value
// and a verdict; the report's overall verdict is READY, DEGRADED or
// NOT READY.
package selftest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Verdict grades one check.
type Verdict string

// Verdicts.
const (
	OK   Verdict = "ok"   // meets the 1 Gbit/s target
	Warn Verdict = "warn" // works, but below the target or not measurable
	Fail Verdict = "fail" // the reflector cannot serve tests well here
)

// Overall results.
const (
	Ready    = "READY"     // every check ok
	Degraded = "DEGRADED"  // some check warns, none fails
	NotReady = "NOT READY" // some check fails
)

// Check is the outcome of one check.
type Check struct {
	Name    string  `json:"name"`
	Value   string  `json:"value"`
	Verdict Verdict `json:"verdict"`
	// Hint says what to do about a warn or fail, or what ok means.
	Hint string `json:"hint,omitempty"`
}

// Report is the result of Run.
type Report struct {
	Overall string  `json:"overall"`
	Checks  []Check `json:"checks"`
}

// ExitCode is the process exit code for the report: 0 for READY and
// DEGRADED, 2 for NOT READY.
func (r Report) ExitCode() int {
	if r.Overall == NotReady {
		return 2
	}
	return 0
}

// Options tune Run. Zero values take the defaults.
type Options struct {
	// IperfDuration is the loopback iperf3 run (default 3s, rounded up to
	// whole seconds as iperf3 does).
	IperfDuration time.Duration
	// TLSDuration is the loopback TLS copy (default 2s).
	TLSDuration time.Duration
	// BenchDuration bounds each of the audit and Ed25519 rate loops
	// (default 500ms).
	BenchDuration time.Duration
	// TempDir holds the audit speed file: pass the state directory, whose
	// disk the audit log lives on. Default: the built-in state directory
	// (/var/lib/reflector) when it exists, else os.TempDir() (a read-only
	// scratch container has no writable /tmp, only its state volume).
	TempDir string
}

func (o *Options) defaults() {
	if o.IperfDuration <= 0 {
		o.IperfDuration = 3 * time.Second
	}
	if o.TLSDuration <= 0 {
		o.TLSDuration = 2 * time.Second
	}
	if o.BenchDuration <= 0 {
		o.BenchDuration = 500 * time.Millisecond
	}
}

// Names of the checks, in report order.
const (
	CheckCPUCores    = "cpu_cores"
	CheckCPUFeatures = "cpu_features"
	CheckMemory      = "memory"
	CheckNICSpeed    = "nic_speed"
	CheckIperf3      = "iperf3_loopback"
	CheckTLS         = "tls_loopback"
	CheckAudit       = "audit_write"
	CheckEd25519     = "ed25519"
	CheckClock       = "clock_sync"
	CheckFDLimit     = "fd_limit"
	CheckUDPBuffers  = "udp_buffers"
)

// CheckNames lists every check Run performs, in order.
var CheckNames = []string{
	CheckCPUCores, CheckCPUFeatures, CheckMemory, CheckNICSpeed, CheckIperf3, CheckTLS,
	CheckAudit, CheckEd25519, CheckClock, CheckFDLimit, CheckUDPBuffers,
}

// Run performs every check, one after another (the loopback runs would
// disturb each other), and grades the host. ctx cancels the running check;
// the remaining ones then fail quickly.
func Run(ctx context.Context, opts Options) Report {
	opts.defaults()
	checks := []Check{
		checkCores(),
		checkCPUFeatures(),
		checkMemory(),
		checkNICs(),
		checkIperf3(ctx, opts.IperfDuration),
		checkTLS(ctx, opts.TLSDuration),
		checkAudit(opts.TempDir, opts.BenchDuration),
		checkEd25519(opts.BenchDuration),
		checkClock(),
		checkFDLimit(),
		checkUDPBuffers(),
	}
	return Report{Overall: overall(checks), Checks: checks}
}

func overall(cs []Check) string {
	res := Ready
	for _, c := range cs {
		switch c.Verdict {
		case Fail:
			return NotReady
		case Warn:
			res = Degraded
		}
	}
	return res
}

// WriteJSON writes the report as one indented JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write self-test report: %w", err)
	}
	return nil
}

// WriteTable writes the report as an aligned table and the verdict line.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tVALUE\tVERDICT\tHINT")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Value, strings.ToUpper(string(c.Verdict)), c.Hint)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write self-test report: %w", err)
	}
	if _, err := fmt.Fprintf(w, "\n%s\n", r.Overall); err != nil {
		return fmt.Errorf("write self-test report: %w", err)
	}
	return nil
}

// grade returns OK at or above ok, Warn at or above warn, Fail below.
func grade(v, ok, warn float64) Verdict {
	switch {
	case v >= ok:
		return OK
	case v >= warn:
		return Warn
	default:
		return Fail
	}
}

// bitsPerSec formats a rate in bits per second.
func bitsPerSec(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", bps/1e3)
	}
}
