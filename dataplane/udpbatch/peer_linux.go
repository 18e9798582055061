//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sock_diag layout (include/uapi/linux/inet_diag.h); x/sys/unix has the
// SK_MEMINFO_* indexes but not these.
const (
	inetDiagSkmeminfo = 7          // INET_DIAG_SKMEMINFO attribute
	inetDiagNoCookie  = 0xffffffff // INET_DIAG_NOCOOKIE, each half
	diagReqLen        = 56         // sizeof(struct inet_diag_req_v2)
	diagMsgLen        = 72         // sizeof(struct inet_diag_msg)
	diagAnswerMax     = 1024       // one inet_diag_msg with its attributes
)

// errNoMeminfo reports a sock_diag answer without SK_MEMINFO.
var errNoMeminfo = errors.New("sock_diag: answer without SK_MEMINFO")

type peerSys struct {
	fd  int
	req [unix.SizeofNlMsghdr + diagReqLen]byte
	buf [diagAnswerMax]byte
}

func (p *peerSys) open(local, remote netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	p.fd = fd
	p.fillRequest(local, remote)
	return nil
}

// fillRequest prepares the one-socket SOCK_DIAG_BY_FAMILY request.
func (p *peerSys) fillRequest(local, remote netip.AddrPort) {
	family := byte(unix.AF_INET6)
	if local.Addr().Unmap().Is4() && remote.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	ne := binary.NativeEndian
	b := p.req[:]
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	r := b[unix.SizeofNlMsghdr:]
	r[0], r[1], r[2] = family, unix.IPPROTO_UDP, 1<<(inetDiagSkmeminfo-1)
	ne.PutUint32(r[4:], 0xffffffff) // any state
	// The kernel looks the socket up as the receiver of a datagram from
	// id.src to id.dst, so the peer is dst.
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	putDiagAddr(id[4:20], local.Addr(), family)
	putDiagAddr(id[20:36], remote.Addr(), family)
	ne.PutUint32(id[40:], inetDiagNoCookie)
	ne.PutUint32(id[44:], inetDiagNoCookie)
}

func putDiagAddr(b []byte, a netip.Addr, family byte) {
	if family == unix.AF_INET {
		a4 := a.Unmap().As4()
		copy(b, a4[:])
		return
	}
	a16 := a.As16()
	copy(b, a16[:])
}

func (p *peerSys) read() (PeerMem, error) {
	if err := unix.Send(p.fd, p.req[:], 0); err != nil {
		return PeerMem{}, os.NewSyscallError("sock_diag send", err)
	}
	for {
		n, _, err := unix.Recvfrom(p.fd, p.buf[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return PeerMem{}, os.NewSyscallError("sock_diag recv", err)
		}
		return parseDiag(p.buf[:n])
	}
}

// parseDiag reads the SK_MEMINFO attribute of the one inet_diag_msg in b,
// or the error of an NLMSG_ERROR answer.
func parseDiag(b []byte) (PeerMem, error) {
	ne := binary.NativeEndian
	if len(b) < unix.SizeofNlMsghdr {
		return PeerMem{}, fmt.Errorf("sock_diag: short answer (%d bytes)", len(b))
	}
	l := min(int(ne.Uint32(b[0:])), len(b))
	if ne.Uint16(b[4:]) == unix.NLMSG_ERROR {
		if l >= unix.SizeofNlMsghdr+4 {
			if e := int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); e < 0 {
				return PeerMem{}, os.NewSyscallError("sock_diag", syscall.Errno(-e))
			}
		}
		return PeerMem{}, errors.New("sock_diag: error answer")
	}
	attrs := b[min(l, unix.SizeofNlMsghdr+diagMsgLen):l]
	for len(attrs) >= 4 {
		al, at := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if al < 4 || al > len(attrs) {
			break
		}
		if at == inetDiagSkmeminfo && al >= 4+4*(unix.SK_MEMINFO_DROPS+1) {
			v := attrs[4:al]
			return PeerMem{
				Queued: int(ne.Uint32(v[4*unix.SK_MEMINFO_RMEM_ALLOC:])),
				Limit:  int(ne.Uint32(v[4*unix.SK_MEMINFO_RCVBUF:])),
				Drops:  ne.Uint32(v[4*unix.SK_MEMINFO_DROPS:]),
			}, nil
		}
		attrs = attrs[min(len(attrs), (al+3)&^3):]
	}
	return PeerMem{}, errNoMeminfo
}

func (p *peerSys) close() error { return unix.Close(p.fd) }
