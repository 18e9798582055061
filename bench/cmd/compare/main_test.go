package main

import (
	"io"
	"slices"
	"testing"
)

func TestParseFlagsCases(t *testing.T) {
	o, err := parseFlags([]string{"-reflector", "bin/reflector", "-cases",
		"-P 1, -R -P 4 ,,-u -b 0 -l 1400,-u -R -b 0,-u --gsro -b 0,-u -R --gsro"}, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	want := []caseSpec{
		{Name: "-P 1", Args: []string{"-P", "1"}, Goal: receiveGoal, CPUGoal: cpuGoal},
		{Name: "-R -P 4", Args: []string{"-R", "-P", "4"}, Goal: otherGoal, CPUGoal: cpuGoal},
		{Name: "-u -b 0 -l 1400", Args: []string{"-u", "-b", "0", "-l", "1400"}, Goal: udpGoal, CPUGoal: udpCPUGoal},
		{Name: "-u -R -b 0", Args: []string{"-u", "-R", "-b", "0"}, Goal: otherGoal, CPUGoal: udpCPUGoal},
		{Name: "-u --gsro -b 0", Args: []string{"-u", "--gsro", "-b", "0"}, Goal: otherGoal, CPUGoal: gsroCPUGoal},
		{Name: "-u -R --gsro", Args: []string{"-u", "-R", "--gsro"}, Goal: otherGoal, CPUGoal: gsroCPUGoal},
	}
	if len(o.cases) != len(want) {
		t.Fatalf("cases = %+v, want %+v", o.cases, want)
	}
	for i, c := range o.cases {
		if c.Name != want[i].Name || !slices.Equal(c.Args, want[i].Args) || c.Goal != want[i].Goal || c.CPUGoal != want[i].CPUGoal {
			t.Errorf("case %d = %+v, want %+v", i, c, want[i])
		}
	}
	if o.rounds != 5 || o.seconds != 3 {
		t.Errorf("defaults: rounds %d, t %d; want 5 and 3", o.rounds, o.seconds)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                                      // no -reflector
		{"-reflector", "x", "-rounds", "0"},     // no rounds
		{"-reflector", "x", "-cases", " , "},    // no case
		{"-reflector", "x", "extra"},            // stray argument
		{"-reflector", "x", "-t", "notanumber"}, // bad flag value
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}

func TestSummarizeAndVerdict(t *testing.T) {
	s := side{Runs: []runResult{
		{BitsPerSecond: 10e9, Bytes: 3e9, CPUSeconds: 0.3, LossPercent: 1},
		{BitsPerSecond: 30e9, Bytes: 5e9, CPUSeconds: 0.5, LossPercent: 3},
		{BitsPerSecond: 20e9, Bytes: 2e9, CPUSeconds: 0.2, LossPercent: 2},
	}}
	s.summarize()
	if s.MedianBitsPerSecond != 20e9 || s.MedianLossPercent != 2 {
		t.Errorf("medians = %v bit/s, %v%% loss; want 20e9 and 2", s.MedianBitsPerSecond, s.MedianLossPercent)
	}
	if s.MinBitsPerSecond != 10e9 || s.MaxBitsPerSecond != 30e9 {
		t.Errorf("spread = %v-%v, want 10e9-30e9", s.MinBitsPerSecond, s.MaxBitsPerSecond)
	}
	if got := s.CPUSecondsPerGB; got < 0.0999 || got > 0.1001 {
		t.Errorf("cpu s/GB = %v, want 0.1 (1 s over 10 GB)", got)
	}

	tests := []struct {
		ratio, cpu, goal float64
		want             string
	}{
		{1.2, 0.5, receiveGoal, "PASS"},
		{1.05, 0.5, receiveGoal, "MISS (throughput)"},
		{1.05, 0.5, otherGoal, "PASS"},
		{1.0, 0.7, otherGoal, "MISS (cpu)"},
		{0.9, 0.7, otherGoal, "MISS (throughput, cpu)"},
		{1.0, 0, otherGoal, "MISS (cpu)"}, // no CPU measured is not a pass
	}
	for _, tc := range tests {
		r := caseResult{caseSpec: caseSpec{Goal: tc.goal, CPUGoal: cpuGoal}, Ratio: tc.ratio, CPURatio: tc.cpu}
		if got := verdict(r); got != tc.want {
			t.Errorf("verdict(ratio %v, cpu %v, goal %v) = %q, want %q", tc.ratio, tc.cpu, tc.goal, got, tc.want)
		}
	}
}

func TestRoundRatios(t *testing.T) {
	r := caseResult{
		Stock: side{Runs: []runResult{{BitsPerSecond: 10}, {BitsPerSecond: 20}, {BitsPerSecond: 10}}},
		Ours:  side{Runs: []runResult{{BitsPerSecond: 12}, {BitsPerSecond: 10}, {BitsPerSecond: 30}}},
	}
	r.roundRatios()
	if r.MinRatio != 0.5 || r.MaxRatio != 3 {
		t.Errorf("round ratios %v-%v, want 0.5-3", r.MinRatio, r.MaxRatio)
	}
}
