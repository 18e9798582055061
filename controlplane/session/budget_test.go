package session

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestByteBudgetOvershoot: a 300 MB daily budget is cut within 1% of the
// budget with stock iperf3 -P 4 at full loopback speed (several Gbit/s),
// upload and download: the bytes the engine counted (session_completed
// bytes_transferred) never pass the budget by more than 1%. With the bytes
// only metered every 200 ms, a 7.6 Gbit/s test was cut at 444.7 MB (+48%).
func TestByteBudgetOvershoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs stock iperf3 at full speed")
	}
	bin := testutil.LookBinary(t, "iperf3")
	const budget = 300_000_000
	for _, reverse := range []bool{false, true} {
		t.Run("reverse="+strconv.FormatBool(reverse), func(t *testing.T) {
			f := newFixture(t, func(c *config.Config) { c.Quotas.MaxBytesPerDayPerPeer = budget })
			g := mustGrant(t, f.m.Request(context.Background(), f.peer, throughputReq(20, 4, reverse)))
			args := []string{"-c", "127.0.0.1", "-p", strconv.Itoa(g.Port), "-t", "20", "-P", "4"}
			if reverse {
				args = append(args, "-R")
			}
			start := time.Now()
			// The client fails when the server cuts the test off.
			_ = exec.Command(bin, args...).Run()
			ev := f.waitEnded(t, g.TestID, 40*time.Second)
			got := *ev.BytesTransferred
			over := float64(got-budget) / budget * 100
			t.Logf("budget %d, counted %d (%+.2f%%), reason %s, %.1f s, about %.1f Gbit/s",
				budget, got, over, ev.Reason, time.Since(start).Seconds(), float64(got)*8/time.Since(start).Seconds()/1e9)
			if ev.Reason != EndQuotaExceeded {
				t.Fatalf("ended %s, want %s", ev.Reason, EndQuotaExceeded)
			}
			if got > budget+budget/100 {
				t.Fatalf("counted %d bytes: %.2f%% over the %d byte budget (limit 1%%)", got, over, budget)
			}
		})
	}
}
