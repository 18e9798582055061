package session

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/packetparamedic/reflector/controlplane/quota"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/dataplane/portpool"
	"github.com/packetparamedic/reflector/dataplane/udpaccept"
)

// openUDPAcceptor opens dataplane/udpaccept's acceptor, taking streams
// only from allow.
func openUDPAcceptor(ctx context.Context, addr string, allow netip.Addr) (udpAcceptor, error) {
	return udpaccept.NewAcceptor(ctx, addr, func(from netip.AddrPort) bool { return from.Addr() == allow })
}

// NewSessions builds the Manager from a server's Env, for
// server.Options.NewSessions: it loads the persisted quota accounting
// (a corrupt quota file stops the start) and lends the data ports of
// [network] data_port_range_start..end through dataplane/portpool.
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
	ports, err := portpool.New(cfg.Network.DataPortRangeStart, cfg.Network.DataPortRangeEnd)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	return New(Options{
		Config:  cfg,
		Audit:   env.Audit,
		Quota:   q,
		Ports:   ports,
		Logger:  env.Logger.With().Str("component", "sessions").Logger(),
		Metrics: env.Metrics,
		Now:     env.Now,
		openUDP: openUDPAcceptor,
	})
}
