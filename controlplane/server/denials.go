package server

import (
	"net/netip"
	"sync"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
)

// Reasons under which refused or dropped connections are summarized in
// the audit log (rate_limited lines, details.reasons) besides the
// connection_denied reasons.
const (
	ReasonAddrRateLimited = "addr_rate_limited"
	ReasonConnLimit       = "conn_limit"
	ReasonHandshakeLimit  = "handshake_limit"
	ReasonHandshakeFailed = "handshake_failed"
)

// DefaultDenialAuditInterval is how often the aggregated denial summary
// is written.
const DefaultDenialAuditInterval = time.Minute

// maxDenialSources bounds the per-source table of the denial aggregator;
// sources beyond it are summarized together under OtherSources.
const maxDenialSources = 1024

// OtherSources is the peer_addr of the summary line that aggregates the
// sources the per-source table had no room for.
const OtherSources = "other"

// denialAggregator keeps the audit log bounded under a flood: per source
// address and interval, the first connection_denied is written in full and
// everything after it (more denials, and connections dropped before any
// identity was known: rate limits, connection and handshake limits, failed
// handshakes) is only counted, then written as one rate_limited summary
// line per source when the interval ends.
type denialAggregator struct {
	w   audit.Writer
	cap int

	mu      sync.Mutex
	start   time.Time
	sources map[netip.Addr]*denialCount
	other   denialCount
}

type denialCount struct {
	fullWritten bool
	total       uint64
	reasons     map[string]uint64
}

func newDenialAggregator(w audit.Writer, maxSources int) *denialAggregator {
	return &denialAggregator{w: w, cap: maxSources, sources: map[netip.Addr]*denialCount{}}
}

// deny records an identity-bearing denial. It returns true when the caller
// must write ev in full (the first denial of the source in this interval);
// otherwise the denial is counted for the summary.
func (d *denialAggregator) deny(addr netip.Addr, reason string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.entry(addr, now)
	if c == &d.other {
		d.count(c, reason)
		return false
	}
	if !c.fullWritten {
		c.fullWritten = true
		return true
	}
	d.count(c, reason)
	return false
}

// drop counts a connection closed before any identity was known; it is
// only ever written as part of a summary.
func (d *denialAggregator) drop(addr netip.Addr, reason string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count(d.entry(addr, now), reason)
}

// entry returns the count of addr, or the overflow entry when the table
// is full.
func (d *denialAggregator) entry(addr netip.Addr, now time.Time) *denialCount {
	if d.start.IsZero() {
		d.start = now
	}
	if c, ok := d.sources[addr]; ok {
		return c
	}
	if len(d.sources) >= d.cap {
		return &d.other
	}
	c := &denialCount{}
	d.sources[addr] = c
	return c
}

func (d *denialAggregator) count(c *denialCount, reason string) {
	if c.reasons == nil {
		c.reasons = map[string]uint64{}
	}
	c.total++
	c.reasons[reason]++
}

// flush writes one rate_limited line per source with counted attempts, and
// one for the overflow, then starts a new interval. It returns the first
// audit write error.
func (d *denialAggregator) flush(now time.Time) error {
	d.mu.Lock()
	start := d.start
	sources, other := d.sources, d.other
	d.sources, d.other, d.start = map[netip.Addr]*denialCount{}, denialCount{}, time.Time{}
	d.mu.Unlock()
	var first error
	write := func(addr string, c *denialCount) {
		if c.total == 0 {
			return
		}
		details := map[string]any{
			"count":        c.total,
			"reasons":      c.reasons,
			"window_start": start.UTC().Format(time.RFC3339),
			"window_sec":   max(1, int(now.Sub(start).Round(time.Second)/time.Second)),
		}
		err := d.w.Write(audit.Event{
			EventType: audit.RateLimited,
			PeerAddr:  addr,
			Decision:  "denied",
			Reason:    string(audit.ConnectionDenied),
			Details:   details,
		})
		if err != nil && first == nil {
			first = err
		}
	}
	for a, c := range sources {
		write(a.String(), c)
	}
	write(OtherSources, &other)
	return first
}

// runDenialFlusher flushes the denial summary every interval until the
// server's context ends, then once more.
func (s *Server) runDenialFlusher(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			s.flushDenials()
			return
		}
		s.flushDenials()
	}
}

func (s *Server) flushDenials() {
	if err := s.denials.flush(s.now()); err != nil {
		s.metrics.AuditWriteFailed()
		s.log.Error().Err(err).Msg("audit log write failed (denial summary)")
	}
}
