// Package iperf3proto implements the iperf3 wire protocol natively: the
// control-connection state machine, the parameter and result JSON, the UDP
// packet header and statistics, a server that serves stock iperf3 clients and
// a client that can test against stock iperf3 servers.
//
// The protocol is reimplemented from its observable behaviour and the
// reference implementation's documentation; wire values (states, error codes,
// connect message) match iperf3 3.x so that stock peers interoperate.
package iperf3proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// State is a control-connection state byte (a signed char on the wire).
type State int8

// Control states as iperf3 sends them on the control connection.
const (
	TestStart       State = 1
	TestRunning     State = 2
	TestEnd         State = 4
	ParamExchange   State = 9
	CreateStreams   State = 10
	ServerTerminate State = 11
	ClientTerminate State = 12
	ExchangeResults State = 13
	DisplayResults  State = 14
	IperfDone       State = 16
	AccessDenied    State = -1
	ServerError     State = -2
)

// String names the state the way iperf3's debug output does.
func (s State) String() string {
	switch s {
	case TestStart:
		return "TEST_START"
	case TestRunning:
		return "TEST_RUNNING"
	case TestEnd:
		return "TEST_END"
	case ParamExchange:
		return "PARAM_EXCHANGE"
	case CreateStreams:
		return "CREATE_STREAMS"
	case ServerTerminate:
		return "SERVER_TERMINATE"
	case ClientTerminate:
		return "CLIENT_TERMINATE"
	case ExchangeResults:
		return "EXCHANGE_RESULTS"
	case DisplayResults:
		return "DISPLAY_RESULTS"
	case IperfDone:
		return "IPERF_DONE"
	case AccessDenied:
		return "ACCESS_DENIED"
	case ServerError:
		return "SERVER_ERROR"
	}
	return fmt.Sprintf("STATE(%d)", int8(s))
}

// Protocol limits and wire constants.
const (
	// CookieSize is the length of the opaque cookie every connection of a
	// test starts with (36 ASCII characters and a NUL).
	CookieSize = 37
	// MaxParamsSize caps the parameter JSON, as the reference server does.
	MaxParamsSize = 8 << 10
	// MaxResultsSize caps a results JSON message (the reference server reads
	// it without a cap; we do not).
	MaxResultsSize = 1 << 20
	// MaxStreams is the protocol's maximum of parallel streams.
	MaxStreams = 128
	// MaxTime is the protocol's maximum test duration in seconds.
	MaxTime = 86400
	// MaxOmit is the protocol's maximum omit time in seconds.
	MaxOmit = 600
	// MaxBlockSize is the largest TCP block length a client may ask for.
	MaxBlockSize = 1 << 20
	// MinUDPBlockSize and MaxUDPBlockSize bound the UDP datagram length.
	MinUDPBlockSize = 16
	MaxUDPBlockSize = 65535 - 8 - 20
	// MaxTCPBuffer bounds the requested socket buffer (-w).
	MaxTCPBuffer = 512 << 20
	// MaxMSS bounds the requested MSS (-M).
	MaxMSS = 32*1024 - 1
	// MaxBurst bounds the requested burst count.
	MaxBurst = 1000
	// DefaultTCPBlockSize is the TCP block length when the client sends none.
	DefaultTCPBlockSize = 128 << 10
	// DefaultUDPBlockSize is the UDP datagram length when none is given.
	DefaultUDPBlockSize = 1460
)

// UDP connect handshake values, as 32-bit integers in the sender's host
// byte order. On the wire (little-endian hosts, which is what every peer in
// practice is, and big-endian builds swap the constants so the bytes match)
// the message is the bytes "9876" and the reply "6789".
const (
	UDPConnectMsg         uint32 = 0x36373839
	UDPConnectReply       uint32 = 0x39383736
	LegacyUDPConnectMsg   uint32 = 123456789
	LegacyUDPConnectReply uint32 = 987654321
)

// udpConnectReplyBytes is the reply as written on the wire.
var udpConnectReplyBytes = binary.LittleEndian.AppendUint32(nil, UDPConnectReply)

// udpConnectMsgBytes is the connect message as written on the wire.
var udpConnectMsgBytes = binary.LittleEndian.AppendUint32(nil, UDPConnectMsg)

// IsUDPConnectMsg reports whether b is a UDP connect message (current or
// legacy value, in either byte order).
func IsUDPConnectMsg(b []byte) bool {
	if len(b) != 4 {
		return false
	}
	le, be := binary.LittleEndian.Uint32(b), binary.BigEndian.Uint32(b)
	return le == UDPConnectMsg || le == LegacyUDPConnectMsg || be == LegacyUDPConnectMsg
}

// IsUDPConnectReply reports whether b is a UDP connect reply (current or
// legacy value, in either byte order).
func IsUDPConnectReply(b []byte) bool {
	if len(b) != 4 {
		return false
	}
	le, be := binary.LittleEndian.Uint32(b), binary.BigEndian.Uint32(b)
	return le == UDPConnectReply || le == LegacyUDPConnectReply || be == LegacyUDPConnectReply
}

// ErrorCode is an iperf3 i_errno value sent after SERVER_ERROR.
type ErrorCode int32

