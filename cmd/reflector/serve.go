package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/controlplane/metrics"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/buildinfo"
)

func runServe(e *env, args []string) error {
	fs := newFlags(e, "serve")
	cfgPath := configFlag(fs)
	bind := fs.String("bind", "", "listen address HOST:PORT for pp-link/1 (overrides [network] listen_address)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *bind != "" {
		if _, _, err := net.SplitHostPort(*bind); err != nil {
			return usagef("--bind %q: want HOST:PORT (e.g. 0.0.0.0:4000): %v", *bind, err)
		}
	}
	cfg, src, notes, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	if *bind != "" {
		cfg.Network.ListenAddress = *bind
	}
	log, err := newLogger(e.stdout, cfg.Logging.Level, false)
	if err != nil {
		return err
	}
	for _, n := range notes {
		log.Warn().Msg(n)
	}

	// Signals are caught before anything binds, so none is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	srv, err := server.New(cfg, server.Options{
		Logger: log, Source: src, NewSessions: session.NewSessions,
		Metrics: metrics.New(buildinfo.Version, buildinfo.CommitHash()),
	})
	if err != nil {
		return err
	}
	if err := srv.Start(context.Background()); err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			log.Info().Msg("SIGHUP: reopening the audit log and reloading authorized peers")
			next, _, _, err := loadConfig(e, *cfgPath)
			if err != nil {
				log.Error().Err(err).Msg("config reload failed; keeping the current allowlist")
				next = nil
			}
			if err := srv.Reload(next); err != nil {
				log.Error().Err(err).Msg("reload incomplete")
			}
			continue
		}
		log.Info().Str("signal", sig.String()).Msg("shutting down")
		break
	}
	grace := time.Duration(cfg.Limits.ShutdownGraceSec)*time.Second + 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
