package server

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/ratelimit"
)

// errQUICRefused refuses a QUIC handshake (the client sees
// CONNECTION_REFUSED); the reason is counted and audited.
var errQUICRefused = errors.New("quic handshake refused")

// quicGuard applies to QUIC handshakes on 4000/udp what the accept loop
// applies to TCP: new attempts per address (the same rate and burst), and
// handshakes in flight per address, per /24 or /64 and overall with a
// share kept for known addresses (an admission of its own, so spoofed UDP
// sources cannot take the TCP handshake slots). Refusals and failed
// handshakes are counted and audited in the per-source summaries like TCP
// ones. Every source must first answer a Retry, so a spoofed Initial
// draws one Retry packet, a small fraction of its own size: without it
// quic-go stops at its anti-amplification limit of 3x plus part of one
// packet (3.005x measured), and answering Retry costs a real client one
// round trip per tunneled UDP test. The per-address limits then apply to
// validated addresses only, which a spoofer cannot use to lock out
// someone else's.
type quicGuard struct {
	s       *Server
	limiter *ratelimit.Keyed
	admit   *admission
	// Counters (Stats).
	retries, refused, completed, failed atomic.Uint64
}

var _ tunnel.QUICGuard = (*quicGuard)(nil)

func newQUICGuard(s *Server) *quicGuard {
	l := s.limits
	return &quicGuard{
		s:       s,
		limiter: ratelimit.NewKeyed(l.NewConnsPerSecPerAddr, l.NewConnsBurstPerAddr, maxTrackedAddrs, nil),
		admit:   newAdmission(l),
	}
}

// NeedRetry implements tunnel.QUICGuard: every unvalidated source.
func (g *quicGuard) NeedRetry(net.Addr) bool {
	g.retries.Add(1)
	g.s.metrics.QUICHandshake(metrics.QUICRetry)
	return true
}

// Admit implements tunnel.QUICGuard.
func (g *quicGuard) Admit(remote net.Addr, _ bool) (func(bool), error) {
	addr := addrPort(remote).Addr()
	now := g.s.now()
	if !g.limiter.Allow(addr) {
		g.refuse(addr, ReasonAddrRateLimited)
		return nil, errQUICRefused
	}
	known := g.s.admit.isKnown(addr, now)
	if reason, ok := g.admit.startHandshake(addr, known); !ok {
		g.refuse(addr, reason)
		return nil, errQUICRefused
	}
	return func(completed bool) {
		g.admit.endHandshake(addr, known, false, g.s.now())
		if completed {
			g.completed.Add(1)
			g.s.metrics.QUICHandshake(metrics.QUICCompleted)
			return
		}
		g.failed.Add(1)
		g.s.metrics.QUICHandshake(metrics.QUICFailed)
		g.s.denials.drop(addr, ReasonQUICHandshakeFailed, g.s.now())
	}, nil
}

func (g *quicGuard) refuse(addr netip.Addr, reason string) {
	g.refused.Add(1)
	g.s.metrics.QUICHandshake(metrics.QUICOutcome(reason))
	g.s.denials.drop(addr, "quic_"+reason, g.s.now())
}

// ReasonQUICHandshakeFailed counts, in the audit summaries, QUIC
// handshakes that were admitted and did not complete (silent or spoofed
// sources, timeouts).
const ReasonQUICHandshakeFailed = "quic_handshake_failed"
