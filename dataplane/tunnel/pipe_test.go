package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// pipeRig joins a local TCP connection (as from a stock iperf3) to a TLS
// connection (as to the reflector) through Pipe: local <-> [a Pipe b] <-> far.
type pipeRig struct {
	local net.Conn // the application's end
	far   net.Conn // the reflector's end
	c     PipeCounters
	done  chan pipeResult
}

type pipeResult struct {
	aToB, bToA int64
	err        error
}

func newPipeRig(t *testing.T, ctx context.Context) *pipeRig {
	t.Helper()
	return newPipeRigOver(t, ctx, false)
}

// newPipeRigOver builds the rig, with both TLS ends over a BatchConn when
// batch is set (as the tunnel client and the reflector use them).
func newPipeRigOver(t *testing.T, ctx context.Context, batch bool) *pipeRig {
	t.Helper()
	local, a := tcpPair(t)
	srvConf, cliConf := testTLS(t)
	wrap := func(c net.Conn) net.Conn { return c }
	if batch {
		wrap = func(c net.Conn) net.Conn { return NewBatchConn(c) }
	}
	farTLS, bTLS := tlsPairOver(t, srvConf, cliConf, wrap)
	var far, b net.Conn = farTLS, bTLS
	if batch {
		far, b = BatchTLS(farTLS), BatchTLS(bTLS)
		if _, ok := b.(*batchedTLS); !ok {
			t.Fatal("BatchTLS over a BatchConn did not batch")
		}
	}
	r := &pipeRig{local: local, far: far, done: make(chan pipeResult, 1)}
	go func() {
		x, y, err := PipeCount(ctx, a, b, &r.c)
		r.done <- pipeResult{x, y, err}
	}()
	return r
}

func TestPipeBothWaysWithHalfClose(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) { testPipeBothWays(t, batch) })
	}
}

func testPipeBothWays(t *testing.T, batch bool) {
	r := newPipeRigOver(t, context.Background(), batch)
	up := make([]byte, 8<<20+13)
	down := make([]byte, 5<<20+7)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)

	// Both directions at once; each sender half-closes when done, and
	// the receivers must see EOF exactly after the data.
	errs := make(chan error, 4)
	var gotUp, gotDown []byte
	go func() {
		_, err := r.local.Write(up)
		if err == nil {
			err = r.local.(*net.TCPConn).CloseWrite()
		}
		errs <- err
	}()
	go func() {
		// Uneven writes exercise batches below, at and above batchMax.
		var err error
		for rest := down; len(rest) > 0 && err == nil; {
			n := min(len(rest), 1+len(rest)%(3*batchMax/2))
			_, err = r.far.Write(rest[:n])
			rest = rest[n:]
		}
		if err == nil {
			err = r.far.(interface{ CloseWrite() error }).CloseWrite()
		}
		errs <- err
	}()
	go func() {
		var err error
		gotUp, err = io.ReadAll(r.far)
		errs <- err
	}()
	go func() {
		var err error
		gotDown, err = io.ReadAll(r.local)
		errs <- err
	}()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("data corrupted: up %d/%d bytes, down %d/%d bytes", len(gotUp), len(up), len(gotDown), len(down))
	}
	res := <-r.done
	if res.err != nil {
		t.Fatalf("Pipe: %v", res.err)
	}
	if res.aToB != int64(len(up)) || res.bToA != int64(len(down)) {
		t.Fatalf("Pipe counted %d/%d, want %d/%d", res.aToB, res.bToA, len(up), len(down))
	}
	if r.c.AToB.Load() != res.aToB || r.c.BToA.Load() != res.bToA {
		t.Fatalf("live counters %d/%d disagree with result", r.c.AToB.Load(), r.c.BToA.Load())
	}
}

// After one side half-closes, the other direction still flows: a request,
// EOF, then a response (iperf3's control connection ends this way).
func TestPipeHalfCloseThenReply(t *testing.T) {
	r := newPipeRig(t, context.Background())
	if _, err := r.local.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := r.local.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r.far)
	if err != nil || string(got) != "request" {
		t.Fatalf("far read %q, %v", got, err)
	}
	if _, err := r.far.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	_ = r.far.Close()
	got, err = io.ReadAll(r.local)
	if err != nil || string(got) != "reply" {
		t.Fatalf("local read %q, %v", got, err)
	}
	if res := <-r.done; res.aToB != 7 || res.bToA != 5 {
		t.Fatalf("counts %d/%d, err %v", res.aToB, res.bToA, res.err)
	}
}

func TestPipeContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newPipeRig(t, ctx)
	if _, err := r.local.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(r.far, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	res := <-r.done
	if !errors.Is(res.err, context.Canceled) {
		t.Fatalf("Pipe after cancel: %v", res.err)
	}
	// Both outer ends see their connection end.
	_ = r.local.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.local.Read(buf); err == nil {
		t.Fatal("local end still open after cancel")
	}
}

func TestBatchTLSWithoutBatchConn(t *testing.T) {
	srvConf, cliConf := testTLS(t)
	_, cli := tlsPair(t, srvConf, cliConf)
	if got := BatchTLS(cli); got != net.Conn(cli) {
		t.Fatalf("BatchTLS over a plain conn returned %T, want the *tls.Conn itself", got)
	}
}
