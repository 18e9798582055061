// Package link implements pp-link/1, the control protocol between a
// PacketParamedic appliance (or our own client) and the reflector.
//
// On the wire every message is one frame: a 4-byte big-endian payload length
// followed by that many bytes of UTF-8 JSON. The JSON is an envelope
// {"request_id": "...", "payload": {"type": "<snake_case>", ...fields}} whose
// payload is internally tagged, exactly as the Rust appliance's serde types
// produce and expect. Responses echo the request's request_id.
//
// The package holds the framing (ReadFrame, WriteFrame), one Go type per
// message (Encode, Decode), a deadline-bounded connection helper (Conn) and
// the request-id sequence the appliance uses (RequestIDs). It makes no policy
// decisions: values are decoded faithfully and judged by the server.
package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ALPN is the TLS application protocol name of pp-link/1. The reflector
// offers it; note that the shipped appliance client does not send ALPN at all,
// so a server must not require it.
const ALPN = "pp-link/1"

// MaxFrameSize is the largest payload a frame may carry (1 MiB), as in the
// appliance's codec. Larger frames are a protocol error.
const MaxFrameSize = 1 << 20

// frameHeaderLen is the size of the big-endian length prefix.
const frameHeaderLen = 4

var (
	// ErrFrameTooLarge reports a frame whose declared or actual payload length
	// exceeds MaxFrameSize. ReadFrame returns it before allocating anything.
	ErrFrameTooLarge = errors.New("pp-link frame exceeds 1 MiB")
	// ErrEmptyFrame reports a frame with a zero-length payload, which can
	// never hold a message.
	ErrEmptyFrame = errors.New("pp-link frame is empty")
)

// ReadFrame reads one frame from r and returns its payload. It reads exactly
// the frame's bytes and nothing beyond, so r can be used as a raw stream
// afterwards (the tunnel attach relies on this).
//
// A clean end of stream before the first header byte returns io.EOF. A stream
// that ends inside a frame returns an error wrapping io.ErrUnexpectedEOF. A
// declared length above MaxFrameSize returns ErrFrameTooLarge without reading
// or allocating the payload; a zero length returns ErrEmptyFrame.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read pp-link frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("read pp-link frame: declared length %d: %w", n, ErrFrameTooLarge)
	}
	if n == 0 {
		return nil, fmt.Errorf("read pp-link frame: %w", ErrEmptyFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read pp-link frame payload (%d bytes): %w", n, err)
	}
	return payload, nil
}

// WriteFrame writes payload as one frame using a single Write call, so a
// frame is never interleaved with another writer's bytes on a shared
// connection as long as writers serialise their calls (Conn does).
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrameSize {
		return fmt.Errorf("write pp-link frame of %d bytes: %w", len(payload), ErrFrameTooLarge)
	}
	if len(payload) == 0 {
		return fmt.Errorf("write pp-link frame: %w", ErrEmptyFrame)
	}
	buf := make([]byte, frameHeaderLen+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[frameHeaderLen:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write pp-link frame (%d bytes): %w", len(payload), err)
	}
	return nil
}
