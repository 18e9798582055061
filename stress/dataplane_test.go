//go:build stress && linux

package stress

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
)

const (
	planeSessions = 200
	planeWorkers  = 8 // = quotas.max_concurrent_tests
)

// Endings of a session in TestStressDataPlaneClosed.
var endings = []string{"normal", "client_vanished", "deadline", "session_close", "control_dropped"}

// TestStressDataPlaneClosed runs 200 one-second sessions, throughput and
// udp_echo, each ending one of five ways (normal, client vanished,
// deadline, session_close, control connection dropped), eight at a time.
// Every session must be audited as completed, and afterwards no port of
// the data range accepts a connection or is bound, and no goroutine or
// descriptor is left over.
func TestStressDataPlaneClosed(t *testing.T) {
	keys := make([]ed25519.PrivateKey, planeWorkers)
	ids := make([]string, planeWorkers)
	for i := range keys {
		keys[i] = servertest.NewKey(t)
		ids[i] = servertest.ID(keys[i]).String()
	}
	h := servertest.Start(t, func(c *config.Config) {
		directConfig(t, c)
		c.Quotas.MaxConcurrentTests = planeWorkers
		c.Access.AuthorizedPeers = ids
	}, server.Options{NewSessions: session.NewSessions})
	g0, f0, _ := settleNow(t)
	start := time.Now()

	var mu sync.Mutex
	granted := map[string]string{} // test ID -> ending
	var wg sync.WaitGroup
	errc := make(chan error, planeWorkers)
	for w := range planeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, h, keys[w])
			defer c.Close()
			for i := w; i < planeSessions; i += planeWorkers {
				ending := endings[i%len(endings)]
				echoTest := (i/len(endings))%2 == 1
				id, err := oneSession(h, keys[w], c, ending, echoTest)
				if err != nil {
					errc <- fmt.Errorf("session %d (%s, echo %v): %w", i, ending, echoTest, err)
					return
				}
				mu.Lock()
				granted[id] = ending
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("%d sessions in %v", len(granted), time.Since(start).Round(time.Millisecond))
	if len(granted) != planeSessions {
		t.Fatalf("%d sessions granted, want %d", len(granted), planeSessions)
	}

	reasons := map[string]int{}
	for _, e := range servertest.FindAudit(h.AuditEvents(), audit.SessionCompleted) {
		if _, ok := granted[e.TestID]; ok {
			reasons[granted[e.TestID]+"->"+e.Reason]++
			delete(granted, e.TestID)
		}
	}
	t.Logf("endings (ours -> audited reason): %v", reasons)
	if len(granted) != 0 {
		t.Fatalf("%d granted sessions never audited as completed: %v", len(granted), granted)
	}

	cfg := h.Config
	for p := cfg.Network.DataPortRangeStart; p <= cfg.Network.DataPortRangeEnd; p++ {
		addr := "127.0.0.1:" + strconv.Itoa(p)
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			t.Fatalf("data port %d still accepts TCP connections", p)
		}
		for _, network := range []string{"tcp", "udp"} {
			if err := bindFree(network, p); err != nil {
				t.Fatalf("data port %d/%s still bound: %v", p, network, err)
			}
		}
	}
	g1, f1 := settle(t, "after 200 sessions", g0, f0, 0)
	t.Logf("goroutines %d -> %d, descriptors %d -> %d, RSS %d KiB", g0, g1, f0, f1, vmRSS("self"))
}

// bindFree binds the wildcard address on port and releases it.
func bindFree(network string, port int) error {
	addr := ":" + strconv.Itoa(port)
	if network == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

// oneSession runs one session of the given ending and waits until the
// reflector has ended it; it returns the test ID.
func oneSession(h *servertest.Harness, key ed25519.PrivateKey, c *client.Client, ending string, echoTest bool) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req := link.SessionRequest{TestType: link.TestThroughput, Params: link.TestParams{DurationSec: 1}}
	if echoTest {
		req.TestType = link.TestUDPEcho
	}
	var id string
	switch ending {
	case "normal", "client_vanished":
		runCtx := ctx
		if ending == "client_vanished" {
			var stop context.CancelFunc
			runCtx, stop = context.WithTimeout(ctx, 300*time.Millisecond)
			defer stop()
		}
		var err error
		if echoTest {
			var rep *client.EchoReport
			rep, err = c.RunEcho(runCtx, "127.0.0.1", client.EchoOptions{Duration: time.Second, Rate: 200, Size: 64}, nil)
			if rep != nil {
				id = rep.Grant.TestID
			}
		} else {
			var rep *client.ThroughputReport
			rep, err = c.RunThroughput(runCtx, "127.0.0.1", client.ThroughputOptions{Duration: time.Second, Streams: 2}, nil)
			if rep != nil {
				id = rep.Grant.TestID
			}
		}
		if ending == "normal" && err != nil {
			return id, err
		}
		if id == "" {
			return "", fmt.Errorf("no grant (%v)", err)
		}
	case "deadline", "session_close":
		g, err := c.RequestSession(req)
		if err != nil {
			return "", err
		}
		id = g.TestID
		if ending == "session_close" {
			if err := c.CloseSession(id); err != nil {
				return id, err
			}
		}
	case "control_dropped":
		other := dialCtx(ctx, h, key)
		if other == nil {
			return "", errors.New("second control connection refused")
		}
		g, err := other.RequestSession(req)
		_ = other.Close()
		if err != nil {
			return "", err
		}
		id = g.TestID
	}
	for {
		r, err := c.TestResult(id)
		if err != nil {
			return id, fmt.Errorf("test_result: %w", err)
		}
		if r.State != link.StateRunning {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return id, fmt.Errorf("session %s (%s) still running after 60 s", id, ending)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func dialCtx(ctx context.Context, h *servertest.Harness, key ed25519.PrivateKey) *client.Client {
	c, err := client.Dial(ctx, h.Addr, key, h.Server.EndpointID())
	if err != nil {
		return nil
	}
	c.Timeout = 15 * time.Second
	return c
}
