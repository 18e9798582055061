//go:build !linux

// Package finesleep sleeps a goroutine for sub-millisecond gaps: on Linux
// in nanosleep(2) on a locked thread, elsewhere with time.Sleep.
package finesleep

import "time"

// Sleeper sleeps the goroutine that made it.
type Sleeper struct{}

// New returns the portable Sleeper.
func New() *Sleeper { return &Sleeper{} }

// Sleep blocks for about d.
func (s *Sleeper) Sleep(d time.Duration) { time.Sleep(d) }

// Stop releases the Sleeper.
func (s *Sleeper) Stop() {}
