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

// TestBudgetWatchPeerStopped: a receive-only -n client whose omit period
// ended after the server's counts fewer bytes than the budget although
// the server's senders stopped at it; it ends once nothing arrives for
// the idle time instead of waiting for the deadline (seen under load:
// TestClientByteLimitWithOmit reverse hung 30 s). While bytes keep
// arriving, or before any arrived, it does not end.
func TestBudgetWatchPeerStopped(t *testing.T) {
	p := Params{TCP: true, Bytes: 1000, Reverse: true, Parallel: 1}
	c := &client{p: p}
	c.set = newStreamSet(p, &c.sent, &c.recv, 0)
	c.set.add(nil, false)
	w := budgetWatch{budget: p.byteBudget(), idle: peerStopIdle(p)}
	t0 := time.Unix(1000, 0)
	c.recv.Store(300) // bytes of the omit period
	w.restart(c, t0)
	if w.done(c, t0.Add(time.Hour)) {
		t.Fatal("ended before any measured byte arrived")
	}
	c.recv.Add(600) // the server's budget, minus what it sent before our omit end
	if w.done(c, t0.Add(time.Hour+time.Second)) {
		t.Fatal("ended while bytes were still arriving")
	}
	if w.done(c, t0.Add(time.Hour+time.Second+w.idle/2)) {
		t.Fatal("ended before the idle time")
	}
	if !w.done(c, t0.Add(time.Hour+time.Second+w.idle)) {
		t.Fatal("a receive-only client did not end once the server's senders stopped")
	}
	c.recv.Add(400) // 1000 measured: the budget
	if !w.done(c, t0.Add(time.Hour+2*time.Second)) {
		t.Fatal("the whole budget arrived and the client did not end")
	}
	if got := peerStopIdle(Params{TCP: true, Bandwidth: 8000, Len: 128 << 10}); got < 4*128*time.Second {
		t.Fatalf("idle at 8 kbit/s with 128 KiB blocks = %v, want at least four blocks' time", got)
	}
}
