//go:build !linux

package echo

import "time"

// pacer sleeps the sending goroutine for the short gaps between probes;
// elsewhere than Linux it is time.Sleep.
type pacer struct{}

// newPacer returns the portable pacer.
func newPacer() *pacer { return &pacer{} }

// sleep blocks for about d.
func (p *pacer) sleep(d time.Duration) { time.Sleep(d) }

// stop releases the pacer.
func (p *pacer) stop() {}
