package iperf3proto

import (
	"context"
	"net"
)

// UDPAcceptor hands the server one UDP stream at a time, the way iperf3's
// server "accepts" UDP: it takes the first datagram arriving on the test
// port and gives back a socket connected to that datagram's sender
// (dataplane/udpaccept.Acceptor is the implementation over SO_REUSEPORT).
//
// AcceptUDP returns a connection connected to one client stream and the
// datagram received (normally the 4-byte connect message); it must return
// net.ErrClosed after Close, and must return when ctx is done.
type UDPAcceptor interface {
	AcceptUDP(ctx context.Context) (conn net.Conn, first []byte, err error)
}
