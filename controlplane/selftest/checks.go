package selftest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/cpu"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/hostinfo"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/iperf3proto"
)

// Targets and limits the checks grade against.
const (
	gbit = 1e9
	// quicUDPBuffer is the socket buffer size quic-go asks for (about
	// 7.5 MB); net.core.rmem_max/wmem_max below it cap QUIC throughput.
	quicUDPBuffer = 7_500_000
	// wantFDs covers the default max_control_connections (2048) plus data
	// streams and files.
	wantFDs = 4096
)

func checkCores() Check {
	n := runtime.NumCPU()
	c := Check{Name: CheckCPUCores, Value: fmt.Sprintf("%d", n), Verdict: OK}
	if n < 2 {
		c.Verdict = Warn
		c.Hint = "one core shares TLS, the iperf3 engine and everything else; 2 or more recommended for 1 Gbit/s"
	}
	return c
}

// checkCPUFeatures reports the instructions Go's crypto uses for AES-GCM
// (and so for TLS and QUIC at line rate), as the CPU reports them (CPUID
// on x86, HWCAP on arm64) through golang.org/x/sys/cpu.
func checkCPUFeatures() Check {
	c := Check{Name: CheckCPUFeatures}
	var have []string
	aes := false
	switch runtime.GOARCH {
	case "amd64", "386":
		aes = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
		have = flagList(map[string]bool{"aes": cpu.X86.HasAES, "pclmulqdq": cpu.X86.HasPCLMULQDQ, "avx2": cpu.X86.HasAVX2})
	case "arm64":
		aes = cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
		have = flagList(map[string]bool{"aes": cpu.ARM64.HasAES, "pmull": cpu.ARM64.HasPMULL, "asimd": cpu.ARM64.HasASIMD})
	default:
		c.Value = runtime.GOARCH
		c.Verdict = Warn
		c.Hint = "unknown CPU features on " + runtime.GOARCH + "; the tls_loopback rate tells what TLS achieves"
		return c
	}
	c.Value = runtime.GOARCH + ": " + strings.Join(have, " ")
	if aes {
		c.Verdict = OK
		c.Hint = "hardware AES-GCM for TLS and QUIC"
		return c
	}
	c.Verdict = Warn
	c.Hint = "no hardware AES: TLS falls back to ChaCha20-Poly1305, tunneled tests may not reach 1 Gbit/s"
	return c
}

