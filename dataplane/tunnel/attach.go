package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxAttachFrame bounds an attach request or reply on the QUIC attach
// stream. A pp-link tunnel_attach envelope is about 150 bytes.
const MaxAttachFrame = 16 << 10

// attachHeaderLen is the size of the big-endian length prefix, the same
// framing as pp-link/1.
const attachHeaderLen = 4

// ErrAttachFrame reports an attach frame that is empty or longer than
// MaxAttachFrame.
var ErrAttachFrame = errors.New("tunnel attach frame: length outside 1..16384")

// writeAttachFrame writes payload with its 4-byte big-endian length in one
// Write.
func writeAttachFrame(w io.Writer, payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxAttachFrame {
		return fmt.Errorf("write %d bytes: %w", len(payload), ErrAttachFrame)
	}
	buf := make([]byte, attachHeaderLen+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[attachHeaderLen:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write tunnel attach frame: %w", err)
	}
	return nil
}

// readAttachFrame reads one frame, refusing a declared length outside
// 1..MaxAttachFrame before allocating.
func readAttachFrame(r io.Reader) ([]byte, error) {
	var hdr [attachHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read tunnel attach frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxAttachFrame {
		return nil, fmt.Errorf("read tunnel attach frame: declared length %d: %w", n, ErrAttachFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read tunnel attach frame payload (%d bytes): %w", n, err)
	}
	return b, nil
}
