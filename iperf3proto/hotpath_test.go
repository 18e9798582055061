package iperf3proto

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestHotPathsDoNotAllocate checks the per-packet and per-block helpers.
func TestHotPathsDoNotAllocate(t *testing.T) {
	var s UDPStats
	h := UDPHeader{Sec: 1, Usec: 2}
	now := time.Now()
	buf := make([]byte, 16)
	lim := &sendLimit{limit: 1 << 40}
	p := pacer{start: now}
	stop := make(chan struct{})
	allocs := testing.AllocsPerRun(1000, func() {
		h.Seq++
		s.Add(h, 1400, now)
		_, _ = h.Encode(buf, true)
		_, _ = DecodeUDPHeader(buf, true)
		_ = lim.take(1400)
		_ = p.wait(1400, stop)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet", allocs)
	}
}

// TestTCPReceiveDoesNotAllocatePerChunk: the receive loop's allocations do
// not grow with the bytes moved.
func TestTCPReceiveDoesNotAllocatePerChunk(t *testing.T) {
	measure := func(total int) float64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ln.Close() }()
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			b := make([]byte, 1<<20)
			for sent := 0; sent < total; sent += len(b) {
				if _, err := c.Write(b); err != nil {
					break
				}
			}
			_ = c.Close()
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		var n atomic.Int64
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = discardTCP(c, serverRcvLowat(1), nil, func(k int) { n.Add(int64(k)) })
		runtime.ReadMemStats(&after)
		if n.Load() < int64(total) {
			t.Fatalf("received %d of %d bytes", n.Load(), total)
		}
		return float64(after.Mallocs - before.Mallocs)
	}
	small, large := measure(4<<20), measure(256<<20)
	t.Logf("allocations: %v for 4 MiB, %v for 256 MiB", small, large)
	if large > small+32 {
		t.Fatalf("allocations grow with bytes: %v for 4 MiB, %v for 256 MiB", small, large)
	}
}

func BenchmarkUDPStatsAdd(b *testing.B) {
	var s UDPStats
	h := UDPHeader{Sec: 1}
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(1400)
	for b.Loop() {
		h.Seq++
		s.Add(h, 1400, now)
	}
}
