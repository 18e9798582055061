package tunnel

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestFlowAcceptor(t *testing.T) {
	cli, srv := attached(t)
	a := NewFlowAcceptor()
	t.Cleanup(func() { _ = a.Close() })
	type acc struct {
		c     net.Conn
		first []byte
		err   error
	}
	got := make(chan acc, 1)
	go func() {
		c, first, err := a.AcceptUDP(context.Background())
		got <- acc{c, first, err}
	}()
	// AcceptUDP waits for the session, then for a flow.
	if a.Session() != nil {
		t.Fatal("session before Attach")
	}
	if err := a.Attach(srv); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(srv); !errors.Is(err, ErrAlreadyAttached) {
		t.Fatalf("second Attach: %v", err)
	}
	f, err := cli.OpenFlow()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("connect")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || string(r.first) != "connect" || r.c.(*FlowConn).ID() != f.ID() {
			t.Fatalf("AcceptUDP: %v %q %v", r.c, r.first, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no flow accepted")
	}
	// Ids are not reused within a session.
	g, err := cli.OpenFlow()
	if err != nil || g.ID() == f.ID() {
		t.Fatalf("second OpenFlow: id %d (first %d), %v", g.ID(), f.ID(), err)
	}

	// Close ends a waiting AcceptUDP and refuses later attaches.
	go func() {
		_, _, err := a.AcceptUDP(context.Background())
		got <- acc{err: err}
	}()
	_ = a.Close()
	if r := <-got; !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("AcceptUDP after Close: %v", r.err)
	}
	b := NewFlowAcceptor()
	_ = b.Close()
	if err := b.Attach(srv); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Attach after Close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := NewFlowAcceptor().AcceptUDP(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("AcceptUDP with a done ctx: %v", err)
	}
}
