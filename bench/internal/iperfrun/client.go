package iperfrun

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// maxReportSize bounds how much of the client's output is kept: a -J report
// of a few seconds is tens of KiB, even with many streams.
const maxReportSize = 4 << 20

// clientGrace is how long a client may run past its test duration (connect,
// parameter exchange, results exchange) before it is killed.
const clientGrace = 20 * time.Second

// Client runs the stock iperf3 client.
type Client struct {
	// Binary is the iperf3 executable.
	Binary string
	// Wrap is prepended to the command line, e.g. {"ip", "netns", "exec", "ns"}.
	Wrap []string
}

// Run runs one test of the given duration against host:port with the extra
// client arguments (e.g. "-R", "-u", "-b", "0") and returns the client's
// report. The client is killed if it outlives the duration by more than a
// grace period or when ctx ends.
func (c Client) Run(ctx context.Context, host string, port, seconds int, extra ...string) (Report, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+clientGrace)
	defer cancel()
	args := append([]string{}, c.Wrap...)
	args = append(args, c.Binary, "-c", host, "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(seconds), "-J", "--connect-timeout", "5000")
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	stdout := &TailBuffer{Max: maxReportSize}
	stderr := &TailBuffer{Max: 4096}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	runErr := cmd.Run()
	rep, err := ParseReport(stdout.Bytes())
	if err != nil {
		if runErr != nil {
			err = fmt.Errorf("%w (exit: %v)", err, runErr)
		}
		return Report{}, fmt.Errorf("run %s: %w%s", strings.Join(args, " "), err, stderrNote(stderr.Bytes()))
	}
	if runErr != nil {
		return Report{}, fmt.Errorf("run %s: %w%s", strings.Join(args, " "), runErr, stderrNote(stderr.Bytes()))
	}
	return rep, nil
}

func stderrNote(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	return "; stderr: " + string(b)
}
