package udpbatch

import "net/netip"

// PeerMem is the receive memory of a UDP socket, as the kernel accounts
// it: every queued datagram is charged its buffer's full size (the skb's
// truesize, about 2.3 KB for a 1400-byte datagram), and the socket drops
// what arrives while Queued is above Limit.
type PeerMem struct {
	Queued int    // bytes charged for the datagrams waiting to be read
	Limit  int    // the receive buffer (SO_RCVBUF as the kernel keeps it)
	Drops  uint32 // datagrams dropped so far (for want of room, or filtered)
}

// PeerQueue reads the receive memory of one UDP socket on this host: the
// socket bound to remote that receives datagrams from local, typically
// the peer of a connected socket whose packets never leave the machine.
// On loopback the kernel gives a sender no backpressure (the packet is
// handed to the receiving socket, or dropped there, inside the send
// call), so this is the only way a sender can see that its receiver is
// full. Linux asks sock_diag (NETLINK_SOCK_DIAG, as `ss -uam` does), one
// request and answer per Read; elsewhere OpenPeerQueue reports
// ErrUnsupported. A PeerQueue is not safe for concurrent use.
type PeerQueue struct{ sys peerSys }

// OpenPeerQueue returns a PeerQueue for the socket at remote that receives
// from local, after one successful Read (so a socket that is not on this
// host, or a kernel without UDP sock_diag, fails here).
func OpenPeerQueue(local, remote netip.AddrPort) (*PeerQueue, error) {
	q := &PeerQueue{}
	if err := q.sys.open(local, remote); err != nil {
		return nil, err
	}
	if _, err := q.Read(); err != nil {
		_ = q.Close()
		return nil, err
	}
	return q, nil
}

// Read returns the peer socket's receive memory now.
func (q *PeerQueue) Read() (PeerMem, error) { return q.sys.read() }

// Close releases the PeerQueue's kernel resources.
func (q *PeerQueue) Close() error { return q.sys.close() }
