package iperfrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ErrExited is returned by WaitTCP when the server process ends before it
// accepts connections.
var ErrExited = errors.New("server process exited")

// stopGrace is how long Stop waits after an interrupt before killing.
const stopGrace = 3 * time.Second

// Process is a long-running server process started by Start.
type Process struct {
	cmd    *exec.Cmd
	output *TailBuffer
	done   chan struct{}
	err    error // set before done is closed
}

// Start starts argv as a background process whose combined output is kept
// (the last few KiB) for diagnostics.
func Start(argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("start server: empty command")
	}
	p := &Process{
		cmd:    exec.Command(argv[0], argv[1:]...),
		output: &TailBuffer{Max: 8192},
		done:   make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id. For `ip netns exec ns prog`, which execs prog, it is
// the id of prog itself.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Output returns the tail of the process's combined output.
func (p *Process) Output() string { return string(p.output.Bytes()) }

// Stop interrupts the process, kills it if it is still running after a grace
// period, and waits for it. It is safe to call more than once.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// WaitTCP polls a TCP connect to addr until it succeeds, the process exits
// (ErrExited) or ctx ends. The probe connection is closed at once; iperf3
// servers treat it as a client that sent no cookie.
func WaitTCP(ctx context.Context, p *Process, addr string) error {
	wait := time.Millisecond
	var d net.Dialer
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return c.Close()
		}
		t := time.NewTimer(wait)
		select {
		case <-p.done:
			t.Stop()
			return fmt.Errorf("wait for %s: %w (%v): %s", addr, ErrExited, p.err, strings.TrimSpace(p.Output()))
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for %s: %w (last dial error: %v)", addr, ctx.Err(), err)
		case <-t.C:
		}
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// TailBuffer is an io.Writer that keeps the last Max bytes written to it.
// It is safe for concurrent use.
type TailBuffer struct {
	// Max is the number of bytes kept.
	Max int

	mu  sync.Mutex
	buf []byte
}

// Write appends b, dropping the oldest bytes beyond Max. It never fails.
func (t *TailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(b)
	if len(b) >= t.Max {
		t.buf = append(t.buf[:0], b[len(b)-t.Max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(b) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, b...)
	return n, nil
}

// Bytes returns a copy of the kept bytes.
func (t *TailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
