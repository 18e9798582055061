// Package tunnel holds the data-plane pieces of tunneled mode, in which a
// test runs entirely through the reflector's control port:
//
//   - ConnListener, a net.Listener fed from outside, through which attached
//     TLS connections (after a pp-link tunnel_attach) reach the in-process
//     iperf3 server; FlowAcceptor, its UDP counterpart, hands the iperf3
//     server the flows of the test's QUIC session once it attaches;
//   - Pipe, the byte pump that joins a local connection to a tunnel
//     connection on the appliance side, and BatchConn/BatchTLS, which send
//     the TLS records of one Write in one system call and read the socket
//     in large chunks;
//   - a QUIC transport (ListenQUIC, DialQUIC, QUICSession) whose RFC 9221
//     datagrams carry UDP test traffic, one flow id byte per UDP stream, so
//     loss and reordering stay visible to the measurement, and FlowEcho,
//     the udp_echo engine over a flow.
//
// The package decides nothing: whether an attach is allowed is the
// caller's AttachFunc, and attach requests and replies are opaque bytes
// framed like pp-link/1 (4-byte big-endian length, then the payload), so
// the caller passes pp-link envelopes straight through.
//
// Wiring on the reflector: wrap each accepted TCP connection in
// NewBatchConn before tls.Server; per tunneled grant create a
// ConnListener and (for UDP) a FlowAcceptor and give them to
// iperf3proto.Server.ServeOne; on an accepted tunnel_attach, answer, then
// ConnListener.Handoff(ctx, BatchTLS(tlsConn)), which returns when the
// engine closes the connection. Run ListenQUIC on the same port number
// over UDP with the same tls.Config; its AttachFunc decodes the pp-link
// envelope, checks the peer and token, and returns a serve function that
// gives the session to the grant's FlowAcceptor (throughput) or runs
// FlowEcho on Flow(0) (udp_echo) until the session or the test ends.
//
// On the appliance: each TCP connection of the test is
// tls.Client(NewBatchConn(raw)) plus the attach, then BatchTLS; UDP
// streams are OpenFlow() on one DialQUIC session after Attach. A UDP
// datagram that does not fit one QUIC datagram (stock iperf3's default
// length is 32 KiB on loopback) is split into fragments and reassembled,
// up to MaxDatagram; a datagram with a piece missing is lost, as on a
// path. Losses inside each end (full queues, quic-go's receive queue,
// reassembly given up) are counted in SessionStats apart from path loss.
package tunnel
