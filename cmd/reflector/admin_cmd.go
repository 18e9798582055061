package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/pairing"
	"github.com/packetparamedic/reflector/controlplane/peers"
	"github.com/packetparamedic/reflector/controlplane/server"
)

// adminCall sends req to the running server of the config at cfgPath.
func adminCall(e *env, cfgPath string, req admin.Request, result any) error {
	cfg, _, _, err := loadConfig(e, cfgPath)
	if err != nil {
		return err
	}
	sock := cfg.AdminSocket()
	err = admin.Call(context.Background(), sock, req, result)
	if errors.Is(err, admin.ErrNotRunning) {
		return fmt.Errorf("no reflector answers at %s (is 'reflector serve' running with the same config?)", sock)
	}
	return err
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runPair(e *env, args []string) error {
	fs := newFlags(e, "pair")
	cfgPath := configFlag(fs)
	ttl := fs.Duration("ttl", server.DefaultAdminPairTTL, "how long the pairing window stays open (1s to 24h)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *ttl < pairing.MinTTL || *ttl > pairing.MaxTTL || *ttl%time.Second != 0 {
		return usagef("pair: --ttl %v: use whole seconds from %v to %v", *ttl, pairing.MinTTL, pairing.MaxTTL)
	}
	var res admin.PairResult
	if err := adminCall(e, *cfgPath, admin.Request{Op: admin.OpPair, TTLSec: int(*ttl / time.Second)}, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, res)
	}
	fmt.Fprintf(e.stdout, "Endpoint ID: %s\nToken:       %s\nExpires:     %s (in %v)\n\n",
		res.EndpointID, res.Token, res.ExpiresAt.UTC().Format(time.RFC3339), time.Until(res.ExpiresAt).Round(time.Second))
	fmt.Fprintf(e.stdout, "On the appliance (one use, before it expires):\n  reflector pair-with --peer HOST:PORT --token %s --expect-id %s\n", res.Token, res.EndpointID)
	return nil
}

func runPeers(e *env, args []string) error {
	fs := newFlags(e, "peers")
	cfgPath := configFlag(fs)
	note := fs.String("note", "", "note stored with 'add'")
	asJSON := fs.Bool("json", false, "print 'list' as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("peers: expected list, add ID or remove ID")
	}
	op, rest := fs.Arg(0), fs.Args()[1:]
	switch op {
	case "list":
		if len(rest) != 0 {
			return usagef("peers list: unexpected argument %q", strings.Join(rest, " "))
		}
		var list []peers.Entry
		if err := adminCall(e, *cfgPath, admin.Request{Op: admin.OpPeersList}, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, list)
		}
		if len(list) == 0 {
			fmt.Fprintln(e.stdout, "no authorized peers")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT ID\tSOURCE\tADDED\tNOTE")
		for _, p := range list {
			added := "-"
			if !p.AddedAt.IsZero() {
				added = p.AddedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.Source, added, p.Note)
		}
		return tw.Flush()
	case "add", "remove":
		if len(rest) != 1 {
			return usagef("peers %s: expected exactly one Endpoint ID", op)
		}
		id, err := identity.ParseEndpointID(rest[0])
		if err != nil {
			return usagef("peers %s: %v", op, err)
		}
		if op == "add" {
			var res admin.PeersAddResult
			if err := adminCall(e, *cfgPath, admin.Request{Op: admin.OpPeersAdd, ID: id.String(), Note: *note}, &res); err != nil {
				return err
			}
			if res.Added {
				fmt.Fprintf(e.stdout, "added %s\n", id)
			} else {
				fmt.Fprintf(e.stdout, "%s was already authorized\n", id)
			}
			return nil
		}
		var res admin.PeersRemoveResult
		if err := adminCall(e, *cfgPath, admin.Request{Op: admin.OpPeersRemove, ID: id.String()}, &res); err != nil {
			return err
		}
		if !res.Removed {
			return &exitError{code: exitFail, err: fmt.Errorf("%s is not in the allowlist", id)}
		}
		fmt.Fprintf(e.stdout, "removed %s (its open connections were closed)\n", id)
		return nil
	}
	return usagef("peers: unknown operation %q: expected list, add or remove", op)
}

func runStatus(e *env, args []string) error {
	fs := newFlags(e, "status")
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	live := fs.Bool("live", false, "liveness only: exit 0 whenever the server answers, healthy or not")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var st server.Status
	if err := adminCall(e, *cfgPath, admin.Request{Op: admin.OpStatus}, &st); err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(e, st); err != nil {
			return err
		}
	} else {
		printStatus(e, st)
	}
	if !st.Healthy && !*live {
		return &exitError{code: exitFail, err: errors.New("status: unhealthy: no tests are granted until every problem above is fixed")}
	}
	return nil
}

// printStatus writes the readable status: health first, one line for what
// is wrong and one for the fix per failed check.
func printStatus(e *env, st server.Status) {
	w := e.stdout
	if st.Healthy {
		fmt.Fprintln(w, "Health:       ok")
	} else {
		fmt.Fprintln(w, "Health:       UNHEALTHY, new tests are refused")
	}
	for _, ch := range st.Checks {
		if !ch.OK {
			fmt.Fprintf(w, "  PROBLEM (%s): %s\n  FIX: %s\n", ch.Name, ch.Problem, ch.Fix)
		}
	}
	fmt.Fprintf(w, "Endpoint ID:  %s\n", st.EndpointID)
	fmt.Fprintf(w, "Listening:    %s (mode %s)\n", st.ListenAddress, st.Mode)
	fmt.Fprintf(w, "Version:      %s (%s)\n", st.Version, st.Commit)
	fmt.Fprintf(w, "Uptime:       %v\n", time.Duration(st.UptimeSec)*time.Second)
	fmt.Fprintf(w, "State dir:    %s\n", st.StateDir)
	fmt.Fprintf(w, "Config:       %s\n", st.ConfigSource)
	if st.Pairing.Open && st.Pairing.ExpiresAt != nil {
		fmt.Fprintf(w, "Pairing:      open until %s\n", st.Pairing.ExpiresAt.Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "Pairing:      closed")
	}
	fmt.Fprintf(w, "Peers:        %d authorized\n", len(st.Peers))
	fmt.Fprintf(w, "Connections:  %d open\n", st.Connections)
	fmt.Fprintf(w, "Sessions:     %d active\n", len(st.Sessions.Active))
	for _, a := range st.Sessions.Active {
		fmt.Fprintf(w, "  %s %s %s peer %s until %s\n", a.TestID, a.TestType, a.Mode, a.PeerID, a.ExpiresAt.UTC().Format(time.RFC3339))
	}
}
