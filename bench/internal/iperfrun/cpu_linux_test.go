package iperfrun

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name holds a space and a ')', as a crafted name may.
	line := "4242 (iperf3 (x) y) S 1 4242 4242 0 -1 4194560 150 0 0 0 250 75 0 0 20 0 1 0 12345 1000 100\n"
	got, err := parseStat([]byte(line), 100)
	if err != nil {
		t.Fatalf("parseStat: %v", err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("cpu = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 12"} {
		if _, err := parseStat([]byte(bad), 100); err == nil {
			t.Errorf("parseStat(%q) succeeded, want an error", bad)
		}
	}
}

func TestProcessCPUGrows(t *testing.T) {
	pid := os.Getpid()
	before, err := ProcessCPU(pid)
	if err != nil {
		t.Fatalf("ProcessCPU: %v", err)
	}
	// Spin (bounded) until the kernel has charged at least one more tick.
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := 0; i < 1_000_000; i++ {
			x += i
		}
		now, err := ProcessCPU(pid)
		if err != nil {
			t.Fatalf("ProcessCPU: %v", err)
		}
		if now > before {
			return
		}
	}
	t.Fatalf("cpu time stayed at %v after spinning for 5s (x=%d)", before, x)
}
