package iperf3proto

import (
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// within reports whether a and b differ by at most frac of the larger.
func within(a, b float64, frac float64) bool {
	m := math.Max(math.Abs(a), math.Abs(b))
	return m == 0 || math.Abs(a-b) <= frac*m
}

// interopCase is one stock-client flag set against our server.
type interopCase struct {
	name  string
	host  string
	args  []string
	check func(t *testing.T, j *iperfJSON, r *TestResult)
}

// rateTolerance is how far above its -b rate a paced sender may be
// measured (a block more than the rate allows, short receiver seconds).
// Below the rate is not checked: on a loaded machine a starved sender
// falls short, and rates belong in benchmarks.
const rateTolerance = 0.05

// inFlightPerStream bounds what one TCP stream can hold in kernel buffers
// when a test ends, sent but never read: the largest send buffer plus the
// largest receive buffer the kernel lets a socket grow to (autotuning or
// -w). It is read from the kernel's settings, not guessed: a fixed 16 MiB
// failed under load, with tcp_rmem's maximum at 32 MiB.
func inFlightPerStream() int64 {
	field := func(path string, i int, def int64) int64 {
		b, err := os.ReadFile(path)
		f := strings.Fields(string(b))
		if err != nil || len(f) <= i {
			return def
		}
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return def
		}
		return v
	}
	snd := max(field("/proc/sys/net/ipv4/tcp_wmem", 2, 4<<20), 2*field("/proc/sys/net/core/wmem_max", 0, 4<<20))
	rcv := max(field("/proc/sys/net/ipv4/tcp_rmem", 2, 6<<20), 2*field("/proc/sys/net/core/rmem_max", 0, 4<<20))
	return snd + rcv
}

// lateWrite bounds what one stream's sender writes after it fixed its
// count: threaded clients (3.16 and later) stop counting before their
// last write returns. Our senders write at most 1 MiB at a time, stock
// ones a block (blk).
func lateWrite(blk int64) int64 { return max(blk, sendChunkTarget) }

// checkDirection checks one direction's sums: both non-zero; for TCP
// (tcp set) received <= sent + a late write per stream, and sent <=
// received + what the kernel buffers of the streams can hold at the end;
// and our server's count equal to what the client reports for it (the
// results exchange carries our figure). With -O (omit) the ends start
// measuring when their own omit timers fire, tens of milliseconds apart
// on a busy machine, so sent and received cover different windows: pass
// tcp false there. blk is the client's block size.
func checkDirection(t *testing.T, dir string, streams int, blk int64, sent, recv *iperfSum, ours int64, tcp bool) {
	t.Helper()
	if sent == nil || recv == nil {
		t.Fatalf("%s: missing sums (sent %v, received %v)", dir, sent, recv)
	}
	if sent.Bytes <= 0 || recv.Bytes <= 0 {
		t.Fatalf("%s: zero bytes: sent %d received %d", dir, sent.Bytes, recv.Bytes)
	}
	n := int64(max(streams, 1))
	if slack, late := n*inFlightPerStream(), n*lateWrite(blk); tcp && (recv.Bytes > sent.Bytes+late || sent.Bytes-recv.Bytes > slack) {
		t.Errorf("%s: sent %d, received %d: want received <= sent + %d (late writes) and sent <= received + %d (kernel buffers)",
			dir, sent.Bytes, recv.Bytes, late, slack)
	}
	if ours >= 0 && ours != recv.Bytes && ours != sent.Bytes {
		t.Errorf("%s: server counted %d, client reports sent %d received %d", dir, ours, sent.Bytes, recv.Bytes)
	}
}

// checkSeconds checks that a timed test ran its time: not ended early
// (10% for timer granularity) and not held on by the server (a busy
// machine stretches the end by scheduling delays, far less than
// lateEnd).
func checkSeconds(t *testing.T, s *iperfSum, want float64) {
	t.Helper()
	const lateEnd = 5.0 // seconds
	if s == nil || s.Seconds < 0.9*want || s.Seconds > want+lateEnd {
		t.Errorf("duration: got %+v, want %.1fs (at most %.0fs more)", s, want, lateEnd)
	}
}