// Error codes the server sends (values as in iperf3 3.x).
const (
	ErrDuration      ErrorCode = 5
	ErrNumStreams    ErrorCode = 6
	ErrBlockSize     ErrorCode = 7
	ErrBufSize       ErrorCode = 8
	ErrMSS           ErrorCode = 10
	ErrOmit          ErrorCode = 12
	ErrUnimplemented ErrorCode = 13
	ErrBurst         ErrorCode = 15
	ErrUDPBlockSize  ErrorCode = 20
	ErrBadTOS        ErrorCode = 21
	ErrReverseBidir  ErrorCode = 25
	ErrTotalRate     ErrorCode = 27
	ErrRecvCookie    ErrorCode = 106
	ErrCtrlClose     ErrorCode = 109
	ErrMessage       ErrorCode = 110
	ErrRecvParams    ErrorCode = 114
	ErrRecvResults   ErrorCode = 117
	ErrClientTerm    ErrorCode = 119
	ErrServerTerm    ErrorCode = 120
	ErrAccessDenied  ErrorCode = 121
	ErrSetFlow       ErrorCode = 127
	ErrNoMsg         ErrorCode = 144
	ErrStreamAccept  ErrorCode = 204
	ErrStreamID      ErrorCode = 208
)

var errorText = map[ErrorCode]string{
	ErrDuration:      "test duration too long",
	ErrNumStreams:    "number of parallel streams too large",
	ErrBlockSize:     "block size too large",
	ErrBufSize:       "socket buffer size too large",
	ErrMSS:           "TCP MSS too large",
	ErrOmit:          "bogus value for --omit",
	ErrUnimplemented: "not implemented",
	ErrBurst:         "invalid burst count",
	ErrUDPBlockSize:  "block size invalid",
	ErrBadTOS:        "bad TOS value",
	ErrReverseBidir:  "cannot be both reverse and bidirectional",
	ErrTotalRate:     "total required bandwidth is larger than server limit",
	ErrRecvCookie:    "unable to receive cookie",
	ErrCtrlClose:     "control socket has closed unexpectedly",
	ErrMessage:       "received an unknown control message",
	ErrRecvParams:    "unable to receive parameters from client",
	ErrRecvResults:   "unable to receive results",
	ErrClientTerm:    "the client has terminated",
	ErrServerTerm:    "the server has terminated",
	ErrAccessDenied:  "the server is busy running a test. try again later",
	ErrSetFlow:       "unable to set IPv6 flow label",
	ErrNoMsg:         "no message was received",
	ErrStreamAccept:  "unable to accept stream connection",
	ErrStreamID:      "stream has an invalid id",
}

// String describes the code in iperf3's words.
func (c ErrorCode) String() string {
	if s, ok := errorText[c]; ok {
		return s
	}
	return fmt.Sprintf("iperf3 error %d", int32(c))
}

// ProtocolError is an iperf3 error carried on the wire: the server sends it
// after SERVER_ERROR, and our server returns it when it refuses a request.
type ProtocolError struct {
	Code  ErrorCode
	Errno int32
	// Detail explains the refusal locally (never sent on the wire).
	Detail string
}

func (e *ProtocolError) Error() string {
	s := "iperf3: " + e.Code.String()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Errno != 0 {
		s += fmt.Sprintf(" (errno %d)", e.Errno)
	}
	return s
}

// Sentinel errors callers branch on.
var (
	// ErrAccessDeniedByServer is returned by the client when the server
	// answers ACCESS_DENIED (busy or not allowed).
	ErrAccessDeniedByServer = errors.New("iperf3: access denied (server busy or source not allowed)")
	// ErrTooLarge is returned when a length-prefixed JSON message exceeds its cap.
	ErrTooLarge = errors.New("iperf3: message too large")
	// ErrBadState is returned when the peer sends an unexpected state byte.
	ErrBadState = errors.New("iperf3: unexpected state")
	// ErrServerTerminated is returned by the client when the server aborts the test.
	ErrServerTerminated = errors.New("iperf3: the server has terminated")
)

// writeState writes one state byte.
func writeState(w io.Writer, s State) error {
	if _, err := w.Write([]byte{byte(s)}); err != nil {
		return fmt.Errorf("write state %v: %w", s, err)
	}
	return nil
}

// readState reads one state byte.
func readState(r io.Reader) (State, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("read state: %w", err)
	}
	return State(int8(b[0])), nil
}

// writeServerError sends SERVER_ERROR followed by the code and errno, both
// as big-endian 32-bit integers.
func writeServerError(w io.Writer, code ErrorCode, errno int32) error {
	var b [9]byte
	st := ServerError
	b[0] = byte(st)
	binary.BigEndian.PutUint32(b[1:], uint32(code))
	binary.BigEndian.PutUint32(b[5:], uint32(errno))
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("write server error: %w", err)
	}
	return nil
}

// writeMessage writes a 4-byte big-endian length and b.
func writeMessage(w io.Writer, b []byte) error {
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write json message: %w", err)
	}
	return nil
}

// readMessage reads a length-prefixed message of at most max bytes.
func readMessage(r io.Reader, max int) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("read json length: %w", err)
	}
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 {
		return nil, fmt.Errorf("read json: empty message: %w", ErrTooLarge)
	}
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("read json: %d bytes, limit %d: %w", n, max, ErrTooLarge)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read json body (%d bytes): %w", n, err)
	}
	return b, nil
}

// deadlineConn is the part of net.Conn the handshake helpers need.
type deadlineConn interface {
	SetDeadline(t time.Time) error
}

// setEarliest sets on c the earlier of the non-zero times a and b.
func setEarliest(c deadlineConn, a, b time.Time) {
	d := a
	if d.IsZero() || (!b.IsZero() && b.Before(d)) {
		d = b
	}
	_ = c.SetDeadline(d)
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
