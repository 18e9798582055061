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
	"github.com/packetparamedic/reflector/internal/filewatch"
)

// configPollInterval is how often serve checks its config file for a new
// content (see internal/filewatch).
const configPollInterval = 2 * time.Second

// lameDuck keeps srv serving but unready for sec seconds; a second SIGTERM
// or SIGINT ends the delay early (SIGHUP is ignored meanwhile).
func lameDuck(srv *server.Server, sec int, sigs <-chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					cancel()
					return
				}
			}
		}
	}()
	srv.LameDuck(ctx, time.Duration(sec)*time.Second)
}

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
	reload := func(why string) {
		log.Info().Msg(why + ": reopening the audit log and reloading authorized peers")
		next, _, _, err := loadConfig(e, *cfgPath)
		if err != nil {
			log.Error().Err(err).Msg("config reload failed; keeping the current allowlist")
			next = nil
		}
		if err := srv.Reload(next); err != nil {
			log.Error().Err(err).Msg("reload incomplete")
		}
	}
	// A changed config file reloads like SIGHUP: a Kubernetes ConfigMap
	// update reaches a scratch image, which has no kill to send SIGHUP.
	changed := make(chan string, 1)
	if src.Path != "" {
		w, err := filewatch.Start(src.Path, configPollInterval, func(target string) {
			select {
			case changed <- target:
			default: // a reload is already pending; it reads the newest file
			}
		})
		if err != nil {
			log.Warn().Err(err).Msg("not watching the config file for changes; use SIGHUP")
		} else {
			defer w.Stop()
		}
	}
	var stopSig os.Signal
	for stopSig == nil {
		select {
		case target := <-changed:
			reload("config file changed (" + target + ")")
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload("SIGHUP")
				continue
			}
			log.Info().Str("signal", sig.String()).Msg("shutting down")
			stopSig = sig
		}
	}
	lameDuck(srv, cfg.Limits.LameDuckSec, sigs)
	grace := time.Duration(cfg.Limits.ShutdownGraceSec)*time.Second + 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
