package iperf3proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzReadMessage feeds arbitrary bytes to the length-prefixed JSON
// reader used for parameters and results: it must never allocate past its
// cap, and what it returns is exactly the declared body.
func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{
		`{"tcp":true,"omit":0,"time":10,"parallel":4,"len":131072,"client_version":"3.12"}`,
		`{"cpu_util_total":1.5,"streams":[{"id":1,"bytes":1000,"retransmits":0,"jitter":0,"errors":0,"packets":0,"start_time":0,"end_time":1}]}`,
	} {
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...))
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte{0, 0, 0x10, 0, '{', '}'})
	const limit = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := readMessage(bytes.NewReader(data), limit)
		if err != nil {
			if b != nil {
				t.Fatal("body returned with an error")
			}
			if len(data) >= 4 {
				n := binary.BigEndian.Uint32(data)
				if (n == 0 || n > limit) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("declared length %d: %v, want ErrTooLarge", n, err)
				}
			}
			return
		}
		n := binary.BigEndian.Uint32(data)
		if len(b) == 0 || len(b) > limit || uint32(len(b)) != n || !bytes.Equal(b, data[4:4+n]) {
			t.Fatalf("read %d bytes for a declared %d", len(b), n)
		}
	})
}

// FuzzDecodeUDPHeader decodes arbitrary datagram starts as iperf3 UDP
// headers (32- and 64-bit counters): short input is an error, anything
// else re-encodes to the same header bytes.
func FuzzDecodeUDPHeader(f *testing.F) {
	for _, c64 := range []bool{false, true} {
		b := make([]byte, 1448)
		n, err := UDPHeader{Sec: 1764388800, Usec: 123456, Seq: 42}.Encode(b, c64)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:n+16], c64)
	}
	f.Add([]byte{1, 2, 3}, false)
	f.Add(bytes.Repeat([]byte{0xff}, 16), true)
	f.Fuzz(func(t *testing.T, b []byte, c64 bool) {
		h, err := DecodeUDPHeader(b, c64)
		if err != nil {
			if len(b) >= UDPHeaderLen(c64) {
				t.Fatalf("%d bytes refused: %v", len(b), err)
			}
			return
		}
		out := make([]byte, 16)
		n, err := h.Encode(out, c64)
		if err != nil || n != UDPHeaderLen(c64) || !bytes.Equal(out[:n], b[:n]) {
			t.Fatalf("re-encode %x -> %x (%v)", b[:min(len(b), 16)], out[:n], err)
		}
	})
}
