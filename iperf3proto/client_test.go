package iperf3proto

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

type clientCase struct {
	name  string
	cfg   ClientConfig
	check func(t *testing.T, r *ClientResult)
}

// checkDir checks one direction: both ends counted bytes and, for TCP
// measured over the same window (tcp set; not with -O, whose omit timers
// fire at different moments on the two ends), received <= sent <=
// received + what the streams' kernel buffers hold at the end (our
// senders count each write before they stop, so nothing arrives late).
func checkDir(t *testing.T, name string, d *DirectionResult, tcp bool) {
	t.Helper()
	if d == nil {
		t.Fatalf("%s: no result", name)
	}
	if d.SentBytes <= 0 || d.ReceivedBytes <= 0 {
		t.Fatalf("%s: sent %d received %d", name, d.SentBytes, d.ReceivedBytes)
	}
	if slack := int64(d.Streams) * inFlightPerStream(); tcp && (d.ReceivedBytes > d.SentBytes || d.SentBytes-d.ReceivedBytes > slack) {
		t.Errorf("%s: sent %d received %d: want received <= sent <= received + %d (kernel buffers)", name, d.SentBytes, d.ReceivedBytes, slack)
	}
}

func clientCases() []clientCase {
	sec := time.Second
	up := func(t *testing.T, r *ClientResult) {
		checkDir(t, "upload", r.Upload, true)
		if r.Download != nil {
			t.Error("download in a forward test")
		}
	}
	down := func(t *testing.T, r *ClientResult) {
		checkDir(t, "download", r.Download, true)
		if r.Upload != nil {
			t.Error("upload in a reverse test")
		}
	}
	return []clientCase{
		{"default", ClientConfig{Duration: sec}, up},
		{"P4", ClientConfig{Duration: sec, Parallel: 4}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if r.Upload.Streams != 4 {
				t.Errorf("streams %d", r.Upload.Streams)
			}
		}},
		{"R", ClientConfig{Duration: sec, Reverse: true}, down},
		{"R_P4", ClientConfig{Duration: sec, Reverse: true, Parallel: 4}, down},
		{"bidir", ClientConfig{Duration: sec, Bidir: true}, func(t *testing.T, r *ClientResult) {
			checkDir(t, "upload", r.Upload, true)
			checkDir(t, "download", r.Download, true)
		}},
		{"n200M", ClientConfig{Bytes: 200 << 20}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if r.Upload.SentBytes != 200<<20 {
				t.Errorf("sent %d", r.Upload.SentBytes)
			}
		}},
		{"R_n200M", ClientConfig{Bytes: 200 << 20, Reverse: true}, func(t *testing.T, r *ClientResult) {
			down(t, r)
			if r.Download.ReceivedBytes != 200<<20 {
				t.Errorf("received %d", r.Download.ReceivedBytes)
			}
		}},
		{"k2000", ClientConfig{Blocks: 2000}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if r.Upload.SentBytes != 2000*DefaultTCPBlockSize {
				t.Errorf("sent %d", r.Upload.SentBytes)
			}
		}},
		{"O1", ClientConfig{Duration: sec, Omit: sec}, func(t *testing.T, r *ClientResult) {
			checkDir(t, "upload", r.Upload, false)
		}},
		{"b200M", ClientConfig{Duration: 2 * sec, Bandwidth: 200e6}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if bps := r.Upload.ReceiverBitsPerSecond(); bps > 200e6*(1+rateTolerance) {
				t.Errorf("rate %.0f above the paced 200M", bps)
			}
		}},
		// -w sizes the receiving server's socket buffer too (a stock server
		// keeps the 208 KiB default otherwise and drops under load).
		{"u_b100M", ClientConfig{Duration: sec, UDP: true, Bandwidth: 100e6, Window: 2 << 20}, func(t *testing.T, r *ClientResult) {
			checkDir(t, "upload", r.Upload, false)
			if r.Upload.Packets <= 0 || r.Upload.Jitter <= 0 || float64(r.Upload.Lost) > 0.10*float64(r.Upload.Packets) {
				t.Errorf("udp stats %+v", r.Upload)
			}
		}},
		{"u_b100M_R_64", ClientConfig{Duration: sec, UDP: true, Bandwidth: 100e6, Reverse: true, UDP64: true}, func(t *testing.T, r *ClientResult) {
			checkDir(t, "download", r.Download, false)
			if r.Download.Packets <= 0 || float64(r.Download.Lost) > 0.10*float64(r.Download.Packets) {
				t.Errorf("udp stats %+v", r.Download)
			}
		}},
		{"u_bidir", ClientConfig{Duration: sec, UDP: true, Bandwidth: 50e6, Bidir: true, BlockLen: 1400}, func(t *testing.T, r *ClientResult) {
			checkDir(t, "upload", r.Upload, false)
			checkDir(t, "download", r.Download, false)
		}},
		{"R_n_uneven_P3", ClientConfig{Bytes: 100<<20 + 12345, Reverse: true, Parallel: 3}, func(t *testing.T, r *ClientResult) {
			down(t, r)
			if r.Download.SentBytes != 100<<20+12345 {
				t.Errorf("server sent %d, want exactly %d", r.Download.SentBytes, 100<<20+12345)
			}
		}},
		{"Z_N_M_w_l", ClientConfig{Duration: sec, ZeroCopy: true, NoDelay: true, MSS: 1400, Window: 1 << 20, BlockLen: 64 << 10}, up},
		{"R_Z_repeating", ClientConfig{Duration: sec, Reverse: true, ZeroCopy: true, RepeatingPayload: true}, down},
		{"C_reno", ClientConfig{Duration: sec, Congestion: "reno"}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if r.CongestionUsed != "reno" {
				t.Errorf("server congestion %q", r.CongestionUsed)
			}
		}},
		{"server_output", ClientConfig{Duration: sec, GetServerOutput: true}, func(t *testing.T, r *ClientResult) {
			up(t, r)
			if r.ServerOutputText == "" && len(r.ServerOutputJSON) == 0 {
				t.Error("no server output")
			}
		}},
	}
}

