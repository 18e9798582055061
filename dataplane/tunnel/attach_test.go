package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestAttachFrameCodec(t *testing.T) {
	cases := []struct {
		name    string
		wire    []byte
		want    []byte
		wantErr error
	}{
		{"ok", []byte{0, 0, 0, 2, '{', '}'}, []byte("{}"), nil},
		{"empty", []byte{0, 0, 0, 0}, nil, ErrAttachFrame},
		{"too long", []byte{0, 0, 0x40, 1}, nil, ErrAttachFrame},
		{"huge", []byte{0xff, 0xff, 0xff, 0xff}, nil, ErrAttachFrame},
		{"short header", []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"short payload", []byte{0, 0, 0, 3, 'a'}, nil, io.ErrUnexpectedEOF},
		{"no data", nil, nil, io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAttachFrame(bytes.NewReader(tc.wire))
			if !errors.Is(err, tc.wantErr) || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	var buf bytes.Buffer
	if err := writeAttachFrame(&buf, []byte(`{"test_id":"t"}`)); err != nil {
		t.Fatal(err)
	}
	if got := buf.Bytes(); !bytes.Equal(got[:4], []byte{0, 0, 0, 15}) {
		t.Fatalf("header %x", got[:4])
	}
	for _, n := range []int{0, MaxAttachFrame + 1} {
		if err := writeAttachFrame(io.Discard, make([]byte, n)); !errors.Is(err, ErrAttachFrame) {
			t.Fatalf("write of %d bytes: %v", n, err)
		}
	}
}

func FuzzAttachFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0x40, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := readAttachFrame(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(p) == 0 || len(p) > MaxAttachFrame {
			t.Fatalf("accepted a %d-byte frame", len(p))
		}
		var buf bytes.Buffer
		if err := writeAttachFrame(&buf, p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), b[:4+len(p)]) {
			t.Fatal("round trip differs")
		}
	})
}
