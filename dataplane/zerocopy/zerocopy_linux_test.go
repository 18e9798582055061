package zerocopy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// TestFastPathsUsed checks that TCP sockets really take the splice and
// sendfile paths rather than falling back silently.
func TestFastPathsUsed(t *testing.T) {
	p, err := NewPayload(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if p.fd < 0 {
		t.Fatal("no memfd behind the payload")
	}
	c, s := tcpPair(t)
	closePair(t, c, s)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		sent, unsupported, err := p.sendfile(rc, 1<<20)
		if err == nil && (unsupported || sent != 1<<20) {
			err = &net.OpError{Op: "sendfile", Err: unix.EINVAL}
		}
		_ = c.CloseWrite()
		errc <- err
	}()
	pp, err := getPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pp.close()
	if pp.size < 64<<10 {
		t.Fatalf("pipe size %d", pp.size)
	}
	null, err := devNull()
	if err != nil {
		t.Fatal(err)
	}
	src, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n, dirty, unsupported, err := spliceDiscard(src, pp, null, noBytes)
	if err != nil || dirty || unsupported || n != 1<<20 {
		t.Fatalf("spliceDiscard = %d, dirty %v, unsupported %v, %v", n, dirty, unsupported, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("sendfile: %v", err)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDiscardSpliceTuning varies the splice pipe size and the
// receive low-watermark (SO_RCVLOWAT, which makes the socket readable
// only once that much is queued).
func BenchmarkDiscardSpliceTuning(b *testing.B) {
	null, err := devNull()
	if err != nil {
		b.Fatal(err)
	}
	for _, pipeSize := range []int{64 << 10, 256 << 10, 1 << 20} {
		for _, lowat := range []int{0, 256 << 10} {
			b.Run(fmt.Sprintf("pipe%dK/lowat%dK", pipeSize>>10, lowat>>10), func(b *testing.B) {
				benchDiscard(b, func(c net.Conn) (int64, error) {
					var fds [2]int
					if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
						return 0, err
					}
					defer closeFDs(fds)
					got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
					if err != nil {
						return 0, err
					}
					rc, err := c.(*net.TCPConn).SyscallConn()
					if err != nil {
						return 0, err
					}
					if lowat > 0 {
						var serr error
						_ = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, lowat) })
						if serr != nil {
							return 0, serr
						}
					}
					n, _, _, err := spliceDiscard(rc, &pipe{r: fds[0], w: fds[1], size: got}, null, noBytes)
					return n, err
				})
			})
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestPooledPipesAreClosed runs concurrent Discards (several pipes in the
// pool) and checks that once the pool is dropped by GC, the pipes'
// descriptors are closed.
func TestPooledPipesAreClosed(t *testing.T) {
	if _, err := devNull(); err != nil {
		t.Fatal(err)
	}
	run := func(streams int) {
		var wg sync.WaitGroup
		for range streams {
			c, s := tcpPair(t)
			wg.Go(func() {
				defer func() { _ = s.Close() }()
				if n, err := Discard(s, nil); err != nil || n != 1<<20 {
					t.Errorf("Discard = %d, %v", n, err)
				}
			})
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				if err := writeN(c, 1<<20); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	before := openFDs(t)
	run(6)
	testutil.Eventually(t, 10*time.Second, "pipe descriptors closed after GC", func() bool {
		runtime.GC()
		return openFDs(t) <= before
	})
}