// forward checks a client-sends test of secs seconds.
func forward(secs float64) func(t *testing.T, j *iperfJSON, r *TestResult) {
	return func(t *testing.T, j *iperfJSON, r *TestResult) {
		checkDirection(t, "forward", j.Start.TestStart.NumStreams, j.Start.TestStart.BlkSize, j.End.SumSent, j.End.SumReceived, r.BytesReceived, r.Params.Omit == 0)
		if secs > 0 {
			checkSeconds(t, j.End.SumSent, secs)
		}
		if r.BytesSent != 0 {
			t.Errorf("server sent %d bytes in a forward test", r.BytesSent)
		}
	}
}

// reverse checks a server-sends test.
func reverse(secs float64) func(t *testing.T, j *iperfJSON, r *TestResult) {
	return func(t *testing.T, j *iperfJSON, r *TestResult) {
		checkDirection(t, "reverse", j.Start.TestStart.NumStreams, j.Start.TestStart.BlkSize, j.End.SumSent, j.End.SumReceived, r.BytesSent, r.Params.Omit == 0)
		if secs > 0 {
			checkSeconds(t, j.End.SumReceived, secs)
		}
		if r.BytesReceived != 0 {
			t.Errorf("server received %d bytes in a reverse test", r.BytesReceived)
		}
	}
}

// bidir checks both directions.
func bidir(t *testing.T, j *iperfJSON, r *TestResult) {
	checkDirection(t, "client->server", j.Start.TestStart.NumStreams, j.Start.TestStart.BlkSize, j.End.SumSent, j.End.SumReceived, r.BytesReceived, true)
	checkDirection(t, "server->client", j.Start.TestStart.NumStreams, j.Start.TestStart.BlkSize, j.End.SumSentBidir, j.End.SumReceivedBidir, r.BytesSent, true)
}

// udpCheck checks a UDP test's summary against our server's own figures:
// packets and bytes moved, jitter reported, lost <= packets, and the loss
// the client reports equal to what happened: in a forward test it is our
// receiver's count exactly and our highest sequence number is at most what
// the client sent; in reverse our sender sent at least what the client's
// receiver saw. No loss bound: loss under load is for benchmarks.
func udpCheck(rev bool) func(t *testing.T, j *iperfJSON, r *TestResult) {
	return func(t *testing.T, j *iperfJSON, r *TestResult) {
		s := j.End.Sum
		if s == nil || s.Packets <= 0 || s.Bytes <= 0 {
			t.Fatalf("UDP summary missing or empty: %+v", s)
		}
		if s.Lost > s.Packets || s.Lost < 0 {
			t.Errorf("UDP loss %d of %d", s.Lost, s.Packets)
		}
		if s.Jitter <= 0 {
			t.Errorf("UDP jitter not reported: %+v", s)
		}
		var packets, lost int64
		for _, ps := range r.PerStream {
			if ps.Sender == rev {
				packets += ps.Packets
				lost += ps.Lost
			}
		}
		if rev {
			if r.BytesSent <= 0 || packets < s.Packets {
				t.Errorf("server sent %d bytes in %d datagrams; the client saw up to sequence %d", r.BytesSent, packets, s.Packets)
			}
			return
		}
		if r.BytesReceived <= 0 || packets <= 0 || packets > s.Packets || lost != s.Lost {
			t.Errorf("server received %d bytes, highest sequence %d, lost %d; client sent %d datagrams and reports %d lost",
				r.BytesReceived, packets, lost, s.Packets, s.Lost)
		}
	}
}

func streams(n int, next func(t *testing.T, j *iperfJSON, r *TestResult)) func(t *testing.T, j *iperfJSON, r *TestResult) {
	return func(t *testing.T, j *iperfJSON, r *TestResult) {
		if j.Start.TestStart.NumStreams != n || max(r.Params.Parallel, 1) != n {
			t.Errorf("streams: client %d, server %d, want %d", j.Start.TestStart.NumStreams, r.Params.Parallel, n)
		}
		next(t, j, r)
	}
}

