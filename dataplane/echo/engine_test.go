package echo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// startEngine listens on 127.0.0.1:0, serves in the background and stops
// the engine when the test ends, checking that Serve returned nil.
func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := Listen(context.Background(), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return e
}

// dial connects a UDP client from local (any port) to e.
func dial(t *testing.T, e *Engine, local string) *net.UDPConn {
	t.Helper()
	laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(local), 0))
	c, err := net.DialUDP("udp", laddr, e.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// settledStats returns the engine's counters once the batch in flight has
// been counted (a reader adds Received before its echoes are written and
// counted, so a snapshot taken just as the prober got its last reply may
// lag by that batch), and asserts that every received datagram is
// accounted for.
func settledStats(t *testing.T, e *Engine) Stats {
	t.Helper()
	outcomes := func(s Stats) uint64 {
		return s.Echoed + s.DroppedForeign + s.DroppedRate + s.DroppedTruncated + s.SendErrors
	}
	var s Stats
	ok := false
	deadline := time.Now().Add(5 * time.Second)
	for !ok && time.Now().Before(deadline) {
		prev := e.Stats()
		time.Sleep(5 * time.Millisecond)
		s = e.Stats()
		ok = s == prev && outcomes(s) == s.Received
	}
	if !ok {
		t.Fatalf("stats %+v: outcomes sum to %d, received %d", s, outcomes(s), s.Received)
	}
	return s
}

// TestLoopback100k sends 100k probes at a high rate, over a plain
// *net.UDPConn and over DialUDP's socket. On a shared, loaded host the
// kernel may drop some on either way, so it asserts accounting, not loss:
// every probe comes back bit-identical or is counted lost, and the
// engine's counters agree with what the prober saw.
func TestLoopback100k(t *testing.T) {
	conns := map[string]func(t *testing.T, e *Engine) net.Conn{
		"UDPConn": func(t *testing.T, e *Engine) net.Conn { return dial(t, e, "127.0.0.1") },
		"DialUDP": func(t *testing.T, e *Engine) net.Conn {
			c, err := DialUDP(context.Background(), e.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		},
	}
	for name, open := range conns {
		t.Run(name, func(t *testing.T) { loopback100k(t, open, 0) })
	}
	// A prober that busy-polls for each reply (ProbeConfig.Spin) counts
	// the same: every probe back once or lost.
	t.Run("DialUDPSpin", func(t *testing.T) { loopback100k(t, conns["DialUDP"], MaxProbeSpin) })
}

func loopback100k(t *testing.T, open func(t *testing.T, e *Engine) net.Conn, spin time.Duration) {
	rate := 50_000
	if raceEnabled {
		rate = 25_000 // what the race build sustains on a shared 2-core box
	}
	e := startEngine(t, Config{Allowed: loopback})
	c := open(t, e)
	const count = 100_000
	res, err := Probe(context.Background(), c, ProbeConfig{Rate: rate, Size: 64, Count: count, Timeout: 3 * time.Second, Spin: spin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d probes at %d pps: %+v", count, rate, *res)
	if res.Sent != count || res.Received+res.Lost != res.Sent || res.Received == 0 || res.Corrupt != 0 || res.Duplicates != 0 {
		t.Fatalf("sent %d received %d lost %d corrupt %d dups %d; want %d sent, each back intact once or counted lost",
			res.Sent, res.Received, res.Lost, res.Corrupt, res.Duplicates, count)
	}
	if !(0 < res.RTTMin && res.RTTMin <= res.RTTP50 && res.RTTP50 <= res.RTTP90 &&
		res.RTTP90 <= res.RTTP99 && res.RTTP99 <= res.RTTMax && res.RTTMin <= res.RTTAvg && res.RTTAvg <= res.RTTMax) {
		t.Fatalf("RTT statistics out of order: %+v", res)
	}
	s := settledStats(t, e)
	// Probes lost on the way in never reach the engine; echoes lost on the
	// way back never reach the prober: the counters can only shrink along
	// the path, and every echo carries the probe's 64 bytes.
	if !(res.Received <= s.Echoed && s.Received <= res.Sent) || s.Bytes != s.Echoed*64 || s.DroppedForeign+s.DroppedTruncated != 0 {
		t.Fatalf("engine stats %+v vs probe %+v: want probe received <= echoed <= received <= sent, 64 bytes each", s, *res)
	}
}

// TestDialUDPReadWrite checks DialUDP's socket as a net.Conn: a datagram
// written comes back from the engine through Read, and Read returns
// net.ErrClosed once the socket is closed.
func TestDialUDPReadWrite(t *testing.T) {
	e := startEngine(t, Config{Allowed: loopback})
	c, err := DialUDP(context.Background(), e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("echo through a detached socket")
	if n, err := c.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("Read = %q, %v; want %q", buf[:n], err, msg)
	}
	if c.LocalAddr() == nil || c.RemoteAddr().String() != e.Addr().String() {
		t.Fatalf("addresses %v -> %v, want the engine's %v", c.LocalAddr(), c.RemoteAddr(), e.Addr())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
}

func TestRateClamp(t *testing.T) {
	const maxPPS = 2000
	e := startEngine(t, Config{Allowed: loopback, MaxPPS: maxPPS})
	c := dial(t, e, "127.0.0.1")
	// Twice the clamp for one second.
	res, err := Probe(context.Background(), c, ProbeConfig{Rate: 2 * maxPPS, Size: 64, Count: 2 * maxPPS, Timeout: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := settledStats(t, e)
	if s.Received > res.Sent || s.Echoed < res.Received || res.Corrupt != 0 || s.Received < res.Sent*9/10 {
		t.Fatalf("engine %+v vs probe %+v: the counters can only shrink along the path (and loopback loses at most a few)", s, res)
	}
	// The clamp admits its burst (a tenth of a second) plus MaxPPS for
	// the time the probes took to arrive; generous bounds both ways.
	elapsed := res.Elapsed.Seconds()
	upper := uint64(maxPPS/10 + maxPPS*elapsed*1.2 + 64)
	if s.Echoed < maxPPS/2 || s.Echoed > upper || s.DroppedRate < maxPPS/4 {
		t.Fatalf("echoed %d, dropped %d over %.2fs; want about %d echoed (<= %d) and the rest dropped",
			s.Echoed, s.DroppedRate, elapsed, maxPPS, upper)
	}
}

func TestForeignSourceDropped(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("127.0.0.2 is a loopback address on linux only")
	}
	e := startEngine(t, Config{Allowed: loopback})
	foreign := dial(t, e, "127.0.0.2")
	const n = 50
	for i := range n {
		if _, err := foreign.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "foreign datagrams counted", func() bool {
		return e.Stats().DroppedForeign == n
	})
	res, err := Probe(context.Background(), dial(t, e, "127.0.0.1"), ProbeConfig{Rate: 5000, Size: 100, Count: 500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.Received+res.Lost != 500 || res.Corrupt != 0 {
		t.Fatalf("allowed peer: %+v, want its probes back intact or counted lost", res)
	}
	s := settledStats(t, e)
	if s.DroppedForeign != n || s.Echoed < res.Received || s.Echoed > 500 {
		t.Fatalf("stats %+v vs probe %+v: want %d foreign dropped, every echo the prober got counted", s, res, n)
	}
	// Nothing was ever sent to the foreign socket: its queue is empty.
	if err := foreign.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := foreign.Read(make([]byte, 64)); !isTimeout(err) {
		t.Fatalf("foreign peer got %d bytes (err %v), want nothing", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestTimestamped(t *testing.T) {
	e := startEngine(t, Config{Allowed: loopback, Timestamped: true})
	c := dial(t, e, "127.0.0.1")

	// One probe by hand: check the stamps themselves.
	probe := make([]byte, 80)
	start := time.Now()
	if err := (&Header{Seq: 1, ClientSend: 5}).Encode(probe); err != nil {
		t.Fatal(err)
	}
	fillPadding(probe[HeaderLen:], 1, 5)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(probe); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 200)
	n, err := c.Read(reply)
	if err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(start)
	h, err := ParseHeader(reply[:n])
	if err != nil || n != len(probe) {
		t.Fatalf("reply %d bytes, header %v", n, err)
	}
	if h.Flags != FlagStamped || h.Seq != 1 || h.ClientSend != 5 {
		t.Fatalf("reply header %+v", h)
	}
	if h.ServerRx == 0 || h.ServerRx > h.ServerTx {
		t.Fatalf("server rx %d, tx %d: want 0 < rx <= tx", h.ServerRx, h.ServerTx)
	}
	if srv := time.Duration(h.ServerTx - h.ServerRx); srv > rtt {
		t.Fatalf("server time %v exceeds the RTT %v", srv, rtt)
	}
	if lo, hi := start.Add(-time.Second).UnixNano(), time.Now().Add(time.Second).UnixNano(); h.ServerRx < lo || h.ServerTx > hi {
		t.Fatalf("server stamps %d..%d far from the wall clock %d..%d", h.ServerRx, h.ServerTx, lo, hi)
	}
	if !bytes.Equal(reply[HeaderLen:n], probe[HeaderLen:]) {
		t.Fatal("padding modified")
	}

	// Non-conforming datagrams come back unmodified.
	bad := bytes.Clone(probe)
	bad[5] = 1
	for _, d := range [][]byte{[]byte("hello"), bad, probe[:HeaderLen-1]} {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(reply)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(reply[:n], d) {
			t.Fatalf("non-conforming %x came back as %x", d, reply[:n])
		}
	}

	res, err := Probe(context.Background(), c, ProbeConfig{Rate: 10_000, Size: 64, Count: 2000, Timestamped: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != 2000 || res.Corrupt != 0 {
		t.Fatalf("timestamped run: %+v", res)
	}
	if res.ServerTime <= 0 || res.ServerTime > res.RTTAvg {
		t.Fatalf("server time %v, RTT avg %v: want 0 < server time <= RTT", res.ServerTime, res.RTTAvg)
	}
	// A plain probe against a stamping server sees modified replies.
	res, err = Probe(context.Background(), c, ProbeConfig{Rate: 10_000, Size: 64, Count: 100, Timeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Corrupt != 100 || res.Received != 0 {
		t.Fatalf("plain probe against stamping server: %+v, want all corrupt", res)
	}
}

func TestServeLifecycle(t *testing.T) {
	e, err := Listen(context.Background(), "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve(context.Background()) }()
	testutil.Eventually(t, 5*time.Second, "serving", e.serving.Load)
	if err := e.Serve(context.Background()); !errors.Is(err, ErrServing) {
		t.Fatalf("second Serve = %v, want ErrServing", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := Listen(context.Background(), "127.0.0.1:0", Config{MaxPPS: -1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative MaxPPS: %v, want ErrConfig", err)
	}
}

func TestReusePortReaders(t *testing.T) {
	e := startEngine(t, Config{Allowed: loopback, Readers: 2})
	if runtime.GOOS == "linux" && e.Readers() != 2 {
		t.Fatalf("Readers() = %d, want 2", e.Readers())
	}
	// Several flows, so the kernel's hash spreads them over the sockets.
	const flows, per = 6, 300
	errc := make(chan error, flows)
	var got atomic.Uint64
	for range flows {
		c := dial(t, e, "127.0.0.1")
		go func() {
			res, err := Probe(context.Background(), c, ProbeConfig{Rate: 5000, Size: 64, Count: per}, nil)
			if err == nil && (res.Received == 0 || res.Received+res.Lost != per || res.Corrupt != 0) {
				err = fmt.Errorf("flow: %+v: probes must come back intact or be counted lost", *res)
			}
			if err == nil {
				got.Add(res.Received)
			}
			errc <- err
		}()
	}
	for range flows {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	// Every flow was answered (whichever socket the kernel hashed it to),
	// and every echo a prober got was counted by the engine.
	if s := settledStats(t, e); s.Echoed < got.Load() || s.Echoed > flows*per {
		t.Fatalf("echoed %d, probers got %d of %d", s.Echoed, got.Load(), flows*per)
	}
}

func TestProbeConfigAndProgress(t *testing.T) {
	e := startEngine(t, Config{})
	c := dial(t, e, "127.0.0.1")
	for _, bad := range []ProbeConfig{
		{Rate: 0, Size: 64},
		{Rate: 10, Size: HeaderLen - 1},
		{Rate: 10, Size: MaxProbeSize + 1},
		{Rate: 10, Size: 64, Count: -1},
	} {
		if _, err := Probe(context.Background(), c, bad, nil); !errors.Is(err, ErrConfig) {
			t.Fatalf("%+v: %v, want ErrConfig", bad, err)
		}
	}
	// Duration-bounded, open count: 1.5 s at 1000 pps, reported by interval.
	var ivs []ProbeInterval
	res, err := Probe(context.Background(), c, ProbeConfig{Rate: 1000, Size: 1200, Duration: 1500 * time.Millisecond},
		func(iv ProbeInterval) { ivs = append(ivs, iv) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 1500 || res.Received != 1500 {
		t.Fatalf("duration run: %+v, want 1500 sent and received", res)
	}
	var sent, recv uint64
	for i, iv := range ivs {
		sent += iv.Sent
		recv += iv.Received
		if i > 0 && iv.Start != ivs[i-1].End {
			t.Fatalf("intervals not contiguous: %+v", ivs)
		}
	}
	if len(ivs) < 2 || sent != res.Sent || recv != res.Received {
		t.Fatalf("intervals %+v do not add up to %d/%d", ivs, res.Sent, res.Received)
	}
	// Cancelled open-ended run returns what it has and the context error.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res, err = Probe(ctx, c, ProbeConfig{Rate: 1000, Size: 64}, nil)
	if !errors.Is(err, context.Canceled) || res == nil || res.Sent == 0 {
		t.Fatalf("cancelled run: %+v, %v", res, err)
	}
}

func TestProbeDetectsLossAndDuplicates(t *testing.T) {
	// A fake server that drops every 10th probe and answers every 7th twice.
	srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if i%10 == 9 {
				continue
			}
			if i%7 == 0 {
				srv.WriteToUDPAddrPort(buf[:n], from)
			}
			if i == 3 {
				buf[n-1] ^= 1
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	res, err := Probe(context.Background(), c, ProbeConfig{Rate: 2000, Size: 64, Count: 100, Timeout: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Probes 9, 19, ..., 99 are dropped (10) and probe 3 corrupted, so 11
	// are lost; multiples of 7 are answered twice unless dropped.
	var wantDups uint64
	for i := range 100 {
		if i%7 == 0 && i%10 != 9 {
			wantDups++
		}
	}
	if res.Lost != 11 || res.Corrupt != 1 || res.Duplicates != wantDups || res.Received != 89 {
		t.Fatalf("result %+v: want 11 lost, 1 corrupt, %d duplicates, 89 received", res, wantDups)
	}
}

func TestIPv6AndDualStack(t *testing.T) {
	cases := []struct{ listen, allowed, client string }{
		{"[::1]:0", "::1", "::1"},
		{"[::]:0", "127.0.0.1", "127.0.0.1"}, // v4 peer on a dual-stack socket
		{"[::]:0", "::ffff:127.0.0.1", "127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.listen+" from "+tc.client, func(t *testing.T) {
			e, err := Listen(context.Background(), tc.listen, Config{Allowed: netip.MustParseAddr(tc.allowed)})
			if err != nil {
				t.Skipf("no IPv6 here: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Serve(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve = %v", err)
				}
			})
			port := e.Addr().(*net.UDPAddr).Port
			dst := netip.AddrPortFrom(netip.MustParseAddr(tc.client), uint16(port))
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			res, err := Probe(context.Background(), c, ProbeConfig{Rate: 5000, Size: 100, Count: 200}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Received != 200 || e.Stats().DroppedForeign != 0 {
				t.Fatalf("probe %+v, engine %+v", res, e.Stats())
			}
		})
	}
}
