package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// countingWriter records every Write call.
type countingWriter struct {
	calls int
	buf   bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.buf.Write(p)
}

// headerOnlyReader yields a header and fails the test if anything more is
// read, proving that an oversized frame is refused before its payload.
type headerOnlyReader struct {
	t   *testing.T
	hdr []byte
}

func (r *headerOnlyReader) Read(p []byte) (int, error) {
	if len(r.hdr) == 0 {
		r.t.Fatal("ReadFrame read past the header of an oversized frame")
	}
	n := copy(p, r.hdr)
	r.hdr = r.hdr[n:]
	return n, nil
}

func header(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

func TestWriteFrameSingleWrite(t *testing.T) {
	var w countingWriter
	if err := WriteFrame(&w, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 {
		t.Fatalf("WriteFrame made %d Write calls, want 1", w.calls)
	}
	want := append(header(7), `{"a":1}`...)
	if !bytes.Equal(w.buf.Bytes(), want) {
		t.Fatalf("frame = %x, want %x", w.buf.Bytes(), want)
	}
}

func TestWriteFrameLimits(t *testing.T) {
	var w countingWriter
	if err := WriteFrame(&w, make([]byte, MaxFrameSize+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: err = %v, want ErrFrameTooLarge", err)
	}
	if err := WriteFrame(&w, nil); !errors.Is(err, ErrEmptyFrame) {
		t.Fatalf("empty write: err = %v, want ErrEmptyFrame", err)
	}
	if w.calls != 0 {
		t.Fatalf("refused frames still wrote %d times", w.calls)
	}
	if err := WriteFrame(&w, make([]byte, MaxFrameSize)); err != nil {
		t.Fatalf("frame of exactly MaxFrameSize: %v", err)
	}
}

func TestReadFrame(t *testing.T) {
	maxPayload := bytes.Repeat([]byte{'x'}, MaxFrameSize)
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"ok", append(header(2), "{}"...), []byte("{}"), nil},
		{"max size", append(header(MaxFrameSize), maxPayload...), maxPayload, nil},
		{"clean eof", nil, nil, io.EOF},
		{"short header", []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"short payload", append(header(10), "{}"...), nil, io.ErrUnexpectedEOF},
		{"header only", header(10), nil, io.ErrUnexpectedEOF},
		{"zero length", header(0), nil, ErrEmptyFrame},
		{"too large", append(header(MaxFrameSize+1), "{}"...), nil, ErrFrameTooLarge},
		{"huge", append(header(0xffffffff), "{}"...), nil, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("payload = %.40q, want %.40q", got, tt.want)
			}
		})
	}
}

func TestReadFrameOversizedDoesNotReadPayload(t *testing.T) {
	r := &headerOnlyReader{t: t, hdr: header(MaxFrameSize + 1)}
	if _, err := ReadFrame(r); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}

func TestReadFrameStopsAtFrameEnd(t *testing.T) {
	var stream bytes.Buffer
	for _, p := range []string{`{"n":1}`, `{"n":2}`} {
		if err := WriteFrame(&stream, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	stream.WriteString("raw tunnel bytes")
	for _, want := range []string{`{"n":1}`, `{"n":2}`} {
		got, err := ReadFrame(&stream)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("frame = %q, want %q", got, want)
		}
	}
	if rest := stream.String(); rest != "raw tunnel bytes" {
		t.Fatalf("bytes after the frames = %q: ReadFrame over-read", rest)
	}
}

func TestReadFrameWrapsReaderError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("\x00\x00\x00\x05ab"), errReader{boom})
	if _, err := ReadFrame(r); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// dribbleReader yields a header declaring size bytes, then sent bytes of
// payload, then err.
type dribbleReader struct {
	hdr  []byte
	sent int
	err  error
}

func (r *dribbleReader) Read(p []byte) (int, error) {
	if len(r.hdr) > 0 {
		n := copy(p, r.hdr)
		r.hdr = r.hdr[n:]
		return n, nil
	}
	if r.sent > 0 {
		n := min(len(p), r.sent, 7)
		r.sent -= n
		return n, nil
	}
	return 0, r.err
}

// TestReadFrameMemoryFollowsBytesSent: a peer that declares a 1 MiB frame
// and sends 100 bytes of it costs a buffer of the order of what it sent,
// not the 1 MiB it declared (issue 11, item 1).
func TestReadFrameMemoryFollowsBytesSent(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadFrame(&dribbleReader{hdr: header(MaxFrameSize), sent: 100, err: io.EOF})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<10 {
		t.Fatalf("reading 100 bytes of a declared 1 MiB frame allocated %d bytes", got)
	}
}

// TestReadFrameLimit: a reader's smaller limit refuses a larger declared
// length before reading the payload, and a large frame within the limit
// still arrives whole as it is grown piece by piece.
func TestReadFrameLimit(t *testing.T) {
	if _, err := ReadFrameLimit(&headerOnlyReader{t: t, hdr: header(MaxRequestSize + 1)}, MaxRequestSize); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	payload := bytes.Repeat([]byte("0123456789"), MaxRequestSize/10)
	got, err := ReadFrameLimit(&dribbleReader{hdr: header(uint32(len(payload))), sent: len(payload)}, MaxRequestSize)
	if err != nil || len(got) != len(payload) {
		t.Fatalf("got %d bytes, err %v; want %d", len(got), err, len(payload))
	}
	if _, err := ReadFrameLimit(bytes.NewReader(append(header(3), "{}}"...)), 0); err != nil {
		t.Fatalf("limit 0 means MaxFrameSize: %v", err)
	}
}