// TestClientAgainstOurServer runs our client against our server. Under
// -short only the cases bounded by a byte or block count run (they end as
// soon as the data is through; the timed ones take a second or two each).
func TestClientAgainstOurServer(t *testing.T) {
	for _, tc := range clientCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Duration != 0 {
				testutil.SkipIfShort(t, "a timed case")
			}
			ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
			d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var intervals int
			r, err := RunClient(ctx, d, tc.cfg, func(Interval) { intervals++ })
			if err != nil {
				t.Fatalf("RunClient: %v", err)
			}
			sr := ts.result(t)
			if sr.EndReason != EndDone {
				t.Fatalf("server end %s: %v", sr.EndReason, sr.Err)
			}
			if intervals == 0 {
				t.Error("no progress intervals")
			}
			tc.check(t, r)
			if r.Upload != nil && !within(float64(sr.BytesReceived), float64(r.Upload.ReceivedBytes), 0.001) {
				t.Errorf("server received %d, client reports %d", sr.BytesReceived, r.Upload.ReceivedBytes)
			}
			if r.Download != nil && !within(float64(sr.BytesSent), float64(r.Download.SentBytes), 0.001) {
				t.Errorf("server sent %d, client reports %d", sr.BytesSent, r.Download.SentBytes)
			}
		})
	}
}

// startStockServer starts `iperf3 -s -1` on a free port and waits until it
// prints that it listens.
func startStockServer(t *testing.T) int {
	t.Helper()
	bin := testutil.LookBinary(t, "iperf3")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server listening") {
				close(listening)
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case <-listening:
	case <-time.After(5 * time.Second):
		t.Fatal("stock iperf3 server did not start listening")
	}
	return port
}

// TestClientAgainstStockServer proves the client side against iperf3 -s.
func TestClientAgainstStockServer(t *testing.T) {
	testutil.LookBinary(t, "iperf3")
	for _, tc := range clientCases() {
		switch tc.name {
		case "default", "R_P4", "bidir", "R_n200M", "u_b100M", "u_b100M_R_64", "server_output":
		default:
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			port := startStockServer(t)
			d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := RunClient(ctx, d, tc.cfg, nil)
			if err != nil {
				t.Fatalf("RunClient against stock server: %v", err)
			}
			tc.check(t, r)
		})
	}
}

// TestClientBusy checks our client reports ACCESS_DENIED as a sentinel.
func TestClientBusy(t *testing.T) {
	t.Parallel() // its own server on :0, waits on its clock
	ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
	d := &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}
	done := make(chan error, 1)
	go func() {
		_, err := RunClient(context.Background(), d, ClientConfig{Duration: 2 * time.Second}, nil)
		done <- err
	}()
	testutil.Eventually(t, 5*time.Second, "first test running", func() bool {
		_, rcv := ts.srv.Meter()
		return rcv > 0
	})
	_, err := RunClient(context.Background(), d, ClientConfig{Duration: time.Second}, nil)
	if !errors.Is(err, ErrAccessDeniedByServer) {
		t.Errorf("second client: %v, want ErrAccessDeniedByServer", err)
	}
	if err := <-done; err != nil {
		t.Errorf("first client: %v", err)
	}
	ts.result(t)
}
