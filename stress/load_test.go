//go:build stress && linux

package stress

import (
	"context"
	"crypto/ed25519"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
)

const (
	idlePeers    = 1000
	idleKeys     = 10
	dialWorkers  = 32
	loadTestSecs = 3
	// loadBitrate paces the throughput test at about a quarter of what
	// one unpaced stream reaches on loopback here (12-16 Gbit/s on two
	// cores): the clients, the server and the status sweep share this
	// process's CPUs, and an unpaced test would measure the CPU the sweep
	// takes rather than what the idle connections cost the server.
	loadBitrate = 3_000_000_000
	// sweepInFlight bounds the get_status calls in flight at once.
	sweepInFlight = 100
)

// TestStressLoadHeld holds 1,000 authorized idle control connections while
// one throughput test runs: every connection answers get_status within
// 1 s during the test, and the test's throughput is within 10% of the same
// test run just before without the idle connections (one retry of the
// pair on a miss; the test is paced, see loadBitrate). It reports the process RSS (server and clients share
// this process).
func TestStressLoadHeld(t *testing.T) {
	needFDs(t, 2*idlePeers+500)
	keys := make([]ed25519.PrivateKey, idleKeys)
	ids := make([]string, idleKeys+1)
	for i := range keys {
		keys[i] = servertest.NewKey(t)
		ids[i] = servertest.ID(keys[i]).String()
	}
	tester := servertest.NewKey(t)
	ids[idleKeys] = servertest.ID(tester).String()
	h := servertest.Start(t, func(c *config.Config) {
		directConfig(t, c)
		c.Access.AuthorizedPeers = ids
		c.Limits.MaxControlConnections = idlePeers + 100
	}, server.Options{NewSessions: session.NewSessions})
	rss0 := vmRSS("self")
	tc := dial(t, h, tester)
	defer tc.Close()

	throughput := func() float64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rep, err := tc.RunThroughput(ctx, "127.0.0.1", client.ThroughputOptions{Duration: loadTestSecs * time.Second, Streams: 1, Bitrate: loadBitrate}, nil)
		if err != nil {
			t.Fatalf("throughput test: %v", err)
		}
		return rep.Client.Upload.ReceiverBitsPerSecond()
	}

	var idle []*client.Client
	openIdle := func() {
		start := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		var next int
		var dialErr error
		for range dialWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= idlePeers {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					c, err := client.Dial(ctx, h.Addr, keys[i%idleKeys], h.Server.EndpointID())
					cancel()
					mu.Lock()
					if err != nil {
						dialErr = err
					} else {
						c.Timeout = 10 * time.Second
						idle = append(idle, c)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if dialErr != nil {
			t.Fatalf("open idle connections: %v", dialErr)
		}
		t.Logf("%d idle authorized connections open in %v", len(idle), time.Since(start).Round(time.Millisecond))
	}
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()

	// sweep asks every idle connection for its status, sweepInFlight at a
	// time (peers that poll on their own schedules, not one synchronized
	// herd), and returns the latencies, sorted.
	sweep := func() []time.Duration {
		lat := make([]time.Duration, len(idle))
		errs := make([]error, len(idle))
		var wg sync.WaitGroup
		sem := make(chan struct{}, sweepInFlight)
		for i, c := range idle {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				t0 := time.Now()
				_, errs[i] = c.Status()
				lat[i] = time.Since(t0)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("idle connection %d: get_status: %v", i, err)
			}
		}
		slices.Sort(lat)
		return lat
	}

	var base, loaded float64
	var lat []time.Duration
	for attempt := 1; attempt <= 2; attempt++ {
		for _, c := range idle {
			_ = c.Close()
		}
		idle = nil
		base = throughput()
		openIdle()
		rss := vmRSS("self")
		t.Logf("RSS with %d idle connections: %d KiB (before any: %d KiB)", len(idle), rss, rss0)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Second) // into the running test; not a synchronisation
			lat = sweep()
		}()
		loaded = throughput()
		wg.Wait()
		ratio := loaded / base
		t.Logf("attempt %d: baseline %.0f Mbit/s, with %d idle peers %.0f Mbit/s (%.1f%%); get_status during the test: p50 %v, p99 %v, max %v",
			attempt, base/1e6, len(idle), loaded/1e6, 100*ratio, pct(lat, 50), pct(lat, 99), lat[len(lat)-1])
		if lat[len(lat)-1] > time.Second {
			if attempt == 2 {
				t.Fatalf("slowest get_status %v, want within 1 s", lat[len(lat)-1])
			}
			continue
		}
		if ratio >= 0.9 {
			break
		}
		if attempt == 2 {
			t.Fatalf("throughput with the idle load %.1f%% of the baseline, want at least 90%%", 100*ratio)
		}
	}
	after := sweep()
	t.Logf("get_status after the test: max %v; RSS %d KiB, server stats %+v", after[len(after)-1], vmRSS("self"), h.Server.Stats())
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100].Round(time.Microsecond)
}

// TestStressLoadHeldBinaryRSS measures what the server alone holds for
// 1,000 idle authorized connections: the built binary's VmRSS before and
// after they are opened, every one still answering get_status.
func TestStressLoadHeldBinaryRSS(t *testing.T) {
	needFDs(t, idlePeers+500)
	owner := servertest.NewKey(t)
	b := newBinServer(t, owner)
	first := b.start(owner)
	defer first.Close()
	pid := strconv.Itoa(b.cmd.Process.Pid)
	rss0 := vmRSS(pid)
	conns := make([]*client.Client, 0, idlePeers)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for len(conns) < idlePeers {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := client.Dial(ctx, b.cfg.Network.ListenAddress, owner, "")
		cancel()
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(conns), err)
		}
		c.Timeout = 10 * time.Second
		conns = append(conns, c)
	}
	var slowest time.Duration
	for i, c := range conns {
		t0 := time.Now()
		if _, err := c.Status(); err != nil {
			t.Fatalf("idle connection %d: get_status: %v", i, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	rss1 := vmRSS(pid)
	t.Logf("reflector binary VmRSS: %d KiB with 1 connection, %d KiB with %d idle connections (%.1f KiB each); slowest get_status %v",
		rss0, rss1, len(conns)+1, float64(rss1-rss0)/float64(len(conns)), slowest)
	if slowest > time.Second {
		t.Fatalf("slowest get_status %v, want within 1 s", slowest)
	}
}
