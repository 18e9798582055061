package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

func runPairWith(e *env, args []string) error {
	fs := newFlags(e, "pair-with")
	peer := fs.String("peer", "", "reflector address HOST:PORT (required)")
	token := fs.String("token", "", "pairing token printed by 'reflector pair' (required)")
	keyPath := fs.String("identity", "", "client key file, created if missing (default $XDG_CONFIG_HOME/reflector/client.ed25519)")
	expect := fs.String("expect-id", "", "refuse a reflector whose Endpoint ID differs")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *peer == "" || *token == "" {
		return usagef("pair-with: --peer and --token are required")
	}
	if _, _, err := net.SplitHostPort(*peer); err != nil {
		return usagef("pair-with: --peer %q: want HOST:PORT: %v", *peer, err)
	}
	var want identity.EndpointID
	if *expect != "" {
		id, err := identity.ParseEndpointID(*expect)
		if err != nil {
			return usagef("pair-with: --expect-id: %v", err)
		}
		want = id
	}
	key, err := loadClientKey(e, *keyPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := client.Dial(ctx, *peer, key, want)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(dl)
	}
	if _, err := c.Hello(); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("%s closed the connection: this client (%s) is not authorized there and no pairing window is open (run 'reflector pair' on the server first)", *peer, idOf(key))
		}
		return fmt.Errorf("hello: %w", err)
	}
	res, err := c.Pair(*token)
	if err != nil {
		return fmt.Errorf("pair: %w", err)
	}
	if !res.Success {
		return fmt.Errorf("pairing refused by %s: %s", *peer, res.Message)
	}
	fmt.Fprintf(e.stdout, "Paired: this client (%s) is now authorized on %s.\n", idOf(key), *peer)
	fmt.Fprintf(e.stdout, "Reflector Endpoint ID: %s (pin it with --expect-id)\n", c.ServerID())
	return nil
}
