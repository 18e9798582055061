package iperf3proto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// rawClient speaks the control protocol by hand.
type rawClient struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, port int, local string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, c: c}
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawClient) cookie() {
	r.t.Helper()
	ck, err := newCookie()
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(ck[:])
}

func (r *rawClient) state() State {
	r.t.Helper()
	st, err := readState(r.c)
	if err != nil {
		r.t.Fatalf("read state: %v", err)
	}
	return st
}

func (r *rawClient) serverError() ErrorCode {
	r.t.Helper()
	if st := r.state(); st != ServerError {
		r.t.Fatalf("state %v, want SERVER_ERROR", st)
	}
	var b [8]byte
	if _, err := io.ReadFull(r.c, b[:]); err != nil {
		r.t.Fatalf("read error code: %v", err)
	}
	return ErrorCode(int32(binary.BigEndian.Uint32(b[:4])))
}

func (r *rawClient) params(js string) {
	r.t.Helper()
	if st := r.state(); st != ParamExchange {
		r.t.Fatalf("state %v, want PARAM_EXCHANGE", st)
	}
	if err := writeMessage(r.c, []byte(js)); err != nil {
		r.t.Fatal(err)
	}
}

func TestServerRefusesBadRequests(t *testing.T) {
	tests := []struct {
		name string
		cfg  ServerConfig
		send func(r *rawClient)
		code ErrorCode
	}{
		{"params over 8KiB", ServerConfig{}, func(r *rawClient) {
			if st := r.state(); st != ParamExchange {
				t.Fatalf("state %v", st)
			}
			var h [4]byte
			binary.BigEndian.PutUint32(h[:], MaxParamsSize+1)
			r.write(h[:])
		}, ErrRecvParams},
		{"string for number", ServerConfig{}, func(r *rawClient) { r.params(`{"tcp":true,"parallel":"4","time":1}`) }, ErrRecvParams},
		{"not json", ServerConfig{}, func(r *rawClient) { r.params(`{"tcp":tru`) }, ErrRecvParams},
		{"too many streams (protocol)", ServerConfig{}, func(r *rawClient) { r.params(`{"tcp":true,"parallel":500,"time":1}`) }, ErrNumStreams},
		{"too many streams (server)", ServerConfig{MaxStreams: 2}, func(r *rawClient) { r.params(`{"tcp":true,"parallel":3,"time":1}`) }, ErrNumStreams},
		{"too long (server)", ServerConfig{MaxDuration: 5 * time.Second}, func(r *rawClient) { r.params(`{"tcp":true,"time":5,"omit":1}`) }, ErrDuration},
		{"udp block too small", ServerConfig{}, func(r *rawClient) { r.params(`{"udp":true,"len":8,"time":1}`) }, ErrUDPBlockSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, "127.0.0.1", tc.cfg, 1)
			r := dialRaw(t, ts.port, "")
			r.cookie()
			tc.send(r)
			if got := r.serverError(); got != tc.code {
				t.Errorf("code %d (%v), want %d (%v)", got, got, tc.code, tc.code)
			}
			res := ts.result(t)
			if res.EndReason != EndError || res.Err == nil {
				t.Errorf("end %s err %v", res.EndReason, res.Err)
			}
		})
	}
}