func interopCases() []interopCase {
	return []interopCase{
		{name: "default", args: []string{"-t", "2"}, check: forward(2)},
		{name: "P4", args: []string{"-t", "1", "-P", "4"}, check: streams(4, forward(1))},
		{name: "R", args: []string{"-t", "1", "-R"}, check: reverse(1)},
		{name: "R_P4", args: []string{"-t", "1", "-R", "-P", "4"}, check: streams(4, reverse(1))},
		{name: "bidir", args: []string{"-t", "1", "--bidir"}, check: bidir},
		{name: "n200M", args: []string{"-n", "200M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(0)(t, j, r)
			if j.End.SumSent.Bytes < 200<<20 {
				t.Errorf("sent %d, want >= 200M", j.End.SumSent.Bytes)
			}
		}},
		{name: "R_n200M", args: []string{"-R", "-n", "200M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			reverse(0)(t, j, r)
			if r.BytesSent != 200<<20 {
				t.Errorf("server sent %d, want exactly 200M", r.BytesSent)
			}
		}},
		{name: "k2000", args: []string{"-k", "2000"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(0)(t, j, r)
			if want := int64(2000 * DefaultTCPBlockSize); j.End.SumSent.Bytes != want {
				t.Errorf("sent %d, want %d", j.End.SumSent.Bytes, want)
			}
		}},
		{name: "R_k2000", args: []string{"-R", "-k", "2000"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			// The client ends the test after 2000 reads, which may be short,
			// leaving what is in flight unread: the server stops at 2000
			// blocks at most.
			checkDirection(t, "reverse", j.Start.TestStart.NumStreams, j.Start.TestStart.BlkSize, j.End.SumSent, j.End.SumReceived, r.BytesSent, false)
			if j.End.SumReceived.Bytes > j.End.SumSent.Bytes {
				t.Errorf("received %d > sent %d", j.End.SumReceived.Bytes, j.End.SumSent.Bytes)
			}
			if want := int64(2000 * DefaultTCPBlockSize); r.BytesSent > want || r.BytesSent < want/2 {
				t.Errorf("server sent %d, want at most %d", r.BytesSent, want)
			}
		}},
		{name: "l16K", args: []string{"-t", "1", "-l", "16K"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(1)(t, j, r)
			if r.Params.Len != 16<<10 {
				t.Errorf("len %d", r.Params.Len)
			}
		}},
		{name: "w1M", args: []string{"-t", "1", "-w", "1M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(1)(t, j, r)
			if r.Params.Window != 1<<20 {
				t.Errorf("window %d", r.Params.Window)
			}
		}},
		{name: "Z", args: []string{"-t", "1", "-Z"}, check: forward(1)},
		{name: "R_Z", args: []string{"-t", "1", "-Z", "-R"}, check: reverse(1)},
		{name: "O1", args: []string{"-t", "1", "-O", "1"}, check: forward(1)},
		{name: "R_O1", args: []string{"-t", "1", "-O", "1", "-R"}, check: reverse(1)},
		{name: "C_reno", args: []string{"-t", "1", "-C", "reno"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(1)(t, j, r)
			if j.End.ReceiverCongestion != "reno" {
				t.Errorf("server congestion %q, want reno", j.End.ReceiverCongestion)
			}
		}},
		{name: "b500M", args: []string{"-t", "2", "-b", "500M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(2)(t, j, r)
			if bps := j.End.SumReceived.BPS; bps > 500e6*(1+rateTolerance) {
				t.Errorf("rate %.0f, above 500M by more than %.0f%%", bps, 100*rateTolerance)
			}
		}},
		{name: "R_b500M", args: []string{"-t", "2", "-b", "500M", "-R"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			reverse(2)(t, j, r)
			if bps := j.End.SumReceived.BPS; bps > 500e6*(1+rateTolerance) {
				t.Errorf("rate %.0f, above 500M by more than %.0f%%", bps, 100*rateTolerance)
			}
		}},
		{name: "get_server_output", args: []string{"-t", "1", "--get-server-output"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			forward(1)(t, j, r)
			if !strings.Contains(j.ServerOutputText, "receiver") || !strings.Contains(j.ServerOutputText, "Accepted connection") {
				t.Errorf("server output text: %q", j.ServerOutputText)
			}
		}},
		{name: "u_b200M", args: []string{"-t", "1", "-u", "-b", "200M"}, check: udpCheck(false)},
		// In -R the stock client receives with its default 208 KiB buffer
		// (six 32 KiB datagrams); on a loaded machine its scheduling alone
		// loses any share: no loss bound, the invariants only.
		{name: "u_b200M_R", args: []string{"-t", "1", "-u", "-b", "200M", "-R"}, check: udpCheck(true)},
		{name: "u_bidir_b100M", args: []string{"-t", "1", "-u", "--bidir", "-b", "100M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			if r.BytesSent <= 0 || r.BytesReceived <= 0 || j.End.SumSent == nil || j.End.SumSentBidir == nil {
				t.Fatalf("bidir UDP: server %d/%d, client %+v", r.BytesSent, r.BytesReceived, j.End)
			}
		}},
		{name: "u_l1400_b0", args: []string{"-t", "1", "-u", "-l", "1400", "-b", "0"}, check: udpCheck(false)},
		{name: "u_64bit", args: []string{"-t", "1", "-u", "--udp-counters-64bit", "-b", "50M"}, check: func(t *testing.T, j *iperfJSON, r *TestResult) {
			udpCheck(false)(t, j, r)
			if !r.Params.UDPCounters64Bit {
				t.Error("64-bit counters not negotiated")
			}
		}},
		{name: "ipv6", host: "::1", args: []string{"-t", "1", "-6"}, check: forward(1)},
		{name: "ipv6_udp_R", host: "::1", args: []string{"-t", "1", "-6", "-u", "-b", "100M", "-R"}, check: udpCheck(true)},
	}
}

