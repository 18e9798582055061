package server

import (
	"context"
	"time"
)

// LameDuck reports the server unready (/health 503 "draining", `status`
// draining, reflector_health_ok{check="draining"} 0) for d, or until ctx
// ends, while it keeps accepting connections and granting sessions: a
// load balancer or Kubernetes takes the endpoint out of rotation before
// Shutdown closes the listener, so nothing in flight is refused. d <= 0
// returns at once. Call Shutdown afterwards.
func (s *Server) LameDuck(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	s.lameDuck.Store(true)
	s.log.Info().Dur("delay", d).Msg("lame duck: reporting unready before the listener closes")
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