// flagList returns the names of the present flags in a stable order, or
// "none".
func flagList(m map[string]bool) []string {
	var out []string
	for _, k := range []string{"aes", "pclmulqdq", "pmull", "avx2", "asimd"} {
		if v, ok := m[k]; ok && v {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

func checkMemory() Check {
	c := Check{Name: CheckMemory}
	snap, err := hostinfo.NewSampler().Snapshot()
	if snap.MemoryTotalMB == 0 {
		c.Value = "unknown"
		c.Verdict = Warn
		c.Hint = fmt.Sprintf("not measured: %v", err)
		return c
	}
	avail := snap.MemoryTotalMB - snap.MemoryUsedMB
	c.Value = fmt.Sprintf("%d MiB available of %d MiB", avail, snap.MemoryTotalMB)
	c.Verdict = grade(float64(avail), 256, 64)
	switch c.Verdict {
	case Warn:
		c.Hint = "under 256 MiB available: the reflector needs ~30 MiB plus socket buffers per test"
	case Fail:
		c.Hint = "under 64 MiB available: tests will compete with the OOM killer"
	}
	return c
}

func checkNICs() Check {
	c := Check{Name: CheckNICSpeed}
	nics, err := nicSpeeds()
	if err != nil {
		c.Value = "unknown"
		c.Verdict = Warn
		c.Hint = fmt.Sprintf("not measured: %v", err)
		return c
	}
	if len(nics) == 0 {
		c.Value = "no interface up"
		c.Verdict = Fail
		c.Hint = "no network interface besides loopback is up"
		return c
	}
	best := -1
	parts := make([]string, 0, len(nics))
	for _, n := range nics {
		if n.Mbps > 0 {
			parts = append(parts, fmt.Sprintf("%s %d Mb/s", n.Name, n.Mbps))
			best = max(best, n.Mbps)
		} else {
			parts = append(parts, n.Name+" unknown")
		}
	}
	c.Value = strings.Join(parts, ", ")
	switch {
	case best >= 1000:
		c.Verdict = OK
	case best > 0:
		c.Verdict = Warn
		c.Hint = "no link of 1 Gbit/s or more: tests measure this link, not the path"
	default:
		c.Verdict = OK
		c.Hint = "virtual NICs report no speed: the provider's bandwidth limit applies"
	}
	return c
}

// checkIperf3 runs the native iperf3 server and client against each other
// on 127.0.0.1 with 4 streams, as the appliance does.
func checkIperf3(ctx context.Context, d time.Duration) Check {
	c := Check{Name: CheckIperf3}
	bps, err := iperf3Loopback(ctx, d)
	if err != nil {
		c.Value = "error"
		c.Verdict = Fail
		c.Hint = err.Error()
		return c
	}
	c.Value = bitsPerSec(bps)
	c.Verdict = grade(bps, 2*gbit, gbit/2)
	switch c.Verdict {
	case OK:
		c.Hint = "client and server share this host; the server alone has headroom for 1 Gbit/s"
	case Warn:
		c.Hint = "little headroom over 1 Gbit/s for the iperf3 engine (client and server share this host here)"
	case Fail:
		c.Hint = "the iperf3 engine cannot move 1 Gbit/s on this host"
	}
	return c
}

func iperf3Loopback(ctx context.Context, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on loopback: %w", err)
	}
	defer func() { _ = ln.Close() }()
	srv := iperf3proto.NewServer(iperf3proto.ServerConfig{Logger: zerolog.Nop(), TestTimeout: d + 20*time.Second})
	type served struct {
		res *iperf3proto.TestResult
		err error
	}
	done := make(chan served, 1)
	go func() {
		res, err := srv.ServeOne(ctx, ln, nil)
		done <- served{res, err}
	}()
	res, err := iperf3proto.RunClient(ctx, &iperf3proto.NetDialer{Address: ln.Addr().String()},
		iperf3proto.ClientConfig{Duration: d, Parallel: 4}, nil)
	if err != nil {
		cancel()
		<-done
		return 0, fmt.Errorf("iperf3 loopback client: %w", err)
	}
	s := <-done
	if s.err != nil {
		return 0, fmt.Errorf("iperf3 loopback server: %w", s.err)
	}
	if s.res.Err != nil {
		return 0, fmt.Errorf("iperf3 loopback server: %w", s.res.Err)
	}
	if res.Upload == nil {
		return 0, errors.New("iperf3 loopback: no upload result")
	}
	return res.Upload.ReceiverBitsPerSecond(), nil
}

// checkTLS copies bytes through one mutual-TLS connection on 127.0.0.1
// with the reflector's own TLS configuration and Ed25519 certificates: the
// per-stream ceiling of tunneled tests.
func checkTLS(ctx context.Context, d time.Duration) Check {
	c := Check{Name: CheckTLS}
	bps, err := tlsLoopback(ctx, d)
	if err != nil {
		c.Value = "error"
		c.Verdict = Fail
		c.Hint = err.Error()
		return c
	}
	c.Value = bitsPerSec(bps) + " per stream"
	c.Verdict = grade(bps, gbit, gbit/4)
	switch c.Verdict {
	case OK:
		c.Hint = "one tunneled TLS stream carries 1 Gbit/s"
	case Warn:
		c.Hint = "one TLS stream is below 1 Gbit/s: tunneled tests need several streams (-P 4) or direct_ephemeral mode"
	case Fail:
		c.Hint = "TLS is too slow for 1 Gbit/s tunneled tests: use direct_ephemeral mode"
	}
	return c
}

func tlsLoopback(ctx context.Context, d time.Duration) (float64, error) {
	const alpn = link.ALPN
	srvCert, srvID, err := ephemeralCert()
	if err != nil {
		return 0, err
	}
	cliCert, _, err := ephemeralCert()
	if err != nil {
		return 0, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on loopback: %w", err)
	}
	defer func() { _ = ln.Close() }()
	type result struct {
		n   int64
		dur time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{err: fmt.Errorf("accept: %w", err)}
			return
		}
		conn := tls.Server(raw, identity.ServerTLSConfig(srvCert, alpn))
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(d + 10*time.Second))
		if err := conn.HandshakeContext(ctx); err != nil {
			done <- result{err: fmt.Errorf("server handshake: %w", err)}
			return
		}
		start := time.Now()
		n, err := io.Copy(io.Discard, conn)
		done <- result{n: n, dur: time.Since(start), err: err}
	}()
	var dialer net.Dialer
	raw, err := dialer.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("dial loopback: %w", err)
	}
	conn := tls.Client(raw, identity.ClientTLSConfig(cliCert, alpn, srvID))
	_ = conn.SetDeadline(time.Now().Add(d + 10*time.Second))
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		r := <-done
		return 0, errors.Join(fmt.Errorf("client handshake: %w", err), r.err)
	}
	_, werr := io.Copy(conn, &timedSource{until: time.Now().Add(d), ctx: ctx, buf: make([]byte, 128<<10)})
	cerr := conn.Close()
	r := <-done
	if err := errors.Join(werr, r.err); err != nil {
		return 0, fmt.Errorf("tls copy: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("tls close: %w", cerr)
	}
	if r.dur <= 0 || r.n == 0 {
		return 0, errors.New("tls copy moved nothing")
	}
	return float64(r.n) * 8 / r.dur.Seconds(), nil
}

