package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/pairing"
	"github.com/packetparamedic/reflector/controlplane/peers"
	"github.com/packetparamedic/reflector/internal/buildinfo"
)

// DefaultAdminPairTTL is the window of `reflector pair` without --ttl.
const DefaultAdminPairTTL = 10 * time.Minute

// Status is the admin status result (`reflector status`).
type Status struct {
	EndpointID    string `json:"endpoint_id"`
	ListenAddress string `json:"listen_address"`
	// MetricsAddress is the bound /metrics and /health listener, empty
	// when [metrics] listen_address is off.
	MetricsAddress string `json:"metrics_address,omitempty"`
	// Draining is set once shutdown started.
	Draining     bool      `json:"draining,omitempty"`
	Mode         string    `json:"mode"`
	StateDir     string    `json:"state_dir"`
	ConfigSource string    `json:"config_source"`
	Version      string    `json:"version"`
	Commit       string    `json:"commit"`
	StartedAt    time.Time `json:"started_at"`
	UptimeSec    uint64    `json:"uptime_sec"`
	// Healthy is true when every health check passes (package health);
	// `reflector status` exits non-zero otherwise.
	Healthy      bool           `json:"healthy"`
	Checks       []health.Check `json:"checks"`
	AuditHealthy bool           `json:"audit_healthy"`
	AuditError   string         `json:"audit_error,omitempty"`
	Pairing      PairingStatus  `json:"pairing"`
	Peers        []peers.Entry  `json:"peers"`
	Connections  int            `json:"connections"`
	Sessions     SessionStatus  `json:"sessions"`
	Stats        Stats          `json:"stats"`
}

// PairingStatus says whether a pairing window is open.
type PairingStatus struct {
	Open      bool       `json:"open"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// handleAdmin carries out one admin socket request.
func (s *Server) handleAdmin(_ context.Context, req admin.Request) (any, error) {
	switch req.Op {
	case admin.OpPair:
		ttl := DefaultAdminPairTTL
		if req.TTLSec > 0 {
			ttl = time.Duration(req.TTLSec) * time.Second
		}
		res, err := s.openPairing(ttl, "admin")
		if errors.Is(err, pairing.ErrTTL) {
			return nil, fmt.Errorf("--ttl %v is out of range: use %v to %v", ttl, pairing.MinTTL, pairing.MaxTTL)
		}
		return res, err
	case admin.OpPeersList:
		return s.peers.List(), nil
	case admin.OpPeersAdd:
		id, err := identity.ParseEndpointID(req.ID)
		if err != nil {
			return nil, err
		}
		added, err := s.peers.Add(id, peers.SourceAdmin, req.Note)
		if err != nil {
			return nil, err
		}
		if added {
			s.log.Info().Str("peer_id", id.String()).Msg("peer added by the operator")
		}
		return admin.PeersAddResult{Added: added}, nil
	case admin.OpPeersRemove:
		id, err := identity.ParseEndpointID(req.ID)
		if err != nil {
			return nil, err
		}
		removed, err := s.peers.Remove(id)
		if err != nil {
			return nil, err
		}
		if removed {
			s.metrics.PairingEvent(metrics.PairingRemoved)
			s.writeAudit(s.log, audit.Event{EventType: audit.PeerRemoved, PeerID: id.String(), Decision: "removed", Reason: "admin"})
			s.log.Info().Str("peer_id", id.String()).Msg("peer removed by the operator")
		}
		return admin.PeersRemoveResult{Removed: removed}, nil
	case admin.OpStatus:
		return s.Status(), nil
	}
	return nil, fmt.Errorf("unknown admin operation %q", req.Op)
}

// Status describes the running server.
func (s *Server) Status() Status {
	src := s.source.Origin
	if s.source.Path != "" {
		src = s.source.Path
	}
	st := Status{
		EndpointID:   s.id.String(),
		Mode:         s.cfg.Network.Mode,
		StateDir:     s.cfg.State.Dir,
		ConfigSource: src,
		Version:      buildinfo.Version,
		Commit:       buildinfo.CommitHash(),
		AuditHealthy: true,
		Peers:        s.peers.List(),
		Sessions:     s.sessions.Status(),
		Stats:        s.Stats(),
	}
	if a := s.Addr(); a != nil {
		st.ListenAddress = a.String()
	}
	if a := s.MetricsAddr(); a != nil {
		st.MetricsAddress = a.String()
	}
	st.Draining = s.Draining()
	s.mu.Lock()
	st.StartedAt = s.started.UTC()
	st.Connections = len(s.conns)
	s.mu.Unlock()
	st.UptimeSec = uint64(s.Uptime() / time.Second)
	if err := s.AuditHealthy(); err != nil {
		st.AuditHealthy, st.AuditError = false, err.Error()
	}
	st.Checks = s.HealthChecks()
	st.Healthy = health.Healthy(st.Checks)
	if open, exp := s.pairing.Active(); open {
		e := exp.UTC()
		st.Pairing = PairingStatus{Open: true, ExpiresAt: &e}
	}
	return st
}
