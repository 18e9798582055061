// Package udpaccept accepts iperf3 UDP streams on a shared port the way the
// C iperf3 server does: the first datagram of a stream arrives on an
// unconnected socket bound to the port; that socket is connect()ed to the
// sender and becomes the stream's socket, and a fresh socket is bound to
// the same port (SO_REUSEPORT) for the next stream. The kernel then
// delivers each sender's packets to its own connected socket.
package udpaccept

import "errors"

// ErrNotSupported is returned by NewAcceptor on platforms without the
// socket semantics the acceptor needs (everything but Linux).
var ErrNotSupported = errors.New("udpaccept: not supported on this platform")
