package iperf3proto

import (
	"encoding/binary"
	"errors"
	"time"
)

// UDPHeader is the header at the start of every UDP test datagram: the send
// time (seconds and microseconds) and the packet sequence number, 32 or 64
// bits wide, all big-endian.
type UDPHeader struct {
	Sec  uint32
	Usec uint32
	Seq  uint64
}

// UDPHeaderLen returns the header length for 32- or 64-bit counters.
func UDPHeaderLen(counters64 bool) int {
	if counters64 {
		return 16
	}
	return 12
}

// ErrShortDatagram is returned when a datagram is too short for its header.
var ErrShortDatagram = errors.New("iperf3 udp: datagram shorter than header")

// Encode writes h into b (which must hold UDPHeaderLen bytes) and returns the
// number of bytes written. With 32-bit counters the sequence is truncated.
func (h UDPHeader) Encode(b []byte, counters64 bool) (int, error) {
	n := UDPHeaderLen(counters64)
	if len(b) < n {
		return 0, ErrShortDatagram
	}
	binary.BigEndian.PutUint32(b[0:], h.Sec)
	binary.BigEndian.PutUint32(b[4:], h.Usec)
	if counters64 {
		binary.BigEndian.PutUint64(b[8:], h.Seq)
	} else {
		binary.BigEndian.PutUint32(b[8:], uint32(h.Seq))
	}
	return n, nil
}

// DecodeUDPHeader reads a header from the start of b.
func DecodeUDPHeader(b []byte, counters64 bool) (UDPHeader, error) {
	if len(b) < UDPHeaderLen(counters64) {
		return UDPHeader{}, ErrShortDatagram
	}
	h := UDPHeader{Sec: binary.BigEndian.Uint32(b[0:]), Usec: binary.BigEndian.Uint32(b[4:])}
	if counters64 {
		h.Seq = binary.BigEndian.Uint64(b[8:])
	} else {
		h.Seq = uint64(binary.BigEndian.Uint32(b[8:]))
	}
	return h, nil
}

// Time returns the send time the header carries.
func (h UDPHeader) Time() time.Time {
	return time.Unix(int64(h.Sec), int64(h.Usec)*1000)
}

// UDPStats accumulates what a UDP receiver reports, computed as the
// reference receiver does: the highest sequence number seen, losses from
// sequence gaps (taken back when a late packet fills one), out-of-order
// packets, and RFC 1889 interarrival jitter with 1/16 smoothing, in seconds.
type UDPStats struct {
	Packets    uint64  // highest sequence number seen (the sender's packet count)
	Lost       int64   // packets lost, net of late arrivals
	OutOfOrder int64   // packets that arrived with a sequence at or below the highest seen
	Jitter     float64 // seconds
	Bytes      uint64  // bytes received

	prevTransit float64
	seen        bool
}

// Add records one datagram of n bytes with header h that arrived at at.
func (s *UDPStats) Add(h UDPHeader, n int, at time.Time) {
	s.Bytes += uint64(n)
	if h.Seq >= s.Packets+1 {
		if h.Seq > s.Packets+1 {
			s.Lost += int64(h.Seq - 1 - s.Packets)
		}
		s.Packets = h.Seq
	} else {
		s.OutOfOrder++
		if s.Lost > 0 {
			s.Lost--
		}
	}
	sent := int64(h.Sec)*1_000_000 + int64(h.Usec)
	arrived := at.UnixMicro()
	delta := arrived - sent
	if delta < 0 {
		delta = -delta
	}
	transit := float64(delta) / 1e6
	if !s.seen {
		s.prevTransit = transit
		s.seen = true
	}
	d := transit - s.prevTransit
	if d < 0 {
		d = -d
	}
	s.prevTransit = transit
	s.Jitter += (d - s.Jitter) / 16.0
}

// LossPercent returns lost packets as a percentage of expected packets.
func (s *UDPStats) LossPercent() float64 {
	if s.Packets == 0 {
		return 0
	}
	return 100 * float64(s.Lost) / float64(s.Packets)
}
