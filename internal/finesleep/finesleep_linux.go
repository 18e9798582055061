//go:build linux

// Package finesleep sleeps a goroutine for sub-millisecond gaps.
//
// A Go timer cannot do that: an idle runtime waits for its next timer in
// epoll_wait, whose timeout is whole milliseconds, so every wait under
// 1 ms lasts up to 1 ms (a 10,000 pps schedule goes out as bursts of
// ten). On Linux a Sleeper sleeps in nanosleep(2) on its goroutine's own
// locked thread with a 1 us timer slack (the default 50 us would add that
// much jitter); elsewhere it is time.Sleep.
package finesleep

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Sleeper sleeps the goroutine that made it; it is not safe for
// concurrent use.
type Sleeper struct {
	oldSlack int // the thread's timer slack before, or -1
}

// New locks the calling goroutine to its thread until Stop, which the
// same goroutine must call.
func New() *Sleeper {
	runtime.LockOSThread()
	s := &Sleeper{oldSlack: -1}
	if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil {
		if unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
			s.oldSlack = old
		}
	}
	return s
}

// Sleep blocks the thread for d (EINTR ends it early; callers that keep
// an absolute schedule absorb that).
func (s *Sleeper) Sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	_ = unix.Nanosleep(&ts, nil)
}

// Stop restores the thread's timer slack and unlocks it.
func (s *Sleeper) Stop() {
	if s.oldSlack >= 0 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(s.oldSlack), 0, 0, 0)
	}
	runtime.UnlockOSThread()
}
