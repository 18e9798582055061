package server_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/packetparamedic/reflector/controlplane/audit"
	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
	"github.com/packetparamedic/reflector/controlplane/server"
	"github.com/packetparamedic/reflector/controlplane/server/servertest"
	"github.com/packetparamedic/reflector/dataplane/tunnel"
	"github.com/packetparamedic/reflector/internal/testutil"
)

// quicSessions makes the server listen for QUIC (tunneled mode) and
// refuses every attach: these tests are about what happens before.
type quicSessions struct{ server.NoSessions }

func (quicSessions) SetControlPort(int) {}

func (quicSessions) AttachQUIC(context.Context, server.PeerInfo, link.TunnelAttach) (*link.TunnelAttachResult, func(*tunnel.QUICSession)) {
	return &link.TunnelAttachResult{OK: false, Message: "test"}, nil
}

func startQUIC(t *testing.T, edit func(*config.Config)) *servertest.Harness {
	t.Helper()
	return servertest.Start(t, func(c *config.Config) {
		c.Network.Mode = config.ModeTunneled
		if edit != nil {
			edit(c)
		}
	}, server.Options{
		NewSessions:         func(server.Env) (server.Sessions, error) { return quicSessions{}, nil },
		DenialAuditInterval: time.Hour,
	})
}

// recorder is a PacketConn that keeps what quic-go writes and never
// delivers an answer: it yields the client's first flight.
type recorder struct {
	sent   chan []byte
	closed chan struct{}
	once   sync.Once
}

func (r *recorder) ReadFrom([]byte) (int, net.Addr, error) {
	<-r.closed
	return 0, nil, net.ErrClosed
}

func (r *recorder) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case r.sent <- append([]byte(nil), p...):
	default:
	}
	return len(p), nil
}

func (r *recorder) Close() error                     { r.once.Do(func() { close(r.closed) }); return nil }
func (r *recorder) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

// quicInitial returns the datagrams a real quic-go client sends first to
// addr: its Initial packets carrying the ClientHello (two of them when
// the post-quantum key share makes it larger than one), with a fresh
// random connection ID.
func quicInitial(t *testing.T, addr *net.UDPAddr) [][]byte {
	t.Helper()
	cert, err := identity.NewCertificate(servertest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{sent: make(chan []byte, 16), closed: make(chan struct{})}
	tr := &quic.Transport{Conn: rec}
	defer tr.Close()
	defer rec.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go func() { _, _ = tr.Dial(ctx, addr, identity.ClientTLSConfig(cert, link.ALPN, ""), &quic.Config{}) }()
	var flight [][]byte
	select {
	case p := <-rec.sent:
		flight = append(flight, p)
	case <-time.After(10 * time.Second):
		t.Fatal("quic-go sent no Initial")
	}
	// The rest of the first flight leaves at once; a retransmission would
	// wait for a probe timeout (hundreds of milliseconds).
	for {
		select {
		case p := <-rec.sent:
			flight = append(flight, p)
		case <-time.After(50 * time.Millisecond):
			return flight
		}
	}
}

func size(flight [][]byte) int {
	n := 0
	for _, p := range flight {
		n += len(p)
	}
	return n
}

// replies sends a client's first flight from a fresh UDP socket on src
// that never answers and returns the bytes the server sent back until it
// fell silent, and whether the first reply was a Retry.
func replies(t *testing.T, server *net.UDPAddr, src net.IP, flight [][]byte) (n int, retry bool) {
	t.Helper()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: src})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for _, p := range flight {
		if _, err := uc.WriteToUDP(p, server); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 65536)
	first := true
	for {
		// quic-go retransmits its flight on a probe timeout (about 1 s
		// for a first handshake without an RTT sample), up to the
		// anti-amplification limit.
		_ = uc.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
		m, _, err := uc.ReadFromUDP(buf)
		if err != nil {
			return n, retry
		}
		if first {
			// Long header, type bits 11: Retry (QUIC v1).
			retry = buf[0]&0x80 != 0 && (buf[0]>>4)&3 == 3
			first = false
		}
		n += m
	}
}

