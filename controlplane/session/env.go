package session

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server"
)

// ErrNoPort is returned by the port range when no port of it could be
// opened.
var ErrNoPort = errors.New("no free data port in the range")

// portRange lends the ports of [start, end], skipping leased ones and ports
// whose listeners cannot be opened (busy in the system).
type portRange struct {
	start, end int

	mu     sync.Mutex
	leased map[int]bool
	next   int // where the next search starts, so ports rotate
}

var _ Ports = (*portRange)(nil)

func newPortRange(start, end int) *portRange {
	return &portRange{start: start, end: end, leased: map[int]bool{}, next: start}
}

// Acquire implements Ports.
func (p *portRange) Acquire(try func(port int) error) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.end - p.start + 1
	var errs []error
	for i := range n {
		port := p.start + (p.next-p.start+i)%n
		if p.leased[port] {
			continue
		}
		if err := try(port); err != nil {
			errs = append(errs, err)
			continue
		}
		p.leased[port] = true
		p.next = port + 1
		return port, nil
	}
	return 0, fmt.Errorf("ports %d-%d: %w (%d busy elsewhere, %d leased)", p.start, p.end, ErrNoPort, len(errs), len(p.leased))
}

// Release implements Ports.
func (p *portRange) Release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.leased, port)
}

// NewSessions builds the Manager from a server's Env, for
// server.Options.NewSessions: it loads the persisted quota accounting
// (a corrupt quota file stops the start) and lends the data ports of
// [network] data_port_range_start..end.
func NewSessions(env server.Env) (server.Sessions, error) {
	cfg := env.Config
	q, err := quota.Open(cfg.QuotaFile(), quota.Limits{
		MaxTestsPerHour: cfg.Quotas.MaxTestsPerHourPerPeer,
		Cooldown:        time.Duration(cfg.Quotas.CooldownSec) * time.Second,
		MaxBytesPerDay:  cfg.Quotas.MaxBytesPerDayPerPeer,
	})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	if env.Audit == nil {
		return nil, errors.New("sessions: no audit log")
	}
	return New(Options{
		Config:       cfg,
		Audit:        env.Audit,
		AuditHealthy: env.AuditHealthy,
		Quota:        q,
		Ports:        newPortRange(cfg.Network.DataPortRangeStart, cfg.Network.DataPortRangeEnd),
		Logger:       env.Logger.With().Str("component", "sessions").Logger(),
		Now:          env.Now,
	})
}