func TestServerTruncatedAndBadState(t *testing.T) {
	t.Run("truncated params", func(t *testing.T) {
		ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
		r := dialRaw(t, ts.port, "")
		r.cookie()
		if st := r.state(); st != ParamExchange {
			t.Fatalf("state %v", st)
		}
		r.write([]byte{0, 0, 0, 100, '{', '"'})
		_ = r.c.Close()
		if res := ts.result(t); res.EndReason != EndClientGone {
			t.Errorf("end %s err %v", res.EndReason, res.Err)
		}
	})
	t.Run("short cookie", func(t *testing.T) {
		ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
		r := dialRaw(t, ts.port, "")
		r.write([]byte("abc"))
		_ = r.c.Close()
		if res := ts.result(t); res.EndReason != EndClientGone {
			t.Errorf("end %s err %v", res.EndReason, res.Err)
		}
	})
	t.Run("bad state while setting up", func(t *testing.T) {
		ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
		r := dialRaw(t, ts.port, "")
		r.cookie()
		r.params(`{"tcp":true,"time":1,"parallel":1,"len":1000}`)
		if st := r.state(); st != CreateStreams {
			t.Fatalf("state %v", st)
		}
		r.write([]byte{99})
		if res := ts.result(t); res.EndReason != EndError || !errors.Is(res.Err, ErrBadState) {
			t.Errorf("end %s err %v", res.EndReason, res.Err)
		}
	})
	t.Run("state flood while setting up", func(t *testing.T) {
		ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
		r := dialRaw(t, ts.port, "")
		r.cookie()
		r.params(`{"tcp":true,"time":1,"parallel":1,"len":1000}`)
		if st := r.state(); st != CreateStreams {
			t.Fatalf("state %v", st)
		}
		r.write(bytes.Repeat([]byte{byte(TestStart)}, 64))
		if res := ts.result(t); res.EndReason != EndError {
			t.Errorf("end %s err %v", res.EndReason, res.Err)
		}
	})
	t.Run("foreign cookie on a stream", func(t *testing.T) {
		ts := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 2 * time.Second}, 1)
		r := dialRaw(t, ts.port, "")
		r.cookie()
		r.params(`{"tcp":true,"time":1,"parallel":1,"len":1000}`)
		if st := r.state(); st != CreateStreams {
			t.Fatalf("state %v", st)
		}
		s := dialRaw(t, ts.port, "")
		s.cookie() // a different cookie
		if st := s.state(); st != AccessDenied {
			t.Fatalf("stream with foreign cookie: %v", st)
		}
		_ = r.c.Close()
		ts.result(t)
	})
}

// TestServerStalledClient: cookie, then nothing; the deadline tears the
// test down and the listener serves the next test.
func TestServerStalledClient(t *testing.T) {
	t.Parallel() // its own server on :0, waits on its clock
	ts := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 700 * time.Millisecond}, 3)
	r := dialRaw(t, ts.port, "")
	r.cookie()
	start := time.Now()
	res := ts.result(t)
	if res.EndReason != EndDeadline {
		t.Fatalf("end %s err %v", res.EndReason, res.Err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("teardown took %v", d)
	}
	// Stalled after stream creation (no streams connect).
	r2 := dialRaw(t, ts.port, "")
	r2.cookie()
	r2.params(`{"tcp":true,"time":1,"parallel":2,"len":1000}`)
	if st := r2.state(); st != CreateStreams {
		t.Fatalf("state %v", st)
	}
	if res := ts.result(t); res.EndReason != EndDeadline {
		t.Fatalf("stalled setup: end %s err %v", res.EndReason, res.Err)
	}
	// The next test runs normally.
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
	if _, err := RunClient(context.Background(), d, ClientConfig{Bytes: 10 << 20}, nil); err != nil {
		t.Fatalf("next test: %v", err)
	}
	if res := ts.result(t); res.EndReason != EndDone {
		t.Fatalf("next test: end %s err %v", res.EndReason, res.Err)
	}
}

// TestServerDeadlineWhileRunning: a running test is cut at the deadline and
// the client told SERVER_TERMINATE.
func TestServerDeadlineWhileRunning(t *testing.T) {
	t.Parallel() // its own server on :0, waits on its clock
	ts := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 800 * time.Millisecond}, 1)
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
	_, err := RunClient(context.Background(), d, ClientConfig{Duration: 5 * time.Second, Reverse: true}, nil)
	if !errors.Is(err, ErrServerTerminated) {
		t.Errorf("client: %v, want ErrServerTerminated", err)
	}
	res := ts.result(t)
	if res.EndReason != EndDeadline || res.BytesSent == 0 {
		t.Errorf("end %s sent %d err %v", res.EndReason, res.BytesSent, res.Err)
	}
}

