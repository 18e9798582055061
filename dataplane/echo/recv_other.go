//go:build !linux

package echo

import (
	"context"
	"net"
)

// threadLoop sends and receives on one thread of its own where the
// platform allows it; elsewhere than Linux there is none and Probe sends
// and receives through its net.Conn.
type threadLoop struct{}

// newThreadLoop returns nil: Probe then uses conn.
func newThreadLoop(net.Conn) *threadLoop { return nil }

// run is never called on a nil loop.
func (l *threadLoop) run(context.Context, *prober, chan<- error) error { return nil }

// wake does nothing.
func (l *threadLoop) wake() {}

// close does nothing.
func (l *threadLoop) close() {}
