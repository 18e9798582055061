package zerocopy

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
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