// TestServerDisallowedSource: only 127.0.0.1 may test; 127.0.0.2 is denied,
// and the allowed client is served afterwards.
func TestServerDisallowedSource(t *testing.T) {
	ts := startServer(t, "127.0.0.1", ServerConfig{AllowedSource: netip.MustParseAddr("127.0.0.1")}, 1)
	r := dialRaw(t, ts.port, "127.0.0.2")
	r.cookie()
	if st := r.state(); st != AccessDenied {
		t.Fatalf("disallowed source got %v", st)
	}
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port)),
		Dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}}
	if _, err := RunClient(context.Background(), d, ClientConfig{Duration: time.Second}, nil); !errors.Is(err, ErrAccessDeniedByServer) {
		t.Fatalf("our client from 127.0.0.2: %v", err)
	}
	d.Dialer = net.Dialer{}
	if _, err := RunClient(context.Background(), d, ClientConfig{Bytes: 1 << 20}, nil); err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	if res := ts.result(t); res.EndReason != EndDone || res.Remote.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("end %s remote %v", res.EndReason, res.Remote)
	}
}

// TestServerBusyRaw: a connection during a test gets ACCESS_DENIED without
// the server waiting for its cookie.
func TestServerBusyRaw(t *testing.T) {
	t.Parallel() // its own server on :0, waits on its clock
	ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
	done := make(chan error, 1)
	go func() {
		_, err := RunClient(context.Background(), d, ClientConfig{Duration: 1500 * time.Millisecond}, nil)
		done <- err
	}()
	testutil.Eventually(t, 5*time.Second, "test running", func() bool { _, r := ts.srv.Meter(); return r > 0 })
	r := dialRaw(t, ts.port, "")
	if st := r.state(); st != AccessDenied {
		t.Fatalf("got %v", st)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ts.result(t)
}

func TestServerOutputJSON(t *testing.T) {
	ts := startServer(t, "127.0.0.1", ServerConfig{ServerOutputJSON: true}, 1)
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
	r, err := RunClient(context.Background(), d, ClientConfig{Bytes: 10 << 20, GetServerOutput: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(r.ServerOutputJSON), `"sum_received"`) {
		t.Errorf("server output JSON: %s", r.ServerOutputJSON)
	}
	ts.result(t)
}

// TestListenAndServe runs the standalone entry point for one test.
func TestListenAndServe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ListenAndServe(ctx, addr, ServerConfig{}, true) }()
	d := &NetDialer{Address: addr}
	var res *ClientResult
	testutil.Eventually(t, 5*time.Second, "server up and test run", func() bool {
		res, err = RunClient(ctx, d, ClientConfig{UDP: true, Duration: time.Second, Bandwidth: 10e6}, nil)
		return err == nil
	})
	if res.Upload == nil || res.Upload.ReceivedBytes == 0 {
		t.Fatalf("result %+v", res)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("one-off server did not return")
	}
}

// TestNoGoroutineLeak runs tests that end every way and checks the
// goroutine count returns to its baseline.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("tests", func(t *testing.T) {
		stall := startServer(t, "127.0.0.1", ServerConfig{TestTimeout: 500 * time.Millisecond}, 1)
		r := dialRaw(t, stall.port, "")
		r.cookie()
		stall.result(t)
		_ = r.c.Close()
		ts := startServer(t, "127.0.0.1", ServerConfig{}, 2)
		d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
		if _, err := RunClient(context.Background(), d, ClientConfig{UDP: true, Bidir: true, Duration: 300 * time.Millisecond, Bandwidth: 10e6}, nil); err != nil {
			t.Fatal(err)
		}
		ts.result(t)
		if _, err := RunClient(context.Background(), d, ClientConfig{Reverse: true, Parallel: 3, Duration: 300 * time.Millisecond}, nil); err != nil {
			t.Fatal(err)
		}
		ts.result(t)
	})
	testutil.Eventually(t, 5*time.Second, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}
