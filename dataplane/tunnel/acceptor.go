package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ErrAlreadyAttached is returned by FlowAcceptor.Attach when a session is
// already attached.
var ErrAlreadyAttached = errors.New("tunnel: a QUIC session is already attached to this test")

// FlowAcceptor is the UDP side of a tunneled test's in-process iperf3
// server (an iperf3proto.UDPAcceptor): it exists from the grant on, before
// the client's QUIC session does, and serves the flows of the session
// attached to it later. Its methods are safe for concurrent use.
type FlowAcceptor struct {
	mu       sync.Mutex
	s        *QUICSession
	attached chan struct{} // closed by Attach
	closed   chan struct{}
	once     sync.Once
}

// NewFlowAcceptor returns an acceptor waiting for its session.
func NewFlowAcceptor() *FlowAcceptor {
	return &FlowAcceptor{attached: make(chan struct{}), closed: make(chan struct{})}
}

// Attach hands the acceptor its session; only the first call succeeds.
func (a *FlowAcceptor) Attach(s *QUICSession) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.closed:
		return fmt.Errorf("tunnel flow acceptor attach: %w", net.ErrClosed)
	default:
	}
	if a.s != nil {
		return ErrAlreadyAttached
	}
	a.s = s
	close(a.attached)
	return nil
}

// Session returns the attached session, or nil.
func (a *FlowAcceptor) Session() *QUICSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.s
}

// AcceptUDP waits for a session to be attached and then returns its next
// new flow with the flow's first datagram (see QUICSession.AcceptUDP). It
// returns an error wrapping net.ErrClosed after Close or once the session
// has closed, and ctx's error when ctx ends.
func (a *FlowAcceptor) AcceptUDP(ctx context.Context) (net.Conn, []byte, error) {
	select {
	case <-a.attached:
	case <-a.closed:
		return nil, nil, fmt.Errorf("tunnel flow acceptor: %w", net.ErrClosed)
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	a.mu.Lock()
	s := a.s
	a.mu.Unlock()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.closed:
			cancel()
		case <-actx.Done():
		}
	}()
	c, first, err := s.AcceptUDP(actx)
	if err != nil && isClosed(a.closed) {
		return nil, nil, fmt.Errorf("tunnel flow acceptor: %w", net.ErrClosed)
	}
	return c, first, err
}

// Close stops the acceptor (not the session): pending and later AcceptUDP
// calls return net.ErrClosed, later Attach calls fail. It is idempotent.
func (a *FlowAcceptor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.once.Do(func() { close(a.closed) })
	return nil
}