// TestQUICAmplificationAndRetry: first flights from sources that never
// answer (spoofed) draw one Retry each, smaller than what they sent (the
// ratio stays far below QUIC's 3x limit, which quic-go alone slightly
// overshoots: 3.005x measured without the guard), and a real client,
// which answers the Retry, still completes its handshake (issue 11,
// item 5).
func TestQUICAmplificationAndRetry(t *testing.T) {
	h := startQUIC(t, nil)
	srv, err := net.ResolveUDPAddr("udp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	const flood = 8
	flights := make([][][]byte, flood)
	for i := range flights {
		flights[i] = quicInitial(t, srv)
	}
	var sent, got, retries int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, retry := replies(t, srv, net.IPv4(127, 0, 5, byte(1+i)), flights[i])
			in := size(flights[i])
			mu.Lock()
			defer mu.Unlock()
			sent += in
			got += n
			if retry {
				retries++
			}
			// quic-go drops what its Retry queue cannot take: 0 bytes.
			if (n > 0 && !retry) || n > in {
				t.Errorf("spoofed flight %d of %d bytes drew %d bytes (retry %v), want at most one Retry, smaller than the flight", i, in, n, retry)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d spoofed first flights, %d bytes in, %d bytes out (%.3fx), %d answered with a Retry; stats %+v",
		flood, sent, got, float64(got)/float64(sent), retries, h.Server.Stats())
	if got > sent || retries == 0 {
		t.Fatalf("replies %d bytes for %d, %d Retries: want Retries, under 1x", got, sent, retries)
	}
	cert, err := identity.NewCertificate(servertest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, h.Addr, identity.ClientTLSConfig(cert, link.ALPN, h.Server.EndpointID()), &quic.Config{})
	if err != nil {
		t.Fatalf("a real client through the Retry: %v", err)
	}
	defer c.CloseWithError(0, "")
	testutil.Eventually(t, 5*time.Second, "the real client's handshake completed on the server", func() bool {
		return h.Server.Stats().QUICCompleted == 1
	})
	if st := h.Server.Stats(); st.QUICRetries < uint64(retries)+1 {
		t.Fatalf("stats %+v: want the Retries counted", st)
	}
}

// TestQUICHandshakeLimitsPerAddress: handshakes from one address beyond the
// per-address rate are refused, counted and summarized in the audit log
// like TCP ones (issue 11, item 4).
func TestQUICHandshakeLimitsPerAddress(t *testing.T) {
	h := startQUIC(t, func(c *config.Config) {
		c.Limits.NewConnsPerSecPerAddr = 1
		c.Limits.NewConnsBurstPerAddr = 3
	})
	cert, err := identity.NewCertificate(servertest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	const attempts = 10
	var open []*quic.Conn
	defer func() {
		for _, c := range open {
			_ = c.CloseWithError(0, "")
		}
	}()
	refused := 0
	for range attempts {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := quic.DialAddr(ctx, h.Addr, identity.ClientTLSConfig(cert, link.ALPN, h.Server.EndpointID()), &quic.Config{})
		cancel()
		var te *quic.TransportError
		switch {
		case err == nil:
			open = append(open, c)
		case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
			refused++
		default:
			t.Fatalf("dial: %v", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "completed handshakes counted", func() bool {
		return h.Server.Stats().QUICCompleted == uint64(len(open))
	})
	st := h.Server.Stats()
	t.Logf("%d handshakes completed, %d refused; stats %+v", len(open), refused, st)
	// A refused client may send its ClientHello in two Initial packets,
	// each refused: the server counts packets, at least one per client.
	if refused == 0 || len(open)+refused != attempts || st.QUICRefused < uint64(refused) {
		t.Fatalf("completed %d, refused %d of %d; stats %+v", len(open), refused, attempts, st)
	}
	h.Stop()
	var counted float64
	for _, e := range servertest.FindAudit(h.AuditEvents(), audit.RateLimited) {
		reasons, _ := e.Details["reasons"].(map[string]any)
		n, _ := reasons["quic_"+server.ReasonAddrRateLimited].(float64)
		counted += n
	}
	if uint64(counted) != st.QUICRefused {
		t.Fatalf("audit summaries count %.0f QUIC refusals, want %d", counted, st.QUICRefused)
	}
}
