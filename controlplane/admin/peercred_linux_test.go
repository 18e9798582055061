package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestUIDAllowed(t *testing.T) {
	tests := []struct {
		peer, self uint32
		want       bool
	}{
		{0, 0, true},
		{0, 1000, true},
		{1000, 1000, true},
		{1001, 1000, false},
		{1000, 0, false},
	}
	for _, tc := range tests {
		if got := uidAllowed(tc.peer, tc.self); got != tc.want {
			t.Errorf("uidAllowed(%d, %d) = %v, want %v", tc.peer, tc.self, got, tc.want)
		}
	}
}

// TestForeignUIDRefused connects as another user (by switching this
// thread's effective uid, which SO_PEERCRED records) to a socket opened up
// to everyone, and checks that the server still refuses.
func TestForeignUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to connect as another uid")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	h := &echo{}
	start(t, path, h)
	for _, p := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}

	const nobody = 65534
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), nobody, ^uintptr(0)); errno != 0 {
			runtime.UnlockOSThread()
			done <- result{err: errno}
			return
		}
		c, err := net.Dial("unix", path)
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); errno != 0 {
			// Leave the thread locked: it dies with this goroutine.
			done <- result{c, fmt.Errorf("restore euid: %w", errno)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("connect as uid %d: %v", nobody, r.err)
	}
	defer r.c.Close()
	_ = r.c.SetDeadline(time.Now().Add(10 * time.Second))
	// The server answers before reading anything from a refused client.
	line, err := bufio.NewReader(r.c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil || resp.OK || !strings.Contains(resp.Error, "permission denied") {
		t.Fatalf("response to uid %d: %s (%v), want permission denied", nobody, line, err)
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times for a foreign uid", n)
	}
	// Root itself is still served.
	if err := Call(context.Background(), path, Request{Op: OpStatus}, nil); err != nil {
		t.Fatalf("root refused: %v", err)
	}
}
