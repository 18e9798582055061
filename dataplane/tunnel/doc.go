// Package tunnel holds the data-plane pieces of tunneled mode, in which a
// test runs entirely through the reflector's control port:
//
//   - ConnListener, a net.Listener fed from outside, through which attached
//     TLS connections (after a pp-link tunnel_attach) reach the in-process
//     iperf3 server;
//   - Pipe, the byte pump that joins a local connection to a tunnel
//     connection on the appliance side;
//   - a QUIC transport (ListenQUIC, DialQUIC, QUICSession) whose RFC 9221
//     datagrams carry UDP test traffic, one flow id per UDP stream, so loss
//     and reordering stay visible to the measurement.
//
// The package decides nothing: whether an attach is allowed is the
// caller's AttachFunc, and the attach request and reply are opaque bytes
// (pp-link frames in practice).
package tunnel
