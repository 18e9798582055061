package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/client"
	"github.com/packetparamedic/reflector/controlplane/identity"
	"github.com/packetparamedic/reflector/controlplane/link"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeServer answers each message with answer(type) and records the
// request IDs it saw.
type fakeServer struct {
	addr string
	id   identity.EndpointID
	mu   sync.Mutex
	ids  []string
	wg   sync.WaitGroup
}

// listenTLS listens on loopback as a pp-link/1 server with a fresh key.
func listenTLS(t *testing.T) (net.Listener, ed25519.PrivateKey) {
	t.Helper()
	key := newKey(t)
	cert, err := identity.NewCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", identity.ServerTLSConfig(cert, link.ALPN))
	if err != nil {
		t.Fatal(err)
	}
	return ln, key
}

func startFake(t *testing.T, answer func(link.Message) link.Message) *fakeServer {
	t.Helper()
	ln, key := listenTLS(t)
	f := &fakeServer{addr: ln.Addr().String(), id: identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				lc := link.NewConn(nc)
				defer lc.Close()
				for {
					id, m, err := lc.ReadMessage(10 * time.Second)
					if err != nil {
						return
					}
					f.mu.Lock()
					f.ids = append(f.ids, id)
					f.mu.Unlock()
					if err := lc.WriteMessage(id, answer(m), 10*time.Second); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); f.wg.Wait() })
	return f
}

func TestClientCallsAndRequestIDs(t *testing.T) {
	retry := 30
	f := startFake(t, func(m link.Message) link.Message {
		switch r := m.(type) {
		case *link.Hello:
			return &link.ServerHello{Version: "1.0", PolicySummary: link.PolicySummary{MaxTestDurationSec: 60}}
		case *link.GetStatus:
			return &link.StatusSnapshot{EndpointID: "x"}
		case *link.GetPathMeta:
			return &link.Error{Code: 400, Message: "nope"}
		case *link.SessionRequest:
			if r.TestType == link.TestUDPEcho {
				return &link.SessionDeny{Reason: link.DenyBusy, Message: "busy", RetryAfterSec: &retry}
			}
			return &link.SessionGrant{TestID: "t", Mode: link.ModeTunneled}
		case *link.PairRequest:
			return &link.OK{}
		}
		return &link.Error{Code: 400, Message: "unexpected"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, f.addr, newKey(t), f.id)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ServerID() != f.id {
		t.Fatalf("ServerID %s, want %s", c.ServerID(), f.id)
	}
	if sh, err := c.Hello(); err != nil || sh.PolicySummary.MaxTestDurationSec != 60 {
		t.Fatalf("hello %+v %v", sh, err)
	}
	if st, err := c.Status(); err != nil || st.EndpointID != "x" {
		t.Fatalf("status %+v %v", st, err)
	}
	var le *link.Error
	if _, err := c.PathMeta(); !errors.As(err, &le) || le.Code != 400 {
		t.Fatalf("error reply: %v", err)
	}
	if g, err := c.RequestSession(link.SessionRequest{TestType: link.TestThroughput}); err != nil || g.TestID != "t" {
		t.Fatalf("grant %+v %v", g, err)
	}
	var de *client.DeniedError
	if _, err := c.RequestSession(link.SessionRequest{TestType: link.TestUDPEcho}); !errors.As(err, &de) || de.Deny.Reason != link.DenyBusy || *de.Deny.RetryAfterSec != 30 {
		t.Fatalf("deny: %v", err)
	}
	if _, err := c.Pair("x"); !errors.Is(err, client.ErrUnexpectedReply) {
		t.Fatalf("wrong reply type: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{"init-0", "req-1", "req-2", "req-3", "req-4", "req-5"}
	if len(f.ids) != len(want) {
		t.Fatalf("request IDs %v, want %v", f.ids, want)
	}
	for i := range want {
		if f.ids[i] != want[i] {
			t.Fatalf("request IDs %v, want %v", f.ids, want)
		}
	}
}

func TestDialPinsServerID(t *testing.T) {
	f := startFake(t, func(link.Message) link.Message { return &link.OK{} })
	other := identity.IDFromPublicKey(newKey(t).Public().(ed25519.PublicKey))
	_, err := client.Dial(context.Background(), f.addr, newKey(t), other)
	if !errors.Is(err, identity.ErrIDMismatch) {
		t.Fatalf("dial with a wrong pinned ID: %v, want ErrIDMismatch", err)
	}
}

func TestDialHandshakeTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			<-done
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := client.Dial(ctx, ln.Addr().String(), newKey(t), ""); err == nil {
		t.Fatal("dial to a silent server succeeded")
	}
}

// TestHelloFeatures: hello announces the appliance's two features and our
// capabilities: tunnel (tunneled grants), clamp (clamped grants), late_start
// (`reflector tunnel` waits for a person) and deny_reasons_v2 (the real
// deny reason).
func TestHelloFeatures(t *testing.T) {
	got := make(chan []string, 1)
	f := startFake(t, func(m link.Message) link.Message {
		if h, ok := m.(*link.Hello); ok {
			select {
			case got <- h.Features:
			default:
			}
			return &link.ServerHello{Version: "1.0"}
		}
		return &link.Error{Code: 400, Message: "unexpected"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, f.addr, newKey(t), f.id)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Hello(); err != nil {
		t.Fatal(err)
	}
	want := []string{link.FeatureThroughput, link.FeatureUDPEcho, "tunnel", "clamp", "late_start", client.FeatureDenyReasonsV2}
	if features := <-got; !slices.Equal(features, want) {
		t.Fatalf("hello features %q, want %q", features, want)
	}
}

// TestServerErrorFrameBeforeClose: a reflector that refuses this client
// sends one error frame (here before it read anything, with an empty
// request_id) and closes; Hello returns that message, not EOF.
func TestServerErrorFrameBeforeClose(t *testing.T) {
	ln, _ := listenTLS(t)
	defer ln.Close()
	const why = "not authorized by PP-TEST: pair first with reflector pair-with"
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		lc := link.NewConn(nc)
		if err := nc.(*tls.Conn).Handshake(); err == nil {
			_ = lc.WriteMessage("", &link.Error{Code: 403, Message: why}, 5*time.Second)
			// Wait for the client's hello before closing, so the close
			// does not reset the connection under the error frame.
			_, _, _ = lc.ReadMessage(5 * time.Second)
		}
		_ = lc.Close()
	}()
	c, err := client.Dial(context.Background(), ln.Addr().String(), newKey(t), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Hello()
	var le *link.Error
	if !errors.As(err, &le) || le.Message != why {
		t.Fatalf("Hello = %v, want the server's error frame %q", err, why)
	}
	<-done
}
