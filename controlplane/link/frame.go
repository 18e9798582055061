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

// MaxRequestSize is the largest payload the reflector accepts from a peer
// (8 KiB). Every message a client sends is small by nature: the largest,
// a hello listing its features or a session_request with every optional
// parameter, is a few hundred bytes, so 8 KiB leaves a margin of more
// than 20 times for extensions. The limit bounds what a connection can
// make the server hold: with TLS's own record buffer (up to 16 KiB) and
// the connection's state, 1,200 connections each holding a frame one
// byte short of this limit keep the server under 100 MiB (stress test
// TestStressFrameMemory). Replies from the server (test_result with its summary)
// may still use the full MaxFrameSize, and clients read them with it. A
// peer sending a larger frame breaks no client that exists (the appliance
// sends the messages of section 4 of the design only) and is treated as
// a protocol error, as any frame over MaxFrameSize always was.
const MaxRequestSize = 8 << 10

// frameHeaderLen is the size of the big-endian length prefix.
const frameHeaderLen = 4

// readChunk is the first allocation for a payload; the buffer then grows
// as bytes arrive, so memory follows what a peer has sent, not what it
// declared.
const readChunk = 512

var (
	// ErrFrameTooLarge reports a frame whose declared or actual payload length
	// exceeds the limit (MaxFrameSize, or the reader's smaller limit).
	// ReadFrame returns it before allocating anything.
	ErrFrameTooLarge = errors.New("pp-link frame exceeds the size limit")
	// ErrEmptyFrame reports a frame with a zero-length payload, which can
	// never hold a message.
	ErrEmptyFrame = errors.New("pp-link frame is empty")
)

// ReadFrame reads one frame of at most MaxFrameSize from r; see
// ReadFrameLimit.
func ReadFrame(r io.Reader) ([]byte, error) { return ReadFrameLimit(r, MaxFrameSize) }

// ReadFrameLimit reads one frame from r and returns its payload. It reads
// exactly the frame's bytes and nothing beyond, so r can be used as a raw
// stream afterwards (the tunnel attach relies on this). The payload buffer
// grows as bytes arrive: a peer that declares a large frame and sends
// little of it holds little memory.
//
// A clean end of stream before the first header byte returns io.EOF. A stream
// that ends inside a frame returns an error wrapping io.ErrUnexpectedEOF. A
// declared length above limit (or MaxFrameSize) returns ErrFrameTooLarge
// without reading the payload; a zero length returns ErrEmptyFrame.
func ReadFrameLimit(r io.Reader, limit int) ([]byte, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read pp-link frame header: %w", err)
	}
	return readFrameRest(r, first[0], limit)
}

// readFrameRest reads a frame whose first header byte was already read.
func readFrameRest(r io.Reader, first byte, limit int) ([]byte, error) {
	hdr := [frameHeaderLen]byte{first}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read pp-link frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if limit <= 0 || limit > MaxFrameSize {
		limit = MaxFrameSize
	}
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("read pp-link frame: declared length %d, limit %d: %w", n, limit, ErrFrameTooLarge)
	}
	if n == 0 {
		return nil, fmt.Errorf("read pp-link frame: %w", ErrEmptyFrame)
	}
	payload := make([]byte, 0, min(int(n), readChunk))
	for len(payload) < int(n) {
		if len(payload) == cap(payload) {
			// Double, but never past the declared length: the final
			// buffer is exactly the frame.
			grown := make([]byte, len(payload), min(2*cap(payload), int(n)))
			copy(grown, payload)
			payload = grown
		}
		end := min(cap(payload), int(n))
		m, err := r.Read(payload[len(payload):end])
		payload = payload[:len(payload)+m]
		if err != nil && len(payload) < int(n) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read pp-link frame payload (%d of %d bytes): %w", len(payload), n, err)
		}
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
