package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func FuzzReadFrame(f *testing.F) {
	for _, g := range goldens {
		f.Add(binary.BigEndian.AppendUint32(nil, uint32(len(g.wire))), []byte(g.wire))
	}
	f.Add([]byte{0, 0, 0, 0}, []byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, []byte("{}"))
	f.Add([]byte{0, 0x10, 0, 1}, []byte("{}"))
	f.Add([]byte{0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, hdr, body []byte) {
		in := append(append([]byte{}, hdr...), body...)
		r := bytes.NewReader(in)
		payload, err := ReadFrame(r)
		if err != nil {
			if payload != nil {
				t.Fatal("payload returned with an error")
			}
			return
		}
		if len(payload) == 0 || len(payload) > MaxFrameSize {
			t.Fatalf("accepted a payload of %d bytes", len(payload))
		}
		if consumed := len(in) - r.Len(); consumed != 4+len(payload) {
			t.Fatalf("consumed %d bytes for a %d-byte payload", consumed, len(payload))
		}
		var out bytes.Buffer
		if err := WriteFrame(&out, payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), in[:4+len(payload)]) {
			t.Fatal("WriteFrame(ReadFrame(x)) differs from x")
		}
	})
}

func FuzzDecode(f *testing.F) {
	for _, g := range goldens {
		f.Add([]byte(g.wire))
	}
	for _, s := range []string{
		`{"request_id":"r","payload":{"type":"heartbeat"}}`,
		`{"request_id":"r","payload":{"type":"hello","version":"1.0"}}`,
		`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":-1}}}`,
		`{"request_id":"r","payload":{"type":"test_result","test_id":"t","test_type":"x","state":"s","bytes_sent":1,"bytes_received":2,"duration_sec":1e-7,"summary":[1, {"a" : "\u00e9"}]}}`,
		`{"request_id":"\ud800","payload":{"type":"ok"}}`,
		`null`, `[]`, `{}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		id, m, err := Decode(frame)
		if err != nil {
			var ute *UnknownTypeError
			if !errors.Is(err, ErrMalformed) && !errors.As(err, &ute) {
				t.Fatalf("untyped decode error: %v", err)
			}
			if m != nil {
				t.Fatal("message returned with an error")
			}
			return
		}
		e1, err := Encode(id, m)
		if err != nil {
			t.Fatalf("Encode of a decoded %T: %v", m, err)
		}
		id2, m2, err := Decode(e1)
		if err != nil {
			t.Fatalf("Decode(Encode(%T)): %v\n%s", m, err, e1)
		}
		if id2 != id || reflect.TypeOf(m2) != reflect.TypeOf(m) {
			t.Fatalf("round trip changed id %q->%q or type %T->%T", id, id2, m, m2)
		}
		e2, err := Encode(id2, m2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e1, e2) {
			t.Fatalf("encoding not stable:\n%s\n%s", e1, e2)
		}
		_, m3, err := Decode(e2)
		if err != nil || !reflect.DeepEqual(m2, m3) {
			t.Fatalf("decode not stable: %v\n%#v\n%#v", err, m2, m3)
		}
	})
}
