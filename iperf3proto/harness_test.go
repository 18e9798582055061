package iperf3proto

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/dataplane/udpaccept"
	"github.com/packetparamedic/reflector/internal/testutil"
	"github.com/rs/zerolog"
)

// testServer is one server on a loopback port with its own listeners.
type testServer struct {
	srv     *Server
	ln      net.Listener
	ua      *udpaccept.Acceptor
	port    int
	results chan *TestResult
	errs    chan error
	cancel  context.CancelFunc
}

// startServer runs ServeOne count times (or until cleanup) on host:0.
func startServer(t testing.TB, host string, cfg ServerConfig, count int) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	ua, err := udpaccept.NewAcceptor(ctx, net.JoinHostPort(host, strconv.Itoa(port)), nil)
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	if cfg.Logger.GetLevel() == zerolog.DebugLevel && testing.Verbose() {
		cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	} else {
		cfg.Logger = zerolog.Nop()
	}
	ts := &testServer{srv: NewServer(cfg), ln: ln, ua: ua, port: port,
		results: make(chan *TestResult, count), errs: make(chan error, 1), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < count; i++ {
			r, err := ts.srv.ServeOne(ctx, ln, ua)
			if err != nil {
				ts.errs <- err
				return
			}
			ts.results <- r
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = ua.Close()
		_ = ln.Close()
	})
	return ts
}

// result waits for the next finished test.
func (ts *testServer) result(t testing.TB) *TestResult {
	t.Helper()
	select {
	case r := <-ts.results:
		return r
	case err := <-ts.errs:
		t.Fatalf("ServeOne: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no test result within 30s")
	}
	return nil
}

// iperfJSON is the part of `iperf3 -J` output the tests check.
type iperfJSON struct {
	Error string `json:"error"`
	Start struct {
		TestStart struct {
			NumStreams int   `json:"num_streams"`
			BlkSize    int64 `json:"blksize"`
			Duration   int   `json:"duration"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Streams []struct {
			Sender   *iperfSum `json:"sender"`
			Receiver *iperfSum `json:"receiver"`
			UDP      *iperfSum `json:"udp"`
		} `json:"streams"`
		SumSent            *iperfSum      `json:"sum_sent"`
		SumReceived        *iperfSum      `json:"sum_received"`
		SumSentBidir       *iperfSum      `json:"sum_sent_bidir_reverse"`
		SumReceivedBidir   *iperfSum      `json:"sum_received_bidir_reverse"`
		Sum                *iperfSum      `json:"sum"`
		CPU                map[string]any `json:"cpu_utilization_percent"`
		SenderCongestion   string         `json:"sender_tcp_congestion"`
		ReceiverCongestion string         `json:"receiver_tcp_congestion"`
	} `json:"end"`
	ServerOutputText string          `json:"server_output_text"`
	ServerOutputJSON json.RawMessage `json:"server_output_json"`
}

type iperfSum struct {
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	BPS         float64 `json:"bits_per_second"`
	Retransmits int64   `json:"retransmits"`
	Jitter      float64 `json:"jitter_ms"`
	Lost        int64   `json:"lost_packets"`
	Packets     int64   `json:"packets"`
	LostPercent float64 `json:"lost_percent"`
	Sender      bool    `json:"sender"`
}

// runIperf3 runs the stock client with args and decodes its JSON.
func runIperf3(t testing.TB, args ...string) (*iperfJSON, []byte) {
	t.Helper()
	return runIperf3Bin(t, testutil.LookBinary(t, "iperf3"), args...)
}

// runIperf3Bin runs the iperf3 client bin with args and decodes its JSON.
func runIperf3Bin(t testing.TB, bin string, args ...string) (*iperfJSON, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	var j iperfJSON
	if jerr := json.Unmarshal(out, &j); jerr != nil {
		t.Fatalf("iperf3 %v: %v; output not JSON (%v): %s", args, err, jerr, out)
	}
	return &j, out
}
