package main

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/packetparamedic/reflector/controlplane/selftest"
)

func TestSelfTestJSON(t *testing.T) {
	t.Parallel() // in-process self-test on :0 listeners; any verdict is accepted
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: os.Getenv}
	code := run(e, []string{"self-test", "--json", "--duration", "1s"})
	var rep selftest.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("self-test --json output is not JSON: %v\n%s\nstderr: %s", err, out.String(), errb.String())
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
		if c.Value == "" || !slices.Contains([]selftest.Verdict{selftest.OK, selftest.Warn, selftest.Fail}, c.Verdict) {
			t.Errorf("check %+v: empty value or unknown verdict", c)
		}
	}
	if !slices.Equal(names, selftest.CheckNames) {
		t.Errorf("checks %v, want %v", names, selftest.CheckNames)
	}
	want := 0
	if rep.Overall == selftest.NotReady {
		want = 2
	}
	if code != want {
		t.Errorf("exit code %d for %s, want %d (stderr %s)", code, rep.Overall, want, errb.String())
	}
}

func TestSelfTestTableAndUsage(t *testing.T) {
	t.Parallel() // in-process self-test on :0 listeners; any verdict is accepted
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: os.Getenv}
	if code := run(e, []string{"self-test", "--duration", "10ms"}); code != exitUsage {
		t.Fatalf("--duration 10ms: exit %d, want %d", code, exitUsage)
	}
	if code := run(e, []string{"self-test", "extra"}); code != exitUsage {
		t.Fatalf("positional argument: exit %d, want %d", code, exitUsage)
	}
	out.Reset()
	run(e, []string{"self-test", "--duration", "1s"})
	text := out.String()
	for _, name := range append([]string{"CHECK", "VERDICT"}, selftest.CheckNames...) {
		if !strings.Contains(text, name) {
			t.Errorf("table lacks %q:\n%s", name, text)
		}
	}
	if !strings.Contains(text, "\n"+selftest.Ready+"\n") && !strings.Contains(text, "\n"+selftest.Degraded+"\n") &&
		!strings.Contains(text, "\n"+selftest.NotReady+"\n") {
		t.Errorf("table has no overall verdict line:\n%s", text)
	}
}
