package selftest

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestRunShort(t *testing.T) {
	rep := Run(context.Background(), Options{
		IperfDuration: time.Second, TLSDuration: 200 * time.Millisecond,
		BenchDuration: 50 * time.Millisecond, TempDir: t.TempDir(),
	})
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
		if c.Value == "" {
			t.Errorf("%s: empty value", c.Name)
		}
		if !slices.Contains([]Verdict{OK, Warn, Fail}, c.Verdict) {
			t.Errorf("%s: verdict %q", c.Name, c.Verdict)
		}
		// The loopback runs and the rate loops must really run here.
		if c.Value == "error" {
			t.Errorf("%s failed to run: %s", c.Name, c.Hint)
		}
	}
	if !slices.Equal(names, CheckNames) {
		t.Fatalf("checks %v, want %v", names, CheckNames)
	}
	if rep.Overall != overall(rep.Checks) {
		t.Fatalf("overall %q disagrees with the checks", rep.Overall)
	}
	for _, c := range rep.Checks {
		if (c.Name == CheckIperf3 || c.Name == CheckTLS) && !strings.Contains(c.Value, "bit/s") {
			t.Errorf("%s value %q is not a rate", c.Name, c.Value)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, buf.String())
	}
	if !slices.Equal(back.Checks, rep.Checks) || back.Overall != rep.Overall {
		t.Fatalf("JSON round trip changed the report")
	}
	buf.Reset()
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), "\n"+rep.Overall+"\n") {
		t.Fatalf("table does not end with the overall verdict:\n%s", buf.String())
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	rep := Run(ctx, Options{IperfDuration: time.Second, TLSDuration: time.Second, BenchDuration: 10 * time.Millisecond, TempDir: t.TempDir()})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a cancelled Run took %v", d)
	}
	for _, c := range rep.Checks {
		if c.Name == CheckIperf3 && c.Verdict != Fail {
			t.Errorf("cancelled iperf3 run graded %s: %+v", c.Verdict, c)
		}
	}
	if rep.Overall != NotReady || rep.ExitCode() != 2 {
		t.Fatalf("cancelled run: %s exit %d", rep.Overall, rep.ExitCode())
	}
}

func TestOverallAndExitCode(t *testing.T) {
	cases := []struct {
		verdicts []Verdict
		want     string
		code     int
	}{
		{[]Verdict{OK, OK}, Ready, 0},
		{[]Verdict{OK, Warn}, Degraded, 0},
		{[]Verdict{Warn, Fail, OK}, NotReady, 2},
		{nil, Ready, 0},
	}
	for _, c := range cases {
		var cs []Check
		for _, v := range c.verdicts {
			cs = append(cs, Check{Verdict: v})
		}
		r := Report{Overall: overall(cs), Checks: cs}
		if r.Overall != c.want || r.ExitCode() != c.code {
			t.Errorf("%v: %s exit %d, want %s exit %d", c.verdicts, r.Overall, r.ExitCode(), c.want, c.code)
		}
	}
}

func TestGrade(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want Verdict
	}{{10, OK}, {5, OK}, {4.9, Warn}, {1, Warn}, {0.9, Fail}} {
		if got := grade(c.v, 5, 1); got != c.want {
			t.Errorf("grade(%v) = %s, want %s", c.v, got, c.want)
		}
	}
}

func TestReadNICs(t *testing.T) {
	fsys := fstest.MapFS{
		"lo/operstate":      {Data: []byte("unknown\n")},
		"lo/speed":          {Data: []byte("-1\n")},
		"eth0/operstate":    {Data: []byte("up\n")},
		"eth0/speed":        {Data: []byte("1000\n")},
		"eth1/operstate":    {Data: []byte("down\n")},
		"eth1/speed":        {Data: []byte("10000\n")},
		"ens3/operstate":    {Data: []byte("up\n")},
		"ens3/speed":        {Data: []byte("-1\n")},
		"wg0/operstate":     {Data: []byte("up\n")},
		"docker0/operstate": {Data: []byte("up")},
		"docker0/speed":     {Data: []byte("garbage")},
	}
	got, err := readNICs(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []nic{{"docker0", 0}, {"ens3", 0}, {"eth0", 1000}, {"wg0", 0}}
	if !slices.Equal(got, want) {
		t.Fatalf("readNICs = %v, want %v", got, want)
	}
	if _, err := readNICs(fstest.MapFS{"x": {Data: []byte("file, not dir")}}); err != nil {
		t.Fatalf("a stray file must be skipped, got %v", err)
	}
}

func TestParseSysctlInt(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"212992\n", 212992, true},
		{" 7500000 ", 7500000, true},
		{"", 0, false},
		{"-1", 0, false},
		{"4096 8192", 0, false},
		{"abc", 0, false},
	} {
		got, err := parseSysctlInt([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSysctlInt(%q) = %d, %v", c.in, got, err)
		}
	}
}

func TestChecksGradeHostValues(t *testing.T) {
	// The UDP buffer check names the sysctl fix when it warns.
	c := checkUDPBuffers()
	if c.Verdict == Warn && c.Value != "unknown" && !strings.Contains(c.Hint, "net.core.rmem_max=7500000") {
		t.Errorf("udp_buffers warn without the sysctl hint: %+v", c)
	}
	if f := checkFDLimit(); f.Verdict != OK && !strings.Contains(f.Hint, "LimitNOFILE") && f.Value != "unknown" {
		t.Errorf("fd_limit below target without a hint: %+v", f)
	}
}

// The audit speed check writes where it is told (the state directory) and
// names that directory when it cannot, instead of falling back to /tmp.
func TestAuditRateUsesGivenDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-state-dir")
	if _, err := auditRate(missing, time.Millisecond); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("auditRate(%s) = %v, want an error naming the directory", missing, err)
	}
	if _, err := auditRate(t.TempDir(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