// TestInteropStockClient runs the stock iperf3 client against our server.
func TestInteropStockClient(t *testing.T) {
	bin := testutil.LookBinary(t, "iperf3")
	for _, tc := range interopCases() {
		t.Run(tc.name, func(t *testing.T) { runInteropCase(t, bin, tc) })
	}
}

// runInteropCase runs client bin with the case's flags against our server.
func runInteropCase(t *testing.T, bin string, tc interopCase) {
	host := tc.host
	if host == "" {
		host = "127.0.0.1"
	}
	ts := startServer(t, host, ServerConfig{}, 1)
	args := append([]string{"-c", host, "-p", strconv.Itoa(ts.port), "-J"}, tc.args...)
	j, out := runIperf3Bin(t, bin, args...)
	r := ts.result(t)
	if j.Error != "" {
		t.Fatalf("client error %q; server %+v", j.Error, r)
	}
	if r.EndReason != EndDone {
		t.Fatalf("server end %q err %v", r.EndReason, r.Err)
	}
	tc.check(t, j, r)
	if t.Failed() {
		t.Logf("client JSON: %.3000s", out)
	}
}

// upstreamIperf3 is the command of an upstream iperf3 3.20+ (with --gsro)
// that .ci/iperf3-upstream.sh installs from Debian's packages.
const upstreamIperf3 = "iperf3-upstream"

// gsro checks that the client asked for GSO/GRO and then checks next.
func gsro(next func(t *testing.T, j *iperfJSON, r *TestResult)) func(t *testing.T, j *iperfJSON, r *TestResult) {
	return func(t *testing.T, j *iperfJSON, r *TestResult) {
		if r.Params.GSO == 0 || r.Params.GRO == 0 || r.Params.GSODgSize == 0 {
			t.Errorf("client did not send the gso/gro parameters: %+v", r.Params)
		}
		next(t, j, r)
	}
}

