// Package echo is the latency reflector's data plane: an RFC 862 UDP echo
// engine for one session, and the prober that measures through it.
//
// # Engine
//
// Engine echoes every datagram from the session's allowed source address
// back to its sender, unmodified, reading and writing in batches through
// dataplane/udpbatch (recvmmsg/sendmmsg on Linux). Datagrams from any other
// source are dropped and counted; a token bucket clamps the echo rate; with
// Readers > 1 several SO_REUSEPORT sockets share the port, each with its own
// reader goroutine (the kernel spreads flows over them by 4-tuple hash, so
// this helps only when the peer uses several source ports). The counters in
// Stats always satisfy
//
//	Received = Echoed + DroppedForeign + DroppedRate + DroppedTruncated + SendErrors
//
// once the engine is idle.
//
// # Timestamped probes (our extension)
//
// In timestamped mode the engine recognizes probe packets and fills in its
// receive and send times before echoing. A probe is at least HeaderLen (40)
// bytes; all integers are big-endian:
//
//	offset size field
//	     0    4 magic "PPE1"
//	     4    1 flags: bit 0 (FlagStamped) set by the server when it stamped;
//	            other bits are kept as sent
//	     5    3 reserved, must be zero
//	     8    8 sequence number
//	    16    8 client send time, nanoseconds in the client's own clock
//	            (opaque to the server; Probe uses time since the run began)
//	    24    8 server receive time, nanoseconds since the Unix epoch
//	    32    8 server send time, nanoseconds since the Unix epoch
//	    40    - padding: Probe fills it with a pseudo-random stream derived
//	            from the sequence number and client send time
//
// The receive time is the kernel's SO_TIMESTAMPNS stamp where available,
// else the time the batch was read; the send time is taken once per batch
// just before it is written. A datagram in timestamped mode that is shorter
// than the header, has the wrong magic or non-zero reserved bytes is echoed
// unmodified. Outside timestamped mode nothing is ever modified.
//
// # Prober
//
// Probe sends paced probes over a connected datagram socket and verifies
// every reply bit for bit without storing the packets: the padding can be
// regenerated from the header. It reports loss, duplicates, reordering, RTT
// percentiles, RFC 3550 jitter and, with timestamps, the server's own
// processing time.
package echo
