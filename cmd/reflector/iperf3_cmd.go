package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/packetparamedic/reflector/iperf3proto"
)

func runIperf3Server(e *env, args []string) error {
	fs := newFlags(e, "iperf3-server")
	listen := fs.String("listen", "127.0.0.1:5201", "address HOST:PORT (TCP and UDP); a non-loopback address serves anyone, unauthenticated")
	oneOff := fs.Bool("one-off", false, "serve one test, then exit")
	asJSON := fs.Bool("json", false, "JSON log lines and JSON --get-server-output")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usagef("iperf3-server: --listen %q: want HOST:PORT: %v", *listen, err)
	}
	log, err := newLogger(e.stdout, "info", *asJSON)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		log.Warn().Str("listen", *listen).Msg("iperf3-server listens beyond loopback: no authentication, no quotas, anyone who reaches this port can run tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return iperf3proto.ListenAndServe(ctx, *listen, iperf3proto.ServerConfig{
		Logger:           log,
		ServerOutputJSON: *asJSON,
	}, *oneOff)
}
