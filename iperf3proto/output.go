package iperf3proto

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/packetparamedic/reflector/internal/buildinfo"
)

// serverOutput collects what the server reports for --get-server-output:
// iperf3-style text lines, or a JSON document shaped like `iperf3 -s -J`.
type serverOutput struct {
	asJSON bool
	t      *test
	lines  []string
	conns  []map[string]any
	start  time.Time
	end    map[string]any
}

func newServerOutput(asJSON bool, t *test) *serverOutput {
	o := &serverOutput{asJSON: asJSON, t: t, start: time.Now()}
	o.lines = append(o.lines,
		"-----------------------------------------------------------\n",
		fmt.Sprintf("Accepted connection from %s, port %d\n", t.remote.Addr(), t.remote.Port()))
	return o
}

// connected records a new stream.
func (o *serverOutput) connected(st *stream) {
	l, r := addrPort(st.conn.LocalAddr()), addrPort(st.conn.RemoteAddr())
	o.lines = append(o.lines, fmt.Sprintf("[%3d] local %s port %d connected to %s port %d\n",
		st.id, l.Addr(), l.Port(), r.Addr(), r.Port()))
	o.conns = append(o.conns, map[string]any{
		"socket": st.id, "local_host": l.Addr().String(), "local_port": l.Port(),
		"remote_host": r.Addr().String(), "remote_port": r.Port(),
	})
}

// finish builds the summary from both sides' results.
func (o *serverOutput) finish(res *TestResult, ours, theirs *Results, total, user, sys float64) {
	p := o.t.params
	udp := p.UDP
	o.lines = append(o.lines, "- - - - - - - - - - - - - - - - - - - - - - - - -\n")
	if udp {
		o.lines = append(o.lines, "[ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams\n")
	} else {
		o.lines = append(o.lines, "[ ID] Interval           Transfer     Bitrate\n")
	}
	var streams []map[string]any
	var sumSent, sumRecv uint64
	var secs float64
	for _, s := range ours.Streams {
		st := o.t.set.streams[indexOfStream(o.t.set.streams, s.ID)]
		role := "receiver"
		if st.sender {
			role = "sender"
			sumSent += s.Bytes
		} else {
			sumRecv += s.Bytes
		}
		secs = max(secs, s.EndTime)
		line := fmt.Sprintf("[%3d]   %.2f-%.2f  sec  %s  %s", s.ID, s.StartTime, s.EndTime, fmtBytes(s.Bytes), fmtRate(s.Bytes, s.EndTime))
		if udp && !st.sender {
			line += fmt.Sprintf("  %.3f ms  %d/%d (%.2g%%)", s.Jitter*1000, s.Errors-s.OmittedErrors, s.Packets-s.OmittedPackets, lossPct(s))
		}
		o.lines = append(o.lines, line+"                  "+role+"\n")
		one := map[string]any{"socket": s.ID, "start": s.StartTime, "end": s.EndTime, "seconds": s.EndTime,
			"bytes": s.Bytes, "bits_per_second": rate(s.Bytes, s.EndTime), "sender": st.sender}
		if udp {
			one["jitter_ms"] = s.Jitter * 1000
			one["lost_packets"] = s.Errors - s.OmittedErrors
			one["packets"] = s.Packets - s.OmittedPackets
			one["lost_percent"] = lossPct(s)
			one["out_of_order"] = st.endOOO
		} else if st.sender {
			one["retransmits"] = s.Retransmits
		}
		key := "receiver"
		if st.sender {
			key = "sender"
		}
		if udp {
			streams = append(streams, map[string]any{"udp": one})
		} else {
			streams = append(streams, map[string]any{key: one})
		}
	}
	o.end = map[string]any{
		"streams":      streams,
		"sum_sent":     map[string]any{"start": 0, "end": secs, "seconds": secs, "bytes": sumSent, "bits_per_second": rate(sumSent, secs), "sender": true},
		"sum_received": map[string]any{"start": 0, "end": secs, "seconds": secs, "bytes": sumRecv, "bits_per_second": rate(sumRecv, secs), "sender": false},
		"cpu_utilization_percent": map[string]any{"host_total": total, "host_user": user, "host_system": sys,
			"remote_total": theirs.CPUUtilTotal, "remote_user": theirs.CPUUtilUser, "remote_system": theirs.CPUUtilSystem},
	}
	if ours.CongestionUsed != "" {
		o.end["receiver_tcp_congestion"] = ours.CongestionUsed
	}
	if theirs.CongestionUsed != "" {
		o.end["sender_tcp_congestion"] = theirs.CongestionUsed
	}
}

func indexOfStream(ss []*stream, id int) int {
	for i, s := range ss {
		if s.id == id {
			return i
		}
	}
	return 0
}

// text returns the textual server output.
func (o *serverOutput) text() string {
	return strings.Join(o.lines, "")
}

// json returns the JSON server output.
func (o *serverOutput) json() json.RawMessage {
	p := o.t.params
	doc := map[string]any{
		"start": map[string]any{
			"connected":           o.conns,
			"version":             "reflector " + buildinfo.Version,
			"cookie":              strings.TrimRight(string(o.t.cookie[:]), "\x00"),
			"accepted_connection": map[string]any{"host": o.t.remote.Addr().String(), "port": o.t.remote.Port()},
			"timestamp":           map[string]any{"time": o.start.UTC().Format(time.RFC1123), "timesecs": o.start.Unix()},
			"test_start": map[string]any{"protocol": strings.ToUpper(p.Protocol()), "num_streams": max(p.Parallel, 1),
				"blksize": p.BlockLen(), "omit": p.Omit, "duration": p.Time, "bytes": p.Bytes, "blocks": p.Blocks,
				"reverse": boolInt(p.Reverse), "bidir": boolInt(p.Bidirectional), "tos": p.TOS, "target_bitrate": p.Bandwidth},
		},
		"intervals": []any{},
		"end":       o.end,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil
	}
	return b
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func rate(b uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(b) * 8 / secs
}

func lossPct(s StreamResults) float64 {
	n := s.Packets - s.OmittedPackets
	if n <= 0 {
		return 0
	}
	return 100 * float64(s.Errors-s.OmittedErrors) / float64(n)
}

// fmtBytes formats a byte count as iperf3 does (binary units).
func fmtBytes(b uint64) string {
	v := float64(b)
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GBytes", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MBytes", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KBytes", v/(1<<10))
	}
	return fmt.Sprintf("%d Bytes", b)
}

// fmtRate formats a bit rate as iperf3 does (decimal units).
func fmtRate(b uint64, secs float64) string {
	v := rate(b, secs)
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f Gbits/sec", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f Mbits/sec", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f Kbits/sec", v/1e3)
	}
	return fmt.Sprintf("%.0f bits/sec", v)
}
