package echo

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of the probe header; probes are at least this long.
const HeaderLen = 40

// Magic opens every probe.
const Magic = "PPE1"

// FlagStamped is set in Header.Flags by a server that wrote its receive and
// send times into the probe.
const FlagStamped uint8 = 1 << 0

// Field offsets of the probe header.
const (
	offFlags    = 4
	offReserved = 5
	offSeq      = 8
	offClient   = 16
	offServerRx = 24
	offServerTx = 32
)

// Errors returned by ParseHeader and Header.Encode.
var (
	// ErrShort reports a buffer shorter than HeaderLen.
	ErrShort = errors.New("probe shorter than header")
	// ErrMagic reports a datagram that does not start with Magic.
	ErrMagic = errors.New("probe magic mismatch")
	// ErrReserved reports non-zero reserved header bytes.
	ErrReserved = errors.New("probe reserved bytes not zero")
)

// Header is the decoded probe header.
type Header struct {
	// Flags holds FlagStamped and any other bits the client set.
	Flags uint8
	// Seq numbers the probe within its run.
	Seq uint64
	// ClientSend is the client's send time in its own clock, in ns.
	ClientSend int64
	// ServerRx and ServerTx are the server's receive and send times, ns
	// since the Unix epoch; zero until a server stamps the probe.
	ServerRx, ServerTx int64
}

// ParseHeader decodes the header at the start of b. It never reads past
// HeaderLen bytes and never fails on anything but the checks it documents.
func ParseHeader(b []byte) (Header, error) {
	if err := conforming(b); err != nil {
		return Header{}, err
	}
	return Header{
		Flags:      b[offFlags],
		Seq:        binary.BigEndian.Uint64(b[offSeq:]),
		ClientSend: int64(binary.BigEndian.Uint64(b[offClient:])),
		ServerRx:   int64(binary.BigEndian.Uint64(b[offServerRx:])),
		ServerTx:   int64(binary.BigEndian.Uint64(b[offServerTx:])),
	}, nil
}

// Encode writes h into the first HeaderLen bytes of b.
func (h *Header) Encode(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("encode probe header into %d bytes: %w", len(b), ErrShort)
	}
	copy(b, Magic)
	b[offFlags] = h.Flags
	b[offReserved], b[offReserved+1], b[offReserved+2] = 0, 0, 0
	binary.BigEndian.PutUint64(b[offSeq:], h.Seq)
	binary.BigEndian.PutUint64(b[offClient:], uint64(h.ClientSend))
	binary.BigEndian.PutUint64(b[offServerRx:], uint64(h.ServerRx))
	binary.BigEndian.PutUint64(b[offServerTx:], uint64(h.ServerTx))
	return nil
}

// conforming reports why b is not a probe, or nil.
func conforming(b []byte) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if string(b[:len(Magic)]) != Magic {
		return ErrMagic
	}
	if b[offReserved]|b[offReserved+1]|b[offReserved+2] != 0 {
		return ErrReserved
	}
	return nil
}

// stamp writes the server times into a conforming probe in place and
// reports whether it did; other datagrams are left untouched.
func stamp(b []byte, rx, tx int64) bool {
	if conforming(b) != nil {
		return false
	}
	b[offFlags] |= FlagStamped
	binary.BigEndian.PutUint64(b[offServerRx:], uint64(rx))
	binary.BigEndian.PutUint64(b[offServerTx:], uint64(tx))
	return true
}

// fillState seeds the padding generator from the fields a probe's padding
// is derived from.
func fillState(seq uint64, clientSend int64) uint64 {
	return seq*0x9E3779B97F4A7C15 ^ uint64(clientSend) ^ 0x5050453150504531
}

// splitmix64 advances s and returns the next pseudo-random word.
func splitmix64(s *uint64) uint64 {
	*s += 0x9E3779B97F4A7C15
	z := *s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// fillPadding writes the deterministic padding of probe (seq, clientSend)
// into b (the bytes after the header).
func fillPadding(b []byte, seq uint64, clientSend int64) {
	s := fillState(seq, clientSend)
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, splitmix64(&s))
		b = b[8:]
	}
	if len(b) > 0 {
		w := splitmix64(&s)
		for i := range b {
			b[i] = byte(w >> (8 * i))
		}
	}
}

// checkPadding reports whether b is exactly the padding fillPadding writes.
func checkPadding(b []byte, seq uint64, clientSend int64) bool {
	s := fillState(seq, clientSend)
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != splitmix64(&s) {
			return false
		}
		b = b[8:]
	}
	if len(b) > 0 {
		w := splitmix64(&s)
		for i := range b {
			if b[i] != byte(w>>(8*i)) {
				return false
			}
		}
	}
	return true
}
