//go:build stress && linux

package stress

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestStressAuditDiskFull puts the audit log on a 64 KiB tmpfs, fills it,
// and checks that grants are refused (fail closed) and that `reflector
// status` reports the failure, then frees the space and checks that
// grants resume. It needs root for the mount.
func TestStressAuditDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: mounting a tmpfs needs root; the full-disk audit test did not run")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount a 64k tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	key := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		directConfig(t, c)
		c.Access.AuthorizedPeers = []string{servertest.ID(key).String()}
		c.Logging.AuditLogPath = filepath.Join(mnt, "audit.jsonl")
		c.Metrics.ListenAddress = "127.0.0.1:0"
	}, server.Options{NewSessions: session.NewSessions})
	healthURL := "http://" + h.Server.MetricsAddr().String() + "/health"
	if code, body := health(t, healthURL); code != http.StatusOK {
		t.Fatalf("/health before the disk filled: %d %s", code, body)
	}
	cfgPath := filepath.Join(h.StateDir, "reflector.toml")
	if err := os.WriteFile(cfgPath, []byte(h.Config.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	c := dial(t, h, key)
	defer c.Close()
	echoReq := link.SessionRequest{TestType: link.TestUDPEcho, Params: link.TestParams{DurationSec: 1}}
	grantAndClose := func() error {
		g, err := c.RequestSession(echoReq)
		if err != nil {
			return err
		}
		if err := c.CloseSession(g.TestID); err != nil {
			return err
		}
		testutil.Eventually(t, 10*time.Second, "session ended", func() bool {
			r, err := c.TestResult(g.TestID)
			return err == nil && r.State != link.StateRunning
		})
		return nil
	}
	if err := grantAndClose(); err != nil {
		t.Fatalf("grant before the disk filled: %v", err)
	}

	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for i := 0; i < 64; i++ {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	_ = f.Close()

	// The audit file's last page may still hold a few lines: grant until
	// the first refusal (bounded), then check every grant is on record.
	var d *client.DeniedError
	var grantedIDs []string
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("100 grants on a full filesystem")
		}
		g, err := c.RequestSession(echoReq)
		if errors.As(err, &d) {
			break
		}
		if err != nil {
			t.Fatalf("request on a full audit filesystem: %v", err)
		}
		grantedIDs = append(grantedIDs, g.TestID)
		if err := c.CloseSession(g.TestID); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("full disk: %d grants fitted in the audit file's last page, then session_deny %s %q", len(grantedIDs), d.Deny.Reason, d.Deny.Message)
	onRecord := map[string]bool{}
	lines, _ := partialLines(t, h.Config.Logging.AuditLogPath, false)
	for _, m := range lines {
		if m["event_type"] == "session_granted" {
			onRecord[m["test_id"].(string)] = true
		}
	}
	for _, id := range grantedIDs {
		if !onRecord[id] {
			t.Fatalf("grant %s given without its audit line", id)
		}
	}
	st, code := reflectorStatus(t, cfgPath)
	if st.AuditHealthy || st.AuditError == "" || st.Healthy || code != 1 {
		t.Fatalf("reflector status on a full disk: exit %d %+v, want exit 1 and the audit failure", code, st)
	}
	t.Logf("reflector status --json: audit_healthy %v, audit_error %q", st.AuditHealthy, st.AuditError)
	code, body := health(t, healthURL)
	if code == http.StatusOK {
		t.Fatalf("/health on a full audit disk: %d %s", code, body)
	}
	t.Logf("/health on a full disk: %d %s", code, strings.TrimSpace(body))
	if _, err := c.Status(); err != nil {
		t.Fatalf("get_status with a full audit disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// The failure clears with the first audit line that is written again;
	// a request refused on the stale state writes one (its session_denied).
	var resumed error
	for attempt := 1; attempt <= 3; attempt++ {
		if resumed = grantAndClose(); resumed == nil {
			t.Logf("space back: grant succeeded at attempt %d", attempt)
			break
		}
		t.Logf("space back: attempt %d refused: %v", attempt, resumed)
	}
	if resumed != nil {
		t.Fatalf("grants did not resume after space returned: %v", resumed)
	}
	if st, code := reflectorStatus(t, cfgPath); !st.AuditHealthy || code != 0 {
		t.Fatalf("status after recovery: exit %d %+v", code, st)
	}
	if code, body := health(t, healthURL); code != http.StatusOK {
		t.Fatalf("/health after recovery: %d %s", code, body)
	}
	lines, torn := partialLines(t, h.Config.Logging.AuditLogPath, true)
	t.Logf("audit log: %d whole lines, %d torn by ENOSPC (each followed by a whole line)", len(lines), torn)
	if torn > 1 {
		t.Fatalf("%d torn audit lines for one full-disk episode", torn)
	}
}

// partialLines parses the audit log like jsonLines but tolerates lines cut
// short by ENOSPC: such a fragment must be followed by a whole line (the
// audit log starts the next line afresh). It returns the whole lines and
// the number of fragments. Unless final, the last line may be a fragment
// still waiting for its successor.
func partialLines(t *testing.T, path string, final bool) ([]map[string]any, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	torn := 0
	rows := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, row := range rows {
		var m map[string]any
		if err := json.Unmarshal([]byte(row), &m); err != nil {
			if (final && i == len(rows)-1) || !strings.HasPrefix(row, `{"timestamp":`) {
				t.Fatalf("audit line %d unreadable and not an ENOSPC fragment: %q", i+1, row)
			}
			torn++
			continue
		}
		out = append(out, m)
	}
	return out, torn
}

// health fetches /health.
func health(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// reflectorStatus runs the built `reflector status --json`.
// reflectorStatus runs `reflector status --json` and returns the status
// and the exit code (1 when unhealthy).
func reflectorStatus(t *testing.T, cfgPath string) (server.Status, int) {
	t.Helper()
	out, err := exec.Command(testutil.ReflectorBinary(t), "status", "--json", "-c", cfgPath).Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("reflector status: %v: %s", err, out)
	}
	var st server.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("reflector status output %q: %v", out, err)
	}
	return st, code
}
