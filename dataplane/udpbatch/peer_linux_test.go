//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPeerQueue watches a receiver that does not read: what it holds and
// what it dropped account for every datagram sent, and Limit is its
// SO_RCVBUF.
func TestPeerQueue(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "udp4", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := listen(t, tc.network, tc.addr)
			if err := rc.SetReadBuffer(32 << 10); err != nil {
				t.Fatal(err)
			}
			sc, err := net.DialUDP(tc.network, nil, rc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sc.Close() })
			q, err := OpenPeerQueue(addrOf(sc), addrOf(rc))
			if err != nil {
				t.Fatalf("OpenPeerQueue: %v", err)
			}
			t.Cleanup(func() { q.Close() })
			m, err := q.Read()
			if err != nil {
				t.Fatal(err)
			}
			if want := rcvbuf(t, rc); m.Queued != 0 || m.Drops != 0 || m.Limit != want {
				t.Fatalf("idle receiver: %+v, want nothing queued or dropped and Limit %d", m, want)
			}
			const blk, sent = 1000, 300 // 300 KB into a 64 KB buffer, fewer than the loopback backlog's 1000
			buf := make([]byte, blk)
			for range 10 {
				if _, err := sc.Write(buf); err != nil {
					t.Fatal(err)
				}
			}
			if m, err = q.Read(); err != nil || m.Queued < 10*blk {
				t.Fatalf("after 10 datagrams of %d bytes: %+v, %v; want at least %d queued", blk, m, err, 10*blk)
			}
			for range sent - 10 {
				if _, err := sc.Write(buf); err != nil {
					t.Fatal(err)
				}
			}
			if m, err = q.Read(); err != nil || m.Drops == 0 || m.Queued > m.Limit+64<<10 {
				t.Fatalf("after %d datagrams: %+v, %v; want drops and the queue near its limit", sent, m, err)
			}
			if got := drain(t, rc); got+int(m.Drops) != sent {
				t.Fatalf("read %d + dropped %d != sent %d", got, m.Drops, sent)
			}
		})
	}
}

func rcvbuf(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// drain reads what c holds; the datagrams are already queued, so a short
// deadline only ends the read once the queue is empty.
func drain(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return n
			}
			t.Fatal(err)
		}
		n++
	}
}

// TestPeerQueueNoSocket: nothing is bound at the peer address.
func TestPeerQueueNoSocket(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1:0")
	free := listen(t, "udp4", "127.0.0.1:0")
	peer := addrOf(free)
	free.Close()
	if _, err := OpenPeerQueue(addrOf(c), peer); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("OpenPeerQueue to a closed port: %v, want ENOENT", err)
	}
}

// TestParseDiag covers the answers the kernel does not give on request.
func TestParseDiag(t *testing.T) {
	ne := binary.NativeEndian
	hdr := func(typ uint16, body []byte) []byte {
		b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
		ne.PutUint32(b, uint32(unix.SizeofNlMsghdr+len(body)))
		ne.PutUint16(b[4:], typ)
		return append(b, body...)
	}
	errAnswer := make([]byte, 4)
	ne.PutUint32(errAnswer, uint32(0x100000000-int64(unix.EPERM)))
	msg := make([]byte, diagMsgLen)
	badAttr := append(append([]byte{}, msg...), 2, 0, 7, 0) // length 2 < 4
	meminfo := make([]byte, 4+4*9)
	ne.PutUint16(meminfo, uint16(len(meminfo)))
	ne.PutUint16(meminfo[2:], inetDiagSkmeminfo)
	ne.PutUint32(meminfo[4:], 4608)
	ne.PutUint32(meminfo[8:], 212992)
	ne.PutUint32(meminfo[4+4*8:], 3)
	shutdown := []byte{5, 0, 8, 0, 0, 0, 0, 0} // INET_DIAG_SHUTDOWN, padded
	good := append(append(append([]byte{}, msg...), shutdown...), meminfo...)
	for _, tc := range []struct {
		name string
		b    []byte
		want PeerMem
		err  error
	}{
		{"short", []byte{1, 2, 3}, PeerMem{}, nil},
		{"errno", hdr(unix.NLMSG_ERROR, errAnswer), PeerMem{}, unix.EPERM},
		{"no attributes", hdr(unix.SOCK_DIAG_BY_FAMILY, msg), PeerMem{}, errNoMeminfo},
		{"bad attribute", hdr(unix.SOCK_DIAG_BY_FAMILY, badAttr), PeerMem{}, errNoMeminfo},
		{"meminfo", hdr(unix.SOCK_DIAG_BY_FAMILY, good), PeerMem{Queued: 4608, Limit: 212992, Drops: 3}, nil},
	} {
		got, err := parseDiag(tc.b)
		if got != tc.want || (tc.err != nil && !errors.Is(err, tc.err)) || (tc.err == nil && tc.want == (PeerMem{}) && err == nil) {
			t.Errorf("%s: %+v, %v; want %+v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}
