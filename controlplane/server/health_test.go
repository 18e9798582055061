package server_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/admin"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	hc "github.com/packetparamedic/reflector/controlplane/health"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
)

// grantAll grants every request without running anything, so the tests
// below see the server's health gate alone.
type grantAll struct{ server.NoSessions }

func (grantAll) Request(context.Context, server.PeerInfo, link.SessionRequest) link.Message {
	return &link.SessionGrant{TestID: "t-1", Mode: "direct_ephemeral", Port: 5201, Token: "x"}
}

// healthView is what the three consumers of the health definition say.
type healthView struct {
	httpCode int
	status   server.Status
	reply    link.Message
}

func observe(t *testing.T, h *servertest.Harness, c *client.Client) healthView {
	t.Helper()
	var v healthView
	v.httpCode, _ = health(t, "http://"+h.Server.MetricsAddr().String())
	if err := h.Admin(admin.Request{Op: admin.OpStatus}, &v.status); err != nil {
		t.Fatal(err)
	}
	reply, err := c.Call(&link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 5}})
	if err != nil {
		t.Fatal(err)
	}
	v.reply = reply
	return v
}

func failedCheck(st server.Status, name string) *hc.Check {
	for _, ch := range st.Checks {
		if ch.Name == name && !ch.OK {
			return &ch
		}
	}
	return nil
}

// TestHealthOneTruth breaks the audit log and the identity key under a
// running server and checks that /health, the admin status and the grant
// decision agree each time, and recover together.
func TestHealthOneTruth(t *testing.T) {
	key := servertest.NewKey(t)
	h := servertest.Start(t, metricsEdit(func(c *config.Config) {
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
	}), server.Options{NewSessions: func(server.Env) (server.Sessions, error) { return grantAll{}, nil }})
	c := h.Dial(key)
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	expectHealthy := func(when string) {
		t.Helper()
		v := observe(t, h, c)
		if _, granted := v.reply.(*link.SessionGrant); v.httpCode != http.StatusOK || !v.status.Healthy || !granted {
			t.Fatalf("%s: /health %d, status healthy %v %+v, reply %#v; want 200, healthy, a grant", when, v.httpCode, v.status.Healthy, v.status.Checks, v.reply)
		}
	}
	expectUnhealthy := func(when, check string) {
		t.Helper()
		v := observe(t, h, c)
		deny, denied := v.reply.(*link.SessionDeny)
		if v.httpCode != http.StatusServiceUnavailable || v.status.Healthy || !denied || deny.Reason != link.DenyResourceExhausted {
			t.Fatalf("%s: /health %d, status healthy %v, reply %#v; want 503, unhealthy, resource_exhausted", when, v.httpCode, v.status.Healthy, v.reply)
		}
		ch := failedCheck(v.status, check)
		if ch == nil || ch.Problem == "" || ch.Fix == "" {
			t.Fatalf("%s: check %s not failed with a problem and a fix: %+v", when, check, v.status.Checks)
		}
	}
	expectHealthy("at start")

	auditPath := h.Config.Logging.AuditLogPath
	keyPath := h.Config.Identity.PrivateKeyPath
	seed, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}

	// Audit log unwritable (a directory in its place: works as root too).
	if err := os.Rename(auditPath, auditPath+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(auditPath, 0o700); err != nil {
		t.Fatal(err)
	}
	expectUnhealthy("audit path is a directory", hc.Audit)
	if err := os.Remove(auditPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(auditPath+".moved", auditPath); err != nil {
		t.Fatal(err)
	}
	expectHealthy("audit log restored")

	// Identity key deleted, then replaced by another key.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	expectUnhealthy("identity key deleted", hc.Identity)
	_, other, _ := ed25519.GenerateKey(nil)
	if err := os.WriteFile(keyPath, other.Seed(), 0o600); err != nil {
		t.Fatal(err)
	}
	expectUnhealthy("identity key replaced", hc.Identity)
	if err := os.WriteFile(keyPath, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	expectHealthy("identity key restored")

	// The shipped appliance (no deny_reasons_v2) gets busy, which it can
	// decode; the denial is audited with the health problem.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	legacy := h.Dial(key)
	if _, err := legacy.Call(&link.Hello{Version: link.ProtocolVersion, Features: []string{link.FeatureThroughput, link.FeatureUDPEcho}}); err != nil {
		t.Fatal(err)
	}
	_, err = legacy.RequestSession(link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 5}})
	var de *client.DeniedError
	if !errors.As(err, &de) || de.Deny.Reason != link.DenyBusy {
		t.Fatalf("legacy client while unhealthy: %v, want a busy denial", err)
	}
	denials := servertest.FindAudit(h.AuditEvents(), audit.SessionDenied)
	if len(denials) == 0 || !strings.Contains(denials[len(denials)-1].Details["health"].(string), "identity") {
		t.Fatalf("no audited denial naming the identity problem: %+v", denials)
	}
	if _, err := identity.LoadKey(keyPath); err == nil {
		t.Fatal("the health check recreated the key file")
	}
}

// TestHealthDraining: a draining server fails the not_draining check.
func TestHealthDraining(t *testing.T) {
	h := servertest.Start(t, metricsEdit(nil), server.Options{})
	if code, hl := health(t, "http://"+h.Server.MetricsAddr().String()); code != http.StatusOK || len(hl.Checks) != len(hc.Names) {
		t.Fatalf("/health = %d %+v", code, hl)
	}
	h.Stop()
	failed := map[string]bool{}
	for _, ch := range h.Server.HealthChecks() {
		failed[ch.Name] = !ch.OK
	}
	if !failed[hc.NotDraining] || !failed[hc.Listener] || failed[hc.Identity] {
		t.Errorf("after shutdown: failed checks %v, want not_draining and listener (not identity)", failed)
	}
}
