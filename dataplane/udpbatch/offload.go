package udpbatch

// Segmentation offloads (UDP GSO and GRO). With GSO a Message whose Seg is
// set carries several datagrams of Seg bytes back to back (the last may be
// shorter) and the kernel splits them, so one sendmmsg entry sends up to
// MaxSegments datagrams. With GRO the kernel may hand ReadBatch several
// datagrams of one sender in one Message, with their size in Seg; the
// buffers must then be large enough (MaxGROBuf) or the batch is cut.

// MaxSegments is the most datagrams one GSO message may carry (the
// kernel's UDP_MAX_SEGMENTS on every kernel that has UDP_SEGMENT).
const MaxSegments = 64

// MaxGSOBytes is the largest payload of one GSO message: the datagrams
// travel in one IP packet up to segmentation.
const MaxGSOBytes = 65000

// MaxGROBuf is the buffer size a Message needs to take any coalesced
// datagrams GRO delivers.
const MaxGROBuf = 64 << 10

// EnableGSO turns on UDP segmentation offload for WriteBatch after probing
// the kernel (UDP_SEGMENT); without it WriteBatch refuses messages with
// Seg set, and the error matches ErrUnsupported.
func (c *Conn) EnableGSO() error { return c.sys.enableGSO() }

// DisableGSO turns segmentation offload off again, for a path whose device
// cannot segment (WriteBatch then fails with EIO).
func (c *Conn) DisableGSO() { c.sys.gso.Store(false) }

// GSO reports whether segmentation offload is on.
func (c *Conn) GSO() bool { return c.sys.gso.Load() }

// EnableGRO asks the kernel to coalesce received datagrams (UDP_GRO);
// ReadBatch then sets Message.Seg. Where that is not available the error
// matches ErrUnsupported and every Message holds one datagram.
func (c *Conn) EnableGRO() error { return c.sys.enableGRO() }

// Segments calls f with each datagram of a received or prepared message:
// b[:n] split every seg bytes (seg <= 0: one datagram).
func Segments(b []byte, seg int, f func(d []byte)) {
	if seg <= 0 || seg >= len(b) {
		f(b)
		return
	}
	for len(b) > seg {
		f(b[:seg])
		b = b[seg:]
	}
	if len(b) > 0 {
		f(b)
	}
}
