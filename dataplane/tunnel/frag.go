package tunnel

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"
)

// Datagram framing inside a QUIC DATAGRAM frame. Every datagram starts
// with the flow id and a kind byte:
//
//	whole:    flow(1) kindWhole(1) payload
//	fragment: flow(1) kindFragment(1) msg(2, big-endian) index(1) count(1) piece
//
// A UDP datagram that does not fit one QUIC datagram is sent as count
// fragments (2 <= count <= MaxFragments) of the same msg number, which
// counts up per flow; the receiver joins the pieces in index order. A
// datagram with a piece missing is lost, as it would be on a path.
const (
	kindWhole    = 0
	kindFragment = 1
	// wholeHeaderLen and fragHeaderLen are the bytes in front of a whole
	// datagram's payload and of a fragment's piece.
	wholeHeaderLen = 2
	fragHeaderLen  = 6
	// MaxFragments bounds the pieces of one datagram.
	MaxFragments = 64
	// MaxDatagram is the largest UDP payload a flow carries (IPv4's).
	MaxDatagram = 65507
	// maxPartials bounds the datagrams being reassembled in one session;
	// the oldest is given up (counted Incomplete) to make room.
	maxPartials = 32
	// reassemblyTimeout gives up a datagram whose pieces stopped coming.
	reassemblyTimeout = time.Second
)

// errBadFragment reports a datagram that breaks the framing.
var errBadFragment = errors.New("tunnel: malformed datagram framing")

// fragment is one parsed datagram of the framing.
type fragment struct {
	flow         uint8
	whole        bool
	msg          uint16
	index, count uint8
	data         []byte
}

// parseFragment parses b (not copied: data aliases it).
func parseFragment(b []byte) (fragment, error) {
	if len(b) < wholeHeaderLen {
		return fragment{}, errBadFragment
	}
	f := fragment{flow: b[0]}
	switch b[1] {
	case kindWhole:
		f.whole, f.data = true, b[wholeHeaderLen:]
		return f, nil
	case kindFragment:
	default:
		return fragment{}, errBadFragment
	}
	if len(b) <= fragHeaderLen {
		return fragment{}, errBadFragment
	}
	f.msg = binary.BigEndian.Uint16(b[2:4])
	f.index, f.count = b[4], b[5]
	if f.count < 2 || f.count > MaxFragments || f.index >= f.count {
		return fragment{}, errBadFragment
	}
	f.data = b[fragHeaderLen:]
	return f, nil
}

// appendWhole appends the framing of a whole datagram to dst.
func appendWhole(dst []byte, flow uint8, p []byte) []byte {
	return append(append(dst, flow, kindWhole), p...)
}

// appendFragment appends the framing of piece index of count to dst.
func appendFragment(dst []byte, flow uint8, msg uint16, index, count int, piece []byte) []byte {
	dst = append(dst, flow, kindFragment, byte(msg>>8), byte(msg), byte(index), byte(count))
	return append(dst, piece...)
}

// splitSizes returns the piece size and count for a payload of n bytes
// in QUIC datagrams of at most maxDatagram bytes, or ok false when it
// cannot be carried.
func splitSizes(n, maxDatagram int) (size, count int, ok bool) {
	size = maxDatagram - fragHeaderLen
	if size <= 0 || n > MaxDatagram {
		return 0, 0, false
	}
	count = (n + size - 1) / size
	return size, count, count >= 2 && count <= MaxFragments
}

type partialKey struct {
	flow uint8
	msg  uint16
}

// partial is a datagram being reassembled.
type partial struct {
	key    partialKey
	count  uint8
	have   int
	size   int
	pieces [][]byte
	start  time.Time
}

// reassembler joins fragments. It is used by one goroutine only; its
// memory is bounded by maxPartials datagrams of at most MaxDatagram bytes.
type reassembler struct {
	now      func() time.Time
	partials []*partial // oldest first
	// incomplete counts datagrams given up; malformed counts pieces that
	// contradict their datagram (count, duplicate index, size). Both may
	// be read from other goroutines.
	incomplete, malformed atomic.Uint64
}

// add takes one fragment and returns the whole datagram once its last
// piece arrived, or nil. f.data must not be reused by the caller.
func (r *reassembler) add(f fragment) []byte {
	now := r.now()
	r.expire(now)
	p := r.find(partialKey{f.flow, f.msg})
	if p == nil {
		if len(r.partials) >= maxPartials {
			r.drop(0)
			r.incomplete.Add(1)
		}
		p = &partial{key: partialKey{f.flow, f.msg}, count: f.count, pieces: make([][]byte, f.count), start: now}
		r.partials = append(r.partials, p)
	}
	if p.count != f.count || p.pieces[f.index] != nil || p.size+len(f.data) > MaxDatagram {
		r.malformed.Add(1)
		return nil
	}
	p.pieces[f.index] = f.data
	p.size += len(f.data)
	p.have++
	if p.have < int(p.count) {
		return nil
	}
	r.drop(r.index(p))
	out := make([]byte, 0, p.size)
	for _, piece := range p.pieces {
		out = append(out, piece...)
	}
	return out
}

// expire gives up the datagrams older than reassemblyTimeout.
func (r *reassembler) expire(now time.Time) {
	for len(r.partials) > 0 && now.Sub(r.partials[0].start) > reassemblyTimeout {
		r.drop(0)
		r.incomplete.Add(1)
	}
}

func (r *reassembler) find(k partialKey) *partial {
	for _, p := range r.partials {
		if p.key == k {
			return p
		}
	}
	return nil
}

func (r *reassembler) index(p *partial) int {
	for i, q := range r.partials {
		if q == p {
			return i
		}
	}
	return -1
}

func (r *reassembler) drop(i int) {
	copy(r.partials[i:], r.partials[i+1:])
	r.partials[len(r.partials)-1] = nil
	r.partials = r.partials[:len(r.partials)-1]
}
