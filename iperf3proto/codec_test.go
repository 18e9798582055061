package iperf3proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseParams(t *testing.T) {
	stock := `{"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":4,"reverse":true,"len":131072,` +
		`"pacing_timer":1000,"client_version":"3.12","get_server_output":1,"udp_counters_64bit":1,"future_key":{"x":[1,2]}}`
	tests := []struct {
		name    string
		in      string
		want    Params
		wantErr error
	}{
		{"stock client", stock, Params{TCP: true, Time: 10, Parallel: 4, Reverse: true, Len: 131072, PacingTimer: 1000,
			ClientVersion: "3.12", GetServerOutput: true, UDPCounters64Bit: true}, nil},
		{"udp bandwidth", `{"udp":true,"bandwidth":200000000,"len":1460,"time":1}`, Params{UDP: true, Bandwidth: 200e6, Len: 1460, Time: 1}, nil},
		{"false booleans", `{"tcp":false,"reverse":false,"nodelay":null}`, Params{}, nil},
		{"bidir and flags", `{"bidirectional":true,"nodelay":true,"zerocopy":1,"repeating_payload":1,"dont_fragment":0}`,
			Params{Bidirectional: true, NoDelay: true, ZeroCopy: true, RepeatingPayload: true}, nil},
		{"big num", `{"num":10737418240}`, Params{Bytes: 10 << 30}, nil},
		{"congestion", `{"congestion":"reno","title":"x"}`, Params{Congestion: "reno", Title: "x"}, nil},
		{"CVE-2024-53580 string for number", `{"parallel":"4"}`, Params{}, ErrParamType},
		{"string for bool", `{"reverse":"yes"}`, Params{}, ErrParamType},
		{"number for string", `{"congestion":5}`, Params{}, ErrParamType},
		{"object for number", `{"time":{}}`, Params{}, ErrParamType},
		{"negative bandwidth", `{"bandwidth":-1}`, Params{}, ErrParamType},
		{"huge number", `{"time":1e300}`, Params{}, ErrParamType},
		{"not an object", `[1,2]`, Params{}, nil},
		{"null", `null`, Params{}, ErrParamType},
		{"too large", `{"title":"` + strings.Repeat("a", MaxParamsSize) + `"}`, Params{}, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseParams([]byte(tc.in))
			if tc.name == "not an object" {
				if err == nil {
					t.Fatal("array accepted")
				}
				return
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParamsMarshalRoundTrip(t *testing.T) {
	p := Params{UDP: true, Time: 3, Parallel: 2, Bidirectional: true, Len: 1400, Bandwidth: 1e8,
		UDPCounters64Bit: true, Congestion: "cubic", ClientVersion: "3.12", Bytes: 5 << 30}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"reverse"`)) || bytes.Contains(b, []byte(`"tcp"`)) {
		t.Errorf("false booleans written: %s", b)
	}
	if !bytes.Contains(b, []byte(`"udp_counters_64bit":1`)) || !bytes.Contains(b, []byte(`"bidirectional":true`)) {
		t.Errorf("flags not in reference form: %s", b)
	}
	q, err := ParseParams(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip:\n%+v\n%+v", p, q)
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		p    Params
		code ErrorCode
	}{
		{Params{Parallel: 129}, ErrNumStreams},
		{Params{Time: MaxTime + 1}, ErrDuration},
		{Params{Omit: 601}, ErrOmit},
		{Params{Len: MaxBlockSize + 1}, ErrBlockSize},
		{Params{UDP: true, Len: 10}, ErrUDPBlockSize},
		{Params{UDP: true, Len: 70000}, ErrUDPBlockSize},
		{Params{MSS: 40000}, ErrMSS},
		{Params{Window: MaxTCPBuffer + 1}, ErrBufSize},
		{Params{Reverse: true, Bidirectional: true}, ErrReverseBidir},
		{Params{TOS: 300}, ErrBadTOS},
		{Params{SCTP: true}, ErrUnimplemented},
	}
	for _, tc := range tests {
		var pe *ProtocolError
		if err := tc.p.Validate(); !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%+v: err %v, want code %d", tc.p, err, tc.code)
		}
	}
	if err := (Params{TCP: true, Time: 10, Parallel: 128, Len: 128 << 10}).Validate(); err != nil {
		t.Errorf("valid params refused: %v", err)
	}
}

func TestParseResults(t *testing.T) {
	good := `{"cpu_util_total":1.5,"cpu_util_user":0.5,"cpu_util_system":1,"sender_has_retransmits":1,` +
		`"congestion_used":"cubic","streams":[{"id":1,"bytes":1000,"retransmits":2,"jitter":0.001,"errors":3,` +
		`"omitted_errors":1,"packets":10,"omitted_packets":2,"start_time":0,"end_time":1.5}],"server_output_text":"hi"}`
	r, err := ParseResults([]byte(good), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := Results{CPUUtilTotal: 1.5, CPUUtilUser: 0.5, CPUUtilSystem: 1, SenderHasRetransmits: 1, CongestionUsed: "cubic",
		ServerOutputText: "hi", Streams: []StreamResults{{ID: 1, Bytes: 1000, Retransmits: 2, Jitter: 0.001, Errors: 3,
			OmittedErrors: 1, Packets: 10, OmittedPackets: 2, EndTime: 1.5}}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	bad := []struct {
		name, in string
		max      int
	}{
		{"missing cpu", `{"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[]}`, 0},
		{"missing streams", `{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0}`, 0},
		{"stream missing bytes", `{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1,"retransmits":0,"jitter":0,"errors":0,"packets":0}]}`, 0},
		{"one omitted counter", `{"cpu_util_total":0,"cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[{"id":1,"bytes":0,"retransmits":0,"jitter":0,"errors":0,"packets":0,"omitted_errors":0}]}`, 0},
		{"string cpu", `{"cpu_util_total":"1","cpu_util_user":0,"cpu_util_system":0,"sender_has_retransmits":0,"streams":[]}`, 0},
		{"over cap", good, 100},
	}
	for _, tc := range bad {
		if _, err := ParseResults([]byte(tc.in), tc.max); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	// Round trip.
	b, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := ParseResults(b, 0)
	if err != nil || !reflect.DeepEqual(r2, want) {
		t.Fatalf("round trip: %v\n%+v", err, r2)
	}
}

func TestUDPHeaderGolden(t *testing.T) {
	h := UDPHeader{Sec: 0x01020304, Usec: 999999, Seq: 0x0000000a0000000b}
	b := make([]byte, 16)
	n, err := h.Encode(b, false)
	if err != nil || n != 12 || hex.EncodeToString(b[:n]) != "01020304000f423f0000000b" {
		t.Fatalf("32-bit: %d %v %x", n, err, b[:n])
	}
	n, err = h.Encode(b, true)
	if err != nil || n != 16 || hex.EncodeToString(b[:n]) != "01020304000f423f0000000a0000000b" {
		t.Fatalf("64-bit: %d %v %x", n, err, b[:n])
	}
	got, err := DecodeUDPHeader(b, true)
	if err != nil || got != h {
		t.Fatalf("decode: %+v %v", got, err)
	}
	if _, err := DecodeUDPHeader(b[:11], false); !errors.Is(err, ErrShortDatagram) {
		t.Fatalf("short: %v", err)
	}
}

func TestUDPConnectValues(t *testing.T) {
	// What a little-endian iperf3 writes: msg "9876", reply "6789".
	if !IsUDPConnectMsg([]byte("9876")) || !IsUDPConnectReply([]byte("6789")) {
		t.Fatal("current values not recognised")
	}
	if string(udpConnectReplyBytes) != "6789" || string(udpConnectMsgBytes) != "9876" {
		t.Fatalf("we write %q / %q", udpConnectReplyBytes, udpConnectMsgBytes)
	}
	legacyLE := []byte{0xb1, 0x68, 0xde, 0x3a} // 987654321 little-endian
	legacyBE := []byte{0x3a, 0xde, 0x68, 0xb1}
	if !IsUDPConnectReply(legacyLE) || !IsUDPConnectReply(legacyBE) {
		t.Fatal("legacy reply not accepted")
	}
	if IsUDPConnectMsg([]byte("6789")) || IsUDPConnectReply([]byte("9876")) || IsUDPConnectMsg([]byte("98765")) {
		t.Fatal("wrong value accepted")
	}
}

func TestUDPStats(t *testing.T) {
	base := time.Unix(1000, 0)
	var s UDPStats
	// seq 1,2,4,3,6 with transit 10ms except packet 4 (15ms).
	add := func(seq uint64, sentOff, transit time.Duration) {
		sent := base.Add(sentOff)
		h := UDPHeader{Sec: uint32(sent.Unix()), Usec: uint32(sent.Nanosecond() / 1000), Seq: seq}
		s.Add(h, 100, sent.Add(transit))
	}
	add(1, 0, 10*time.Millisecond)
	add(2, time.Millisecond, 10*time.Millisecond)
	add(4, 3*time.Millisecond, 15*time.Millisecond)
	if s.Lost != 1 || s.Packets != 4 {
		t.Fatalf("after gap: %+v", s)
	}
	add(3, 2*time.Millisecond, 20*time.Millisecond)
	if s.Lost != 0 || s.OutOfOrder != 1 || s.Packets != 4 {
		t.Fatalf("after late packet: %+v", s)
	}
	add(6, 5*time.Millisecond, 10*time.Millisecond)
	if s.Lost != 1 || s.Packets != 6 || s.Bytes != 500 {
		t.Fatalf("end: %+v", s)
	}
	// Jitter by RFC 1889: J += (|D| - J)/16 over transit deltas 0, 5, 5, 10 ms.
	j := 0.0
	for _, d := range []float64{0, 0.005, 0.005, 0.010} {
		j += (d - j) / 16
	}
	if math.Abs(s.Jitter-j) > 1e-9 {
		t.Fatalf("jitter %g, want %g", s.Jitter, j)
	}
	if got := s.LossPercent(); math.Abs(got-100.0/6) > 1e-9 {
		t.Fatalf("loss %g", got)
	}
}

func TestStreamIDs(t *testing.T) {
	got := []int{streamID(0), streamID(1), streamID(2), streamID(3)}
	if !reflect.DeepEqual(got, []int{1, 3, 4, 5}) {
		t.Fatalf("ids %v", got)
	}
}

func FuzzParseParams(f *testing.F) {
	f.Add([]byte(`{"tcp":true,"time":10,"parallel":1,"len":131072,"client_version":"3.12"}`))
	f.Add([]byte(`{"udp":true,"bandwidth":1048576,"udp_counters_64bit":1,"num":99}`))
	f.Add([]byte(`{"parallel":"4"}`))
	f.Add([]byte(`{"time":1e400}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseParams(b)
		if err != nil {
			return
		}
		_ = p.Validate()
		m, err := p.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		q, err := ParseParams(m)
		if err != nil {
			t.Fatalf("reparse %s: %v", m, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip differs:\n%+v\n%+v", p, q)
		}
	})
}

func FuzzParseResults(f *testing.F) {
	f.Add([]byte(`{"cpu_util_total":1,"cpu_util_user":0,"cpu_util_system":1,"sender_has_retransmits":-1,"streams":[{"id":1,"bytes":5,"retransmits":-1,"jitter":0,"errors":0,"packets":0}]}`))
	f.Add([]byte(`{"streams":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResults(b, 1<<16)
		if err != nil {
			return
		}
		m, err := r.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := ParseResults(m, 0); err != nil {
			t.Fatalf("reparse %s: %v", m, err)
		}
	})
}

func FuzzUDPHeader(f *testing.F) {
	f.Add(uint32(1), uint32(2), uint64(3), false)
	f.Add(uint32(math.MaxUint32), uint32(999999), uint64(math.MaxUint64), true)
	f.Fuzz(func(t *testing.T, sec, usec uint32, seq uint64, c64 bool) {
		h := UDPHeader{Sec: sec, Usec: usec, Seq: seq}
		b := make([]byte, 16)
		n, err := h.Encode(b, c64)
		if err != nil || n != UDPHeaderLen(c64) {
			t.Fatalf("encode: %d %v", n, err)
		}
		got, err := DecodeUDPHeader(b[:n], c64)
		if err != nil {
			t.Fatal(err)
		}
		if !c64 {
			h.Seq = uint64(uint32(h.Seq))
		}
		if got != h {
			t.Fatalf("round trip %+v -> %+v", h, got)
		}
	})
}
