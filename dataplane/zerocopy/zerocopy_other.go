//go:build !linux

package zerocopy

import "net"

// Discard reads conn until EOF or error and throws the bytes away, calling
// onBytes (when not nil) with each chunk's size, and returns the total. EOF
// is not an error. Deadlines set on conn apply. This platform uses the
// copying path with a pooled CopyBufferSize buffer.
func Discard(conn net.Conn, onBytes func(n int)) (int64, error) {
	if onBytes == nil {
		onBytes = noBytes
	}
	return discardCopy(conn, onBytes)
}

// NewPayload returns size bytes of test data: crypto-random, or the
// repeating "0123456789" pattern when repeating is true.
func NewPayload(size int, repeating bool) (*Payload, error) {
	b, err := fillPayload(size, repeating)
	if err != nil {
		return nil, err
	}
	return &Payload{data: b, fd: -1}, nil
}

// Send writes the first n bytes (n <= Len) of the payload to conn; this
// platform has no sendfile path, so it is Write.
func (p *Payload) Send(conn net.Conn, n int) (int, error) {
	return p.Write(conn, n)
}

// Close releases the payload; later Sends fail with ErrPayloadClosed.
func (p *Payload) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}
