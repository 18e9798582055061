package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// exportedMetrics returns the names of every series family the reflector
// serves on /metrics (its registry with the fleet gauges), histograms
// with their _bucket, _sum and _count series.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New("v", "c")
	m.ObserveFleet("PP-TEST", func() []health.Check { return nil })
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

// metricRef matches the metric names our queries may use.
var metricRef = regexp.MustCompile(`\b(reflector|process|go)_[a-z0-9_]+\b`)

// unknownNames returns the metric names in expr the reflector does not
// export (or expr itself when it names none).
func unknownNames(expr string, exported map[string]bool) []string {
	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		return []string{expr}
	}
	var bad []string
	for _, name := range refs {
		if !exported[name] {
			bad = append(bad, name)
		}
	}
	return bad
}

// checkNames fails for every metric name in expr the reflector does not
// export.
func checkNames(t *testing.T, where, expr string, exported map[string]bool) {
	t.Helper()
	if bad := unknownNames(expr, exported); len(bad) > 0 {
		t.Errorf("%s uses %v, which the reflector does not export: %s", where, bad, expr)
	}
}

// alertRules returns the rules of prometheus/alerts.yml.
func alertRules(t *testing.T) []struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
} {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "prometheus/alerts.yml")), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Groups) != 1 {
		t.Fatalf("%d rule groups", len(f.Groups))
	}
	return f.Groups[0].Rules
}

// TestAlertRules: promtool accepts the rules and their unit tests pass;
// every alert names only exported metrics (ReflectorDown uses `up`).
func TestAlertRules(t *testing.T) {
	promtool := testutil.LookBinary(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", "prometheus/alerts.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = "prometheus"
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	t.Logf("promtool test rules prometheus/alerts_test.yml:\n%s", out)
	exported := exportedMetrics(t)
	tested := read(t, "prometheus/alerts_test.yml")
	for _, r := range alertRules(t) {
		if r.Alert == "ReflectorDown" {
			continue
		}
		checkNames(t, "alert "+r.Alert, r.Expr, exported)
		if !strings.Contains(tested, "alertname: "+r.Alert+"\n") {
			t.Errorf("alert %s has no unit test in alerts_test.yml", r.Alert)
		}
	}
	for _, want := range []string{"ReflectorDown", "ReflectorDegraded", "ReflectorHandshakeFailuresRising", "ReflectorConnectionLimitDrops",
		"ReflectorSessionDenialsSpike", "ReflectorQuotaCutoffs", "ReflectorEchoDrops"} {
		if !slices.ContainsFunc(alertRules(t), func(r struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		}) bool {
			return r.Alert == want
		}) {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
}

// dashboardPanel is the part of a Grafana panel under test.
type dashboardPanel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// TestDashboardQueries: every panel's PromQL parses (promtool checks it as
// a recording rule, Grafana's variables replaced by values) and names only
// metrics the reflector exports.
func TestDashboardQueries(t *testing.T) {
	promtool := testutil.LookBinary(t, "promtool")
	var d struct {
		UID    string           `json:"uid"`
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal([]byte(read(t, "grafana/reflector.json")), &d); err != nil {
		t.Fatalf("grafana/reflector.json: %v", err)
	}
	exported := exportedMetrics(t)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			expr := vars.Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: unknown variable in %s", p.Title, tg.Expr)
			}
			checkNames(t, fmt.Sprintf("panel %q", p.Title), expr, exported)
			b, _ := json.Marshal(expr) // a JSON string is a valid YAML scalar
			fmt.Fprintf(&rules, "      - record: dashboard:panel_%d\n        expr: %s\n", n, b)
			n++
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("dashboard queries do not parse: %v\n%s\n%s", err, out, rules.String())
	}
	t.Logf("%d dashboard queries parse and name exported metrics", n)
	// The panels the fleet needs.
	for _, want := range []string{"reflector_identity_info", "reflector_health_ok", "reflector_data_bytes_total", "reflector_sessions_denied_total",
		"reflector_tls_handshake_failures_total", "reflector_echo_rate_dropped_packets_total", "reflector_session_duration_seconds_bucket"} {
		if !strings.Contains(rules.String(), want) {
			t.Errorf("no dashboard panel uses %s", want)
		}
	}
}

// TestChecksCatchUnknownMetric proves the name check can fail.
func TestChecksCatchUnknownMetric(t *testing.T) {
	exported := exportedMetrics(t)
	if bad := unknownNames(`rate(reflector_no_such_metric_total[5m]) + reflector_sessions_active`, exported); !slices.Equal(bad, []string{"reflector_no_such_metric_total"}) {
		t.Errorf("unknownNames = %v", bad)
	}
	if bad := unknownNames(`vector(1)`, exported); len(bad) != 1 {
		t.Errorf("a query naming no metric passed: %v", bad)
	}
}
