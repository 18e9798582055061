package iperf3proto

import (
	"context"
	"errors"
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