// timedSource yields buf again and again until the deadline or ctx ends.
type timedSource struct {
	until time.Time
	ctx   context.Context
	buf   []byte
}

func (s *timedSource) Read(p []byte) (int, error) {
	if time.Now().After(s.until) || s.ctx.Err() != nil {
		return 0, io.EOF
	}
	return copy(p, s.buf), nil
}

// ephemeralCert returns a certificate for a fresh Ed25519 key and its ID.
func ephemeralCert() (tls.Certificate, identity.EndpointID, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("generate key: %w", err)
	}
	cert, err := identity.NewCertificate(key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("certificate: %w", err)
	}
	return cert, identity.IDFromPublicKey(pub), nil
}

// checkAudit appends audit lines (O_APPEND, no fsync, like the server)
// to a temporary file for d.
func checkAudit(dir string, d time.Duration) Check {
	c := Check{Name: CheckAudit}
	rate, err := auditRate(dir, d)
	if err != nil {
		c.Value = "error"
		c.Verdict = Fail
		c.Hint = err.Error()
		return c
	}
	c.Value = fmt.Sprintf("%.0f lines/s", rate)
	c.Verdict = grade(rate, 5000, 100)
	switch c.Verdict {
	case Warn:
		c.Hint = "slow audit writes delay every grant; check the state directory's disk"
	case Fail:
		c.Hint = "the audit log cannot keep up; grants wait for it (fail closed)"
	}
	return c
}

