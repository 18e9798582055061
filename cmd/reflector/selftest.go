package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/controlplane/selftest"
)

// runSelfTest grades this host for 1 Gbit/s tests. Exit 0 for READY and
// DEGRADED, 2 for NOT READY. The audit append rate is measured in the
// configured audit log's directory when it exists (the disk that matters).
func runSelfTest(e *env, args []string) error {
	fs := newFlags(e, "self-test")
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dur := fs.Duration("duration", 3*time.Second, "length of the loopback iperf3 run (whole seconds; the TLS run takes 2/3 of it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *dur < time.Second || *dur > time.Minute {
		return usagef("self-test: --duration %v: must be 1s to 1m", *dur)
	}
	cfg, _, _, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	opts := selftest.Options{IperfDuration: *dur, TLSDuration: *dur * 2 / 3}
	if dir := filepath.Dir(cfg.Logging.AuditLogPath); isDir(dir) {
		opts.TempDir = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep := selftest.Run(ctx, opts)
	if *asJSON {
		err = rep.WriteJSON(e.stdout)
	} else {
		err = rep.WriteTable(e.stdout)
	}
	if err != nil {
		return err
	}
	if code := rep.ExitCode(); code != exitOK {
		return &exitError{code: code, err: errors.New("self-test: " + rep.Overall)}
	}
	return nil
}

// isDir reports whether path is an existing directory.
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
