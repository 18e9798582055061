package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/identity"
)

// auditPoll is how often `reflector audit --follow` looks for new lines.
const auditPoll = 250 * time.Millisecond

// runAudit prints the configured audit log: a table, or the raw JSON
// lines with --json; --follow keeps printing new lines (through logrotate)
// until interrupted.
func runAudit(e *env, args []string) error {
	fs := newFlags(e, "audit")
	cfgPath := configFlag(fs)
	follow := fs.BoolP("follow", "f", false, "keep printing new lines until interrupted (without --since: only new ones)")
	since := fs.Duration("since", 0, "only events of the last DURATION (e.g. 30m, 24h)")
	event := fs.String("event", "", "only events of this type (e.g. session_granted, session_denied, connection_denied)")
	peer := fs.String("peer", "", "only events of this peer Endpoint ID")
	asJSON := fs.Bool("json", false, "print the raw JSON lines (for jq)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *since < 0 {
		return usagef("audit: --since %v: must be positive", *since)
	}
	f := audit.Filter{Event: audit.EventType(*event)}
	if *peer != "" {
		id, err := identity.ParseEndpointID(*peer)
		if err != nil {
			return usagef("audit: --peer: %v", err)
		}
		f.Peer = id.String()
	}
	switch {
	case *since > 0:
		f.Since = time.Now().Add(-*since)
	case *follow:
		f.Since = time.Now()
	}
	cfg, _, _, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	show := func(r audit.Record) error { return printAuditLine(e.stdout, r, *asJSON) }
	path := cfg.Logging.AuditLogPath
	if !*follow {
		st, err := audit.Read(path, f, show)
		noteSkipped(e, st)
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := audit.Follow(ctx, path, f, auditPoll, show)
	noteSkipped(e, st)
	return err
}

func noteSkipped(e *env, st audit.ReadStats) {
	if st.Malformed > 0 {
		fmt.Fprintf(e.stderr, "note: %d damaged audit line(s) skipped (a write torn by a full disk)\n", st.Malformed)
	}
	if st.Incomplete {
		fmt.Fprintln(e.stderr, "note: the log ends inside a line (being written, or torn): not shown")
	}
}

// printAuditLine writes r raw or as one readable line: time, event type,
// peer, then the fields that are set.
func printAuditLine(w io.Writer, r audit.Record, raw bool) error {
	if raw {
		_, err := fmt.Fprintf(w, "%s\n", r.Raw)
		return err
	}
	ev := r.Event
	peer := ev.PeerID
	if peer == "" {
		peer = "-"
	}
	var kv []string
	add := func(k, v string) {
		if v != "" {
			kv = append(kv, k+"="+v)
		}
	}
	add("addr", ev.PeerAddr)
	add("test", ev.TestType)
	add("id", ev.TestID)
	add("decision", ev.Decision)
	add("reason", ev.Reason)
	if ev.BytesTransferred != nil {
		add("bytes", strconv.FormatInt(*ev.BytesTransferred, 10))
	}
	if ev.DurationSec != nil {
		add("duration", strconv.FormatFloat(*ev.DurationSec, 'f', 1, 64)+"s")
	}
	if m, ok := ev.Details["message"].(string); ok {
		add("message", strconv.Quote(m))
	}
	_, err := fmt.Fprintf(w, "%s  %-20s %s  %s\n", ev.Timestamp.UTC().Format(time.RFC3339), ev.EventType, peer, strings.Join(kv, " "))
	return err
}
