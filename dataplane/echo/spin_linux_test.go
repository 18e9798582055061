package echo

import (
	"testing"
	"time"
)

// TestSpinWindow: no spinning without Spin; otherwise Spin (at most
// MaxProbeSpin) after now, never past the next probe's send time, and up
// to the full window after the last probe.
func TestSpinWindow(t *testing.T) {
	p := &prober{cfg: ProbeConfig{Rate: 1000, Count: 10}, start: time.Now()}
	if w := p.spinWindow(1); w != 0 {
		t.Fatalf("Spin 0: window %v, want 0", w)
	}
	p.cfg.Spin = 10 * time.Millisecond // above MaxProbeSpin, below nothing else
	now := p.since()
	if w := p.spinWindow(10); w < now+MaxProbeSpin || w > p.since()+MaxProbeSpin {
		t.Fatalf("after the last probe: window ends %v, want now (%v) + MaxProbeSpin", w, now)
	}
	p.cfg.Rate = 10000 // next probe due 100 us after the first
	if w := p.spinWindow(1); w != p.due(1) {
		t.Fatalf("window ends %v, want the next send time %v", w, p.due(1))
	}
}
