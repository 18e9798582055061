// Package iperfrun drives external iperf3 processes for the measurements in
// bench: it runs the stock iperf3 client and reads its -J report, starts and
// stops long-running server processes, and reads a process's CPU time from
// /proc.
package iperfrun

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNoSummary is returned by ParseReport when the report has no end summary
// to take the receiver's numbers from.
var ErrNoSummary = errors.New("iperf3 report has no end summary")

// ClientError is the "error" field of an iperf3 -J report: the client ran but
// the test failed (connection refused, server busy, ...).
type ClientError struct {
	Message string
}

func (e *ClientError) Error() string { return "iperf3 client: " + e.Message }

// Report is what the measurements need from one iperf3 -J client report.
// The receiver side is the server for a normal test and the client for -R.
type Report struct {
	// UDP is true when the test ran over UDP.
	UDP bool
	// ReceivedBytes is the number of payload bytes the receiver counted.
	ReceivedBytes int64
	// ReceivedBitsPerSecond is the receiver's payload throughput.
	ReceivedBitsPerSecond float64
	// SentBytes is the number of payload bytes the sender counted.
	SentBytes int64
	// LossPercent is the receiver's packet loss (UDP only, 0 for TCP).
	LossPercent float64
	// Seconds is the receiver's measured duration.
	Seconds float64
}

type summary struct {
	Seconds       float64  `json:"seconds"`
	Bytes         int64    `json:"bytes"`
	BitsPerSecond float64  `json:"bits_per_second"`
	LostPercent   *float64 `json:"lost_percent"`
}

type rawReport struct {
	Start struct {
		TestStart struct {
			Protocol string `json:"protocol"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Sum         *summary `json:"sum"`
		SumSent     *summary `json:"sum_sent"`
		SumReceived *summary `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseReport reads an iperf3 -J client report. The receiver's numbers come
// from end.sum_received, which iperf3 3.x fills for TCP and (since 3.10) for
// UDP; older UDP reports only have end.sum, whose loss is the receiver's but
// whose byte count is the sender's, so for them the received bytes are
// derived from the loss.
func ParseReport(data []byte) (Report, error) {
	var raw rawReport
	if err := json.Unmarshal(data, &raw); err != nil {
		return Report{}, fmt.Errorf("decode iperf3 report: %w", err)
	}
	if raw.Error != "" {
		return Report{}, &ClientError{Message: raw.Error}
	}
	rep := Report{UDP: raw.Start.TestStart.Protocol == "UDP"}
	if raw.End.SumSent != nil {
		rep.SentBytes = raw.End.SumSent.Bytes
	}
	switch {
	case raw.End.SumReceived != nil:
		s := raw.End.SumReceived
		rep.ReceivedBytes, rep.ReceivedBitsPerSecond, rep.Seconds = s.Bytes, s.BitsPerSecond, s.Seconds
		if s.LostPercent != nil {
			rep.LossPercent = *s.LostPercent
		}
	case rep.UDP && raw.End.Sum != nil:
		s := raw.End.Sum
		if s.LostPercent != nil {
			rep.LossPercent = *s.LostPercent
		}
		keep := 1 - rep.LossPercent/100
		rep.ReceivedBytes = int64(float64(s.Bytes) * keep)
		rep.ReceivedBitsPerSecond, rep.Seconds = s.BitsPerSecond*keep, s.Seconds
		if rep.SentBytes == 0 {
			rep.SentBytes = s.Bytes
		}
	default:
		return Report{}, ErrNoSummary
	}
	return rep, nil
}