func auditRate(dir string, d time.Duration) (float64, error) {
	if dir == "" {
		dir = os.TempDir()
		if fi, err := os.Stat(config.DefaultStateDir); err == nil && fi.IsDir() {
			dir = config.DefaultStateDir
		}
	}
	tmp, err := os.MkdirTemp(dir, "reflector-selftest-")
	if err != nil {
		return 0, fmt.Errorf("audit speed file in %s (the state directory): %w", dir, err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	l, err := audit.Open(filepath.Join(tmp, "audit.jsonl"), "PP-SELFTEST")
	if err != nil {
		return 0, fmt.Errorf("open audit log: %w", err)
	}
	bytes := int64(1 << 30)
	dur := 60.0
	ev := audit.Event{
		EventType: audit.SessionCompleted, PeerID: "PP-SELFTEST", PeerAddr: "192.0.2.1:50000",
		TestType: "throughput", TestID: "selftest", Decision: "completed",
		BytesTransferred: &bytes, DurationSec: &dur,
	}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		if err := l.Write(ev); err != nil {
			_ = l.Close()
			return 0, fmt.Errorf("audit write: %w", err)
		}
		n++
	}
	el := time.Since(start)
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close audit log: %w", err)
	}
	return float64(n) / el.Seconds(), nil
}

// checkEd25519 measures signatures and verifications per second: every
// mutual-TLS handshake costs one of each per side.
func checkEd25519(d time.Duration) Check {
	c := Check{Name: CheckEd25519}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		c.Value, c.Verdict, c.Hint = "error", Fail, err.Error()
		return c
	}
	msg := make([]byte, 64)
	var sig []byte
	signs, verifies := 0, 0
	start := time.Now()
	for time.Since(start) < d/2 {
		sig = ed25519.Sign(key, msg)
		signs++
	}
	signRate := float64(signs) / time.Since(start).Seconds()
	start = time.Now()
	for time.Since(start) < d/2 {
		if !ed25519.Verify(pub, msg, sig) {
			c.Value, c.Verdict, c.Hint = "error", Fail, "a fresh Ed25519 signature did not verify"
			return c
		}
		verifies++
	}
	verifyRate := float64(verifies) / time.Since(start).Seconds()
	c.Value = fmt.Sprintf("%.0f sign/s, %.0f verify/s", signRate, verifyRate)
	c.Verdict = grade(min(signRate, verifyRate), 5000, 200)
	if c.Verdict != OK {
		c.Hint = "slow public-key crypto limits TLS handshakes per second (one per test stream when tunneled)"
	}
	return c
}

func checkClock() Check {
	c := Check{Name: CheckClock}
	synced, err := hostinfo.ClockSynced()
	switch {
	case err != nil:
		c.Value, c.Verdict, c.Hint = "unknown", Warn, fmt.Sprintf("not measured: %v", err)
	case synced:
		c.Value, c.Verdict = "synchronised", OK
	default:
		c.Value, c.Verdict = "not synchronised", Warn
		c.Hint = "enable NTP (chrony or systemd-timesyncd): certificate validity, grant expiry and audit times depend on it"
	}
	return c
}

func checkFDLimit() Check {
	c := Check{Name: CheckFDLimit}
	soft, hard, err := fdLimit()
	if err != nil {
		c.Value, c.Verdict, c.Hint = "unknown", Warn, fmt.Sprintf("not measured: %v", err)
		return c
	}
	c.Value = fmt.Sprintf("%d (hard %d)", soft, hard)
	c.Verdict = grade(float64(soft), wantFDs, 1024)
	if c.Verdict != OK {
		c.Hint = fmt.Sprintf("raise the open files limit to at least %d (systemd LimitNOFILE=, container --ulimit nofile=)", wantFDs)
	}
	return c
}

func checkUDPBuffers() Check {
	c := Check{Name: CheckUDPBuffers}
	rmem, wmem, err := udpBufferMax()
	if err != nil {
		c.Value, c.Verdict, c.Hint = "unknown", Warn, fmt.Sprintf("not measured: %v", err)
		return c
	}
	c.Value = fmt.Sprintf("rmem_max %d, wmem_max %d", rmem, wmem)
	if rmem >= quicUDPBuffer && wmem >= quicUDPBuffer {
		c.Verdict = OK
		return c
	}
	c.Verdict = Warn
	c.Hint = fmt.Sprintf("QUIC (tunneled UDP tests) wants %d-byte socket buffers: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d",
		quicUDPBuffer, quicUDPBuffer, quicUDPBuffer)
	return c
}
