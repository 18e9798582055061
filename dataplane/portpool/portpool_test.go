package portpool

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
)

func TestNewRejectsBadRanges(t *testing.T) {
	for _, r := range [][2]int{{0, 10}, {10, 9}, {65000, 65536}, {-1, 5}} {
		if _, err := New(r[0], r[1]); err == nil {
			t.Errorf("New(%d, %d) accepted", r[0], r[1])
		}
	}
	if _, err := New(5, 5); err != nil {
		t.Errorf("New(5, 5): %v", err)
	}
}

func ok(int) error { return nil }

func TestReleaseAndExhaustion(t *testing.T) {
	p, err := New(100, 103)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for range 4 {
		port, err := p.Acquire(ok)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, port)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{100, 101, 102, 103}) {
		t.Fatalf("acquired %v", got)
	}
	if _, err := p.Acquire(ok); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Acquire on a full pool: %v", err)
	}
	p.Release(101)
	p.Release(101) // a second release is harmless
	p.Release(999) // so is releasing a foreign port
	if port, err := p.Acquire(ok); err != nil || port != 101 {
		t.Fatalf("Acquire after release = %d, %v; want 101", port, err)
	}
	if in := p.InUse(); !slices.Equal(in, []int{100, 101, 102, 103}) {
		t.Fatalf("InUse = %v", in)
	}
}

// TestRandomOrder: ports come in an unpredictable order, covering the
// range: of 200 grants from a 10-port range every port is handed out, and
// the next port is not simply the one after the last (it was round robin).
func TestRandomOrder(t *testing.T) {
	p, err := New(5201, 5210)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	successor, prev := 0, 0
	for range 200 {
		port, err := p.Acquire(ok)
		if err != nil {
			t.Fatal(err)
		}
		seen[port]++
		if port == prev+1 || (prev == 5210 && port == 5201) {
			successor++
		}
		prev = port
		p.Release(port)
	}
	if len(seen) != 10 {
		t.Fatalf("ports handed out: %v, want all 10", seen)
	}
	// A round robin gives the successor every time; a uniform choice
	// about one time in ten.
	if successor > 100 {
		t.Fatalf("%d of 200 grants were the previous port + 1: not random", successor)
	}
}

func TestFailingTryIsSkipped(t *testing.T) {
	p, err := New(200, 203)
	if err != nil {
		t.Fatal(err)
	}
	busy := errors.New("busy")
	var tried []int
	port, err := p.Acquire(func(port int) error {
		tried = append(tried, port)
		if port != 202 {
			return busy
		}
		return nil
	})
	if err != nil || port != 202 {
		t.Fatalf("Acquire = %d, %v; want 202", port, err)
	}
	if len(tried) == 0 || tried[len(tried)-1] != 202 || slices.Contains(tried[:len(tried)-1], 202) {
		t.Fatalf("tried %v", tried)
	}
	if in := p.InUse(); !slices.Equal(in, []int{202}) {
		t.Fatalf("failed tries left ports in use: %v", in)
	}
	tried = tried[:0]
	_, err = p.Acquire(func(port int) error { tried = append(tried, port); return busy })
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, busy) {
		t.Fatalf("all tries failing: %v, want ErrExhausted wrapping the try error", err)
	}
	slices.Sort(tried)
	if !slices.Equal(tried, []int{200, 201, 203}) {
		t.Fatalf("tried %v, want every free port once", tried)
	}
}

func TestBusyPortSkippedWithRealBind(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Close() }()
	taken := holder.Addr().(*net.TCPAddr).Port
	if taken == 65535 {
		t.Skip("kernel picked the last port")
	}
	p, err := New(taken, taken+1)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	port, err := p.Acquire(func(port int) error {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		ln = l
		return nil
	})
	if err != nil {
		t.Skipf("port %d also busy: %v", taken+1, err)
	}
	defer func() { _ = ln.Close() }()
	if port != taken+1 {
		t.Fatalf("Acquire = %d, want %d (the busy port skipped)", port, taken+1)
	}
}

func TestConcurrentAcquireNeverSharesAPort(t *testing.T) {
	p, err := New(1000, 1049)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		owned = map[int]int{}
		wg    sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for range 200 {
				port, err := p.Acquire(ok)
				if errors.Is(err, ErrExhausted) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if o, dup := owned[port]; dup {
					t.Errorf("port %d given to %d and %d", port, o, g)
				}
				owned[port] = g
				mu.Unlock()
				mu.Lock()
				delete(owned, port)
				mu.Unlock()
				p.Release(port)
			}
		})
	}
	wg.Wait()
	if in := p.InUse(); len(in) != 0 {
		t.Fatalf("ports still in use: %v", in)
	}
}
