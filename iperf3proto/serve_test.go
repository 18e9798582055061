package iperf3proto

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestServeBackToBackClients runs short tests one right after another
// against Serve: a client that connects while the previous test is still
// tearing down must be served (as stock iperf3 -s does), not refused.
func TestServeBackToBackClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewServer(ServerConfig{TestTimeout: 20 * time.Second})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = ln.Close()
	})

	d := &NetDialer{Address: ln.Addr().String()}
	const runs = 15
	for i := range runs {
		rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := RunClient(rctx, d, ClientConfig{Bytes: 1 << 20}, nil)
		rcancel()
		if errors.Is(err, ErrAccessDeniedByServer) {
			t.Fatalf("run %d of %d: refused as busy right after the previous test: %v", i+1, runs, err)
		}
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if res.Upload == nil || res.Upload.ReceivedBytes < 1<<20 {
			t.Fatalf("run %d: upload result %+v, want >= 1 MiB received", i+1, res.Upload)
		}
	}
}

// msgSizeDialer dials like NetDialer, but its UDP conns refuse every data
// datagram with EMSGSIZE after the connect message, as a path whose MTU is
// below the block length does.
type msgSizeDialer struct{ NetDialer }

func (d *msgSizeDialer) DialUDP(ctx context.Context) (net.Conn, error) {
	c, err := d.NetDialer.DialUDP(ctx)
	if err != nil {
		return nil, err
	}
	return &msgSizeConn{Conn: c}, nil
}

type msgSizeConn struct {
	net.Conn
	writes int
}

func (c *msgSizeConn) Write(b []byte) (int, error) {
	c.writes++
	if c.writes == 1 {
		return c.Conn.Write(b)
	}
	return 0, &net.OpError{Op: "write", Net: "udp", Err: syscall.EMSGSIZE}
}

// TestClientReportsUDPSendFailure: a UDP test whose datagrams can never be
// sent must fail with the cause, not report an empty success.
func TestClientReportsUDPSendFailure(t *testing.T) {
	ts := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 20 * time.Second}, 1)
	d := &msgSizeDialer{NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := RunClient(ctx, d, ClientConfig{UDP: true, Duration: time.Second, BlockLen: 1400}, nil)
	t.Logf("client returned after %v", time.Since(start))
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("RunClient error = %v, want EMSGSIZE", err)
	}
}

// TestServeOneSilentClientEndsWithContext: a control connection that never
// sends its cookie must not hold ServeOne past the caller's cancel (the
// session manager's session_close), only until the handshake timeout.
func TestServeOneSilentClientEndsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := NewServer(ServerConfig{HandshakeTimeout: time.Minute})
	done := make(chan *TestResult, 1)
	go func() {
		r, _ := srv.ServeOne(ctx, ln, nil)
		done <- r
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// The server is in the test (reading the silent client's cookie) once
	// a second connection is refused as busy.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c2, b[:]); err != nil || State(int8(b[0])) != AccessDenied {
		t.Fatalf("second connection: state %d, %v; want ACCESS_DENIED", int8(b[0]), err)
	}
	cancel()
	select {
	case r := <-done:
		if r != nil && r.EndReason == EndDone {
			t.Fatalf("silent client test ended %q", r.EndReason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeOne still waits for the silent client's cookie 5 s after cancel")
	}
}
