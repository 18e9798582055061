//go:build stress && linux

package stress

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestMain raises the descriptor limit; testutil.Run removes the binary
// testutil.ReflectorBinary builds for the process tests.
func TestMain(m *testing.M) {
	raiseNOFILE()
	os.Exit(testutil.Run(m))
}

// raiseNOFILE lifts the soft descriptor limit to the hard one: the floods
// and the thousand idle peers hold both ends of every connection here.
func raiseNOFILE() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// needFDs skips when the descriptor limit cannot hold n.
func needFDs(t *testing.T, n uint64) {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur < n {
		t.Skipf("RLIMIT_NOFILE %d below the %d this test needs", l.Cur, n)
	}
}

// fdCount is the number of open descriptors of this process.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count descriptors: %v", err)
	}
	return len(ents)
}

// vmRSS returns the VmRSS line of /proc/PID/status in KiB ("self" for us).
func vmRSS(pid string) int {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// heapInuse runs the GC and returns the live heap.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// settle polls until goroutines and descriptors are back to at most
// their baselines (plus slack), failing with both counts otherwise.
func settle(t *testing.T, what string, goroutines, fds, slack int) (int, int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, f := runtime.NumGoroutine(), fdCount(t)
		if g <= goroutines+slack && f <= fds+slack {
			return g, f
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%s: goroutines %d (baseline %d), descriptors %d (baseline %d)\n%s", what, g, goroutines, f, fds, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// directConfig switches cfg to direct_ephemeral with a free 10-port range
// and generous quotas.
func directConfig(t testing.TB, c *config.Config) {
	c.Network.Mode = config.ModeDirectEphemeral
	base := testutil.PortRange(t, 10)
	c.Network.DataPortRangeStart, c.Network.DataPortRangeEnd = base, base+9
	c.Quotas.MaxConcurrentTests = 8
	c.Quotas.MaxTestsPerHourPerPeer = 100000
	c.Quotas.CooldownSec = 0
	c.Quotas.MaxBytesPerDayPerPeer = 1 << 50
	c.Limits.NewConnsPerSecPerAddr = 100000
	c.Limits.NewConnsBurstPerAddr = 100000
	// The load comes from one loopback address and a few keys, which the
	// per-source caps exist to refuse.
	c.Limits.MaxConnsPerPeer = 100000
	c.Limits.MaxConnsPerAddr = 100000
	c.Limits.MaxHandshakesPerAddr = 64
}

// dial connects key to the harness with a call timeout.
func dial(t *testing.T, h *servertest.Harness, key ed25519.PrivateKey) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.Addr, key, h.Server.EndpointID())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Timeout = 15 * time.Second
	return c
}

// jsonLines parses every line of path as a JSON object, failing on a torn
// or otherwise unparsable line, and returns the objects.
func jsonLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s line %d is not whole JSON: %v: %q", path, i+1, err, line)
		}
		out = append(out, m)
	}
	return out
}

// settleNow lets the start-up settle briefly and returns the baselines.
func settleNow(t *testing.T) (goroutines, fds int, heap uint64) {
	t.Helper()
	heap = heapInuse()
	return runtime.NumGoroutine(), fdCount(t), heap
}

// tlsClient is an attacker's TLS client with cert; it verifies nothing.
func tlsClient(nc net.Conn, cert tls.Certificate) *tls.Conn {
	return tls.Client(nc, &tls.Config{
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // attackers do not care who answers
		NextProtos:         []string{"pp-link/1"},
		MinVersion:         tls.VersionTLS13,
	})
}
