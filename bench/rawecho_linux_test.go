//go:build linux

package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/packetparamedic/reflector/bench/internal/iperfrun"
)

// The echo latency goal is stated against a plain blocking echo loop,
// both measured by the same independent prober. Both are a few lines of
// raw system calls on a locked OS thread, outside Go's netpoller, so
// neither adds the runtime's wake-ups to what is measured.

// rawSocket is a blocking IPv4 UDP socket bound to 127.0.0.1:0 (not
// registered with Go's netpoller).
func rawSocket(tb testing.TB) (int, *net.UDPAddr) {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	a := sa.(*unix.SockaddrInet4)
	return fd, &net.UDPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
}

// startBlockingEcho runs the baseline: recvfrom then sendto, one datagram
// each, on a locked thread blocking in the kernel.
func startBlockingEcho(tb testing.TB) *net.UDPAddr {
	tb.Helper()
	fd, addr := rawSocket(tb)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		buf := make([]byte, 2048)
		for {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 && from == nil {
				return // shut down
			}
			_ = unix.Sendto(fd, buf[:n], 0, from)
		}
	}()
	tb.Cleanup(func() {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR) // wakes the blocked recvfrom
		<-done
		_ = unix.Close(fd)
	})
	return addr
}

// rawProbe sends count 64-byte probes to dst at rate per second, one in
// flight, from a locked thread with blocking send and receive, and
// returns the sorted RTTs of the replies and the probes lost (no reply
// within 100 ms, or a reply of another probe).
func rawProbe(tb testing.TB, dst *net.UDPAddr, rate, count int) ([]time.Duration, int) {
	tb.Helper()
	fd, _ := rawSocket(tb)
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte(dst.IP.To4()), Port: dst.Port}); err != nil {
		tb.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		tb.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Pace with nanosleep at 1 ns timer slack: time.Sleep's sub-ms waits
	// end on the runtime's millisecond timer, which would turn 10k pps
	// into back-to-back bursts (a busy CPU answers faster than an idle
	// one, so bursts flatter the RTT).
	if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) == nil {
		defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
	}
	msg, buf := make([]byte, echoSize), make([]byte, 2048)
	rtts := make([]time.Duration, 0, count)
	lost := 0
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range count {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			ts := unix.NsecToTimespec(int64(d))
			_ = unix.Nanosleep(&ts, nil)
		}
		binary.BigEndian.PutUint64(msg, uint64(i))
		sent := time.Now()
		if _, err := unix.Write(fd, msg); err != nil {
			tb.Fatal(err)
		}
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil { // timeout
				lost++
				break
			}
			if n == echoSize && binary.BigEndian.Uint64(buf) == uint64(i) {
				rtts = append(rtts, time.Since(sent))
				break
			}
			// A late reply of an earlier probe: keep waiting for this one.
		}
	}
	slices.Sort(rtts)
	return rtts, lost
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(float64(len(sorted))*p), len(sorted)-1)]
}

// BenchmarkEchoVsBlocking measures RTT p50/p99 through our echo engine
// and through a plain blocking echo loop with the same raw prober, in
// alternating rounds (one op = one round of each), at 1k and 10k pps.
// It reports the medians and the ratios ours/plain over the rounds; the
// spread of the ratios is logged. Run with e.g.
//
//	go test -run '^$' -bench EchoVsBlocking -benchtime 5x ./bench/
func BenchmarkEchoVsBlocking(b *testing.B) {
	for _, rate := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("pps=%d", rate), func(b *testing.B) {
			ours, plain := startBatchedEcho(b), startBlockingEcho(b)
			count := rate * 2 // two seconds per round and server
			if rate < 5000 {
				count = rate * 5 // the 1k row needs more samples
			}
			var p50o, p99o, p50p, p99p, r50, r99 []float64
			lost := 0
			for b.Loop() {
				ro, lo := rawProbe(b, ours, rate, count)
				rp, lp := rawProbe(b, plain, rate, count)
				lost += lo + lp
				us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
				p50o, p99o = append(p50o, us(percentile(ro, 0.5))), append(p99o, us(percentile(ro, 0.99)))
				p50p, p99p = append(p50p, us(percentile(rp, 0.5))), append(p99p, us(percentile(rp, 0.99)))
				r50 = append(r50, iperfrun.Ratio(p50o[len(p50o)-1], p50p[len(p50p)-1]))
				r99 = append(r99, iperfrun.Ratio(p99o[len(p99o)-1], p99p[len(p99p)-1]))
			}
			b.ReportMetric(iperfrun.Median(p50o), "ours-p50-µs")
			b.ReportMetric(iperfrun.Median(p99o), "ours-p99-µs")
			b.ReportMetric(iperfrun.Median(p50p), "plain-p50-µs")
			b.ReportMetric(iperfrun.Median(p99p), "plain-p99-µs")
			b.ReportMetric(iperfrun.Median(r50), "p50-ratio")
			b.ReportMetric(iperfrun.Median(r99), "p99-ratio")
			b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
			b.Logf("%d pps, %d rounds: p50 ratio %.2f [%.2f-%.2f], p99 ratio %.2f [%.2f-%.2f]", rate, len(r50),
				iperfrun.Median(r50), slices.Min(r50), slices.Max(r50), iperfrun.Median(r99), slices.Min(r99), slices.Max(r99))
		})
	}
}

// TestRawProberAgainstBlockingEcho checks the measuring tools: every
// probe comes back from the baseline loop (loopback, low rate) or is
// counted lost, and the RTTs are positive and sorted.
func TestRawProberAgainstBlockingEcho(t *testing.T) {
	rtts, lost := rawProbe(t, startBlockingEcho(t), 1000, 200)
	if len(rtts)+lost != 200 || len(rtts) == 0 || rtts[0] <= 0 || !slices.IsSorted(rtts) {
		t.Fatalf("%d replies, %d lost, first RTT %v", len(rtts), lost, rtts[:min(len(rtts), 1)])
	}
}