// TestInteropUpstreamClient runs an upstream iperf3 (3.20+) client against
// our server, with and without --gsro (GSO/GRO on both ends): its
// datagrams arrive coalesced and ours leave segmented.
func TestInteropUpstreamClient(t *testing.T) {
	bin := testutil.LookBinary(t, upstreamIperf3)
	for _, tc := range []interopCase{
		{name: "default", args: []string{"-t", "1"}, check: forward(1)},
		{name: "R_P2", args: []string{"-t", "1", "-R", "-P", "2"}, check: streams(2, reverse(1))},
		{name: "u_b200M", args: []string{"-t", "1", "-u", "-b", "200M"}, check: udpCheck(false)},
		{name: "u_gsro_b500M", args: []string{"-t", "1", "-u", "--gsro", "-b", "500M", "-l", "1400"}, check: gsro(udpCheck(false))},
		{name: "u_R_gsro_b500M", args: []string{"-t", "1", "-u", "-R", "--gsro", "-b", "500M", "-l", "1400"}, check: gsro(udpCheck(true))},
		{name: "u_gsro_b0_P2", args: []string{"-t", "1", "-u", "--gsro", "-b", "0", "-l", "1400", "-P", "2"}, check: gsro(streams(2, udpCheck(false)))},
		{name: "u_bidir_gsro", args: []string{"-t", "1", "-u", "--bidir", "--gsro", "-b", "200M"}, check: gsro(func(t *testing.T, j *iperfJSON, r *TestResult) {
			if r.BytesSent <= 0 || r.BytesReceived <= 0 || j.End.SumSent == nil || j.End.SumSentBidir == nil {
				t.Fatalf("bidir UDP: server %d/%d, client %+v", r.BytesSent, r.BytesReceived, j.End)
			}
		})},
		{name: "u_64bit_gsro", args: []string{"-t", "1", "-u", "--gsro", "--udp-counters-64bit", "-b", "100M"}, check: gsro(udpCheck(false))},
	} {
		t.Run(tc.name, func(t *testing.T) { runInteropCase(t, bin, tc) })
	}
}

// TestInteropBusy checks that a second stock client gets "busy" while a
// test runs, and that the first test is unaffected.
func TestInteropBusy(t *testing.T) {
	testutil.LookBinary(t, "iperf3")
	ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
	port := strconv.Itoa(ts.port)
	type run struct {
		j *iperfJSON
	}
	first := make(chan run, 1)
	go func() {
		j, _ := runIperf3(t, "-c", "127.0.0.1", "-p", port, "-J", "-t", "2")
		first <- run{j}
	}()
	testutil.Eventually(t, 5*time.Second, "first test running", func() bool {
		_, rcv := ts.srv.Meter()
		return rcv > 0
	})
	j, _ := runIperf3(t, "-c", "127.0.0.1", "-p", port, "-J", "-t", "1")
	if !strings.Contains(j.Error, "busy") {
		t.Errorf("second client error %q, want busy", j.Error)
	}
	f := <-first
	if f.j.Error != "" {
		t.Errorf("first client error %q", f.j.Error)
	}
	if r := ts.result(t); r.EndReason != EndDone || r.BytesReceived == 0 {
		t.Errorf("first test: %+v", r)
	}
}

// TestInteropRefused checks the stock client's message when the server
// refuses a request above its limits.
func TestInteropRefused(t *testing.T) {
	testutil.LookBinary(t, "iperf3")
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		args []string
		want string
	}{
		{"streams", ServerConfig{MaxStreams: 2}, []string{"-P", "4", "-t", "1"}, "parallel streams too large"},
		{"duration", ServerConfig{MaxDuration: 2 * time.Second}, []string{"-t", "5"}, "duration too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, "127.0.0.1", tc.cfg, 1)
			j, _ := runIperf3(t, append([]string{"-c", "127.0.0.1", "-p", strconv.Itoa(ts.port), "-J"}, tc.args...)...)
			if !strings.Contains(j.Error, tc.want) {
				t.Errorf("client error %q, want %q", j.Error, tc.want)
			}
			if r := ts.result(t); r.EndReason != EndError {
				t.Errorf("end %s", r.EndReason)
			}
		})
	}
}
