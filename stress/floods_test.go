//go:build stress && linux

package stress

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/controlplane/session"
)

const (
	silentFlood      = 5000 // TCP connections that never send a ClientHello
	silentInFlight   = 400
	handshakeFlood   = 2000 // full TLS handshakes from unknown peers
	handshakeWorkers = 16
	attackerSources  = 50 // 127.0.1.1 .. 127.0.1.50
)

func attackerAddr(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%attackerSources))}
}

// TestStressFloods: 5,000 silent TCP connections and 2,000 TLS handshakes
// from unknown peers, from 50 source addresses, while an authorized peer
// says hello and runs a throughput test. The peer succeeds, every silent
// connection is dropped by the handshake timeout, every unknown peer is
// denied, the audit log stays small (aggregated denials), and goroutines,
// descriptors and the heap return to their baselines.
func TestStressFloods(t *testing.T) {
	needFDs(t, 4*silentInFlight+1000)
	peerKey := servertest.NewKey(t)
	h := servertest.Start(t, func(c *config.Config) {
		directConfig(t, c)
		c.Access.AuthorizedPeers = []string{servertest.ID(peerKey).String()}
		c.Limits.HandshakeTimeoutSec = 1
		c.Limits.MaxHandshakes = 1024
		c.Limits.MaxControlConnections = 4096
	}, server.Options{NewSessions: session.NewSessions})
	g0, f0, heap0 := settleNow(t)
	t.Logf("baseline: %d goroutines, %d descriptors, heap %d KiB, RSS %d KiB", g0, f0, heap0>>10, vmRSS("self"))
	start := time.Now()

	var wg sync.WaitGroup
	var silentDropped, silentOpen, silentErr atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		sem := make(chan struct{}, silentInFlight)
		var inner sync.WaitGroup
		for i := range silentFlood {
			sem <- struct{}{}
			inner.Add(1)
			go func() {
				defer func() { <-sem; inner.Done() }()
				d := net.Dialer{LocalAddr: attackerAddr(i), Timeout: 10 * time.Second}
				nc, err := d.Dial("tcp", h.Addr)
				if err != nil {
					silentErr.Add(1)
					return
				}
				defer nc.Close()
				_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err = nc.Read(make([]byte, 1))
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					silentDropped.Add(1)
				} else {
					silentOpen.Add(1)
				}
			}()
		}
		inner.Wait()
	}()

	keys := make([]ed25519.PrivateKey, 20)
	certs := make([]tls.Certificate, len(keys))
	for i := range keys {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		if certs[i], err = identity.NewCertificate(k); err != nil {
			t.Fatal(err)
		}
	}
	var tlsDenied, tlsServed, tlsErr atomic.Int64
	var next atomic.Int64
	for range handshakeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= handshakeFlood {
					return
				}
				d := net.Dialer{LocalAddr: attackerAddr(i), Timeout: 10 * time.Second}
				nc, err := d.Dial("tcp", h.Addr)
				if err != nil {
					tlsErr.Add(1)
					continue
				}
				tc := tlsClient(nc, certs[i%len(certs)])
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					tlsDenied.Add(1) // refused within the handshake also counts as denied
					_ = nc.Close()
					continue
				}
				// A refused key reads the server's error frame, then EOF.
				_, err = io.Copy(io.Discard, tc)
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					tlsDenied.Add(1)
				} else {
					tlsServed.Add(1)
				}
				_ = nc.Close()
			}
		}()
	}

	// The authorized peer, in the middle of the floods.
	time.Sleep(500 * time.Millisecond) // let the floods build up first; not a synchronisation
	c := dial(t, h, peerKey)
	if _, err := c.Hello(); err != nil {
		t.Fatalf("authorized hello during the floods: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	rep, err := c.RunThroughput(ctx, "127.0.0.1", client.ThroughputOptions{Duration: 2 * time.Second, Streams: 2}, nil)
	cancel()
	if err != nil {
		t.Fatalf("authorized throughput test during the floods: %v", err)
	}
	if rep.Client == nil || rep.Client.Upload == nil || rep.Client.Upload.ReceivedBytes == 0 {
		t.Fatalf("authorized test moved no bytes: %+v", rep)
	}
	t.Logf("authorized peer: hello ok, 2 s throughput test %.0f Mbit/s during the floods (RSS %d KiB, %d goroutines)",
		rep.Client.Upload.ReceiverBitsPerSecond()/1e6, vmRSS("self"), runtime.NumGoroutine())
	_ = c.Close()

	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("floods done in %v: silent dropped %d, left open %d, dial errors %d; TLS denied %d, served %d, errors %d",
		elapsed.Round(time.Millisecond), silentDropped.Load(), silentOpen.Load(), silentErr.Load(), tlsDenied.Load(), tlsServed.Load(), tlsErr.Load())
	if silentDropped.Load() != silentFlood || tlsDenied.Load() != handshakeFlood {
		t.Fatalf("not every attacker was dropped or denied")
	}
	st := h.Server.Stats()
	t.Logf("server stats %+v", st)
	// A TLS attacker whose handshake the loaded box could not finish
	// within the 1 s timeout counts as a failed handshake, not a denial;
	// silent connections beyond an address's or a prefix's share of
	// handshakes are refused at accept (handshake limits).
	refused := st.HandshakeFailed + st.HandshakeLimited
	if refused < silentFlood || refused+st.Denied < silentFlood+handshakeFlood || st.Accepted != 1 {
		t.Fatalf("stats %+v: want %d failed or refused handshakes or denials (at least %d failed or refused), 1 accepted", st, silentFlood+handshakeFlood, silentFlood)
	}

	g1, f1 := settle(t, "after the floods", g0, f0, 2)
	heap1 := heapInuse()
	t.Logf("after: %d goroutines (baseline %d), %d descriptors (baseline %d), heap %d KiB (baseline %d KiB), RSS %d KiB",
		g1, g0, f1, f0, heap1>>10, heap0>>10, vmRSS("self"))
	if heap1 > 2*heap0+32<<20 {
		t.Fatalf("heap %d KiB after the floods, baseline %d KiB", heap1>>10, heap0>>10)
	}

	h.Stop() // writes the interval's rate_limited summaries
	events := h.AuditEvents()
	denied := servertest.FindAudit(events, audit.ConnectionDenied)
	var summarized float64
	for _, e := range servertest.FindAudit(events, audit.RateLimited) {
		n, _ := e.Details["count"].(float64)
		summarized += n
	}
	t.Logf("audit: %d lines for %d attempts (%d connection_denied in full, %d rate_limited summaries counting %.0f)",
		len(events), silentFlood+handshakeFlood, len(denied), len(servertest.FindAudit(events, audit.RateLimited)), summarized)
	if len(denied) > 2*attackerSources || len(events) > 6*attackerSources+20 {
		t.Fatalf("audit log not aggregated: %d lines", len(events))
	}
	// Every refusal the server counted is in the audit log, in full or
	// in a summary.
	all := st.HandshakeFailed + st.HandshakeLimited + st.Denied + st.AddrRateLimited + st.ConnLimitRejected
	if uint64(summarized)+uint64(len(denied)) != all {
		t.Fatalf("summaries count %.0f + %d in full, want the %d refusals counted in stats", summarized, len(denied), all)
	}
}
