package iperf3proto

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestStreamSetEndIdempotent: ending and closing a set twice, in either
// order, neither panics nor blocks (the client's old endStreams closed its
// stop channel a second time).
func TestStreamSetEndIdempotent(t *testing.T) {
	var sent, recv atomic.Int64
	a, b := net.Pipe()
	defer func() { _ = b.Close() }()
	s := newStreamSet(Params{TCP: true}, &sent, &recv, 0)
	s.add(a, false)
	s.startWorkers(false)
	s.end(false)
	s.end(false)
	s.close()
	s.close()
	s2 := newStreamSet(Params{TCP: true}, &sent, &recv, 0)
	s2.close()
	s2.end(false)
}

// TestSendLimitCountsAfterOmit: the -n budget lets everything through
// while omitting and then bounds the measured bytes exactly.
func TestSendLimitCountsAfterOmit(t *testing.T) {
	l := &sendLimit{limit: 1000}
	l.omitting.Store(true)
	for range 10 {
		if got := l.take(300); got != 300 {
			t.Fatalf("take while omitting = %d, want 300", got)
		}
	}
	l.restart()
	total := 0
	for n := l.take(300); n > 0; n = l.take(300) {
		total += n
	}
	if total != 1000 {
		t.Fatalf("bytes allowed after omit = %d, want exactly 1000", total)
	}
}

// TestClientByteLimitWithOmit: with -n and -O (both directions) the
// measured bytes are the budget, give or take one send chunk per stream,
// and the test ends by the budget (the client used to skip its byte limit
// when omit was set and overshoot by whatever it sent in a 5 ms poll).
func TestClientByteLimitWithOmit(t *testing.T) {
	t.Parallel() // its own server on :0, waits on its clock
	const budget = 24 << 20
	for _, rev := range []bool{false, true} {
		t.Run("reverse="+strconv.FormatBool(rev), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, "127.0.0.1", ServerConfig{}, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := ClientConfig{Bytes: budget, Omit: time.Second, Parallel: 2, Reverse: rev, Bandwidth: 400e6}
			res, err := RunClient(ctx, &NetDialer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.port))}, cfg, nil)
			if err != nil {
				t.Fatalf("RunClient: %v", err)
			}
			dir := res.Upload
			if rev {
				dir = res.Download
			}
			chunk := int64(cfg.params().BlockLen())
			if dir.SentBytes < budget || dir.SentBytes > budget+int64(cfg.Parallel)*chunk {
				t.Fatalf("measured sent bytes %d, want %d (+ at most one %d-byte block per stream)", dir.SentBytes, budget, chunk)
			}
		})
	}
}
