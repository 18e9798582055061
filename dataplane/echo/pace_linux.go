//go:build linux

package echo

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps the sending goroutine for the short gaps between probes.
// A Go timer cannot do that: an idle runtime waits for its next timer in
// epoll_wait, whose timeout is whole milliseconds, so every wait under 1 ms
// lasts up to 1 ms and a 10,000 pps schedule goes out as bursts of ten.
// On Linux the pacer sleeps in nanosleep(2) on its own locked thread with
// a 1 µs timer slack (the default 50 µs would add that much jitter).
type pacer struct {
	oldSlack int // the thread's timer slack before, or -1
}

// newPacer locks the calling goroutine to its thread for the run; call
// stop from the same goroutine.
func newPacer() *pacer {
	runtime.LockOSThread()
	p := &pacer{oldSlack: -1}
	if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil {
		if unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
			p.oldSlack = old
		}
	}
	return p
}

// sleep blocks the thread for d (EINTR ends it early; the caller's
// absolute schedule absorbs that).
func (p *pacer) sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	_ = unix.Nanosleep(&ts, nil)
}

// stop restores the thread's timer slack and unlocks it.
func (p *pacer) stop() {
	if p.oldSlack >= 0 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(p.oldSlack), 0, 0, 0)
	}
	runtime.UnlockOSThread()
}
