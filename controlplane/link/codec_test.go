package link

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// golden holds one message exactly as it travels: the appliance's frames
// were derived from its serde types (src/reflector_proto/rpc.rs): tag first,
// fields in declaration order, Option fields without skip_serializing_if
// written as null. Floats are chosen non-integral: serde writes 1.0 where Go
// writes 1, which both sides read alike.
type golden struct {
	name  string
	reqID string
	msg   Message
	wire  string
}

var goldens = []golden{
	// What the appliance sends.
	{"appliance hello", "init-0",
		Hello{Version: "1.0", Features: []string{"throughput", "udp_echo"}},
		`{"request_id":"init-0","payload":{"type":"hello","version":"1.0","features":["throughput","udp_echo"]}}`},
	{"appliance upload request", "req-1",
		SessionRequest{TestType: TestThroughput, Params: TestParams{DurationSec: 10, Protocol: ptr("tcp"), Streams: ptr(4), Reverse: ptr(false)}},
		`{"request_id":"req-1","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":10,"protocol":"tcp","streams":4,"reverse":false}}}`},
	{"appliance download request", "req-2",
		SessionRequest{TestType: TestThroughput, Params: TestParams{DurationSec: 30, Protocol: ptr("tcp"), Streams: ptr(4), Reverse: ptr(true)}},
		`{"request_id":"req-2","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":30,"protocol":"tcp","streams":4,"reverse":true}}}`},
	{"appliance pair request", "req-1",
		PairRequest{Token: "ABCD1234"},
		`{"request_id":"req-1","payload":{"type":"pair_request","token":"ABCD1234"}}`},
	{"udp echo request, options null", "req-3",
		SessionRequest{TestType: TestUDPEcho, Params: TestParams{DurationSec: 10}},
		`{"request_id":"req-3","payload":{"type":"session_request","test_type":"udp_echo","params":{"duration_sec":10,"protocol":null,"streams":null,"reverse":null}}}`},
	{"request with extensions", "req-4",
		SessionRequest{TestType: TestThroughput, Params: TestParams{DurationSec: 5, Protocol: ptr(ProtocolUDP), Streams: ptr(2), Reverse: ptr(false),
			Bidir: ptr(true), BitrateBps: ptr(int64(100_000_000)), PacketSize: ptr(1200), RatePPS: ptr(1000), Timestamped: ptr(true)}},
		`{"request_id":"req-4","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":5,"protocol":"udp","streams":2,"reverse":false,"bidir":true,"bitrate_bps":100000000,"packet_size":1200,"rate_pps":1000,"timestamped":true}}}`},
	{"session close", "req-5", SessionClose{TestID: "t-1"},
		`{"request_id":"req-5","payload":{"type":"session_close","test_id":"t-1"}}`},
	{"get status", "req-6", GetStatus{}, `{"request_id":"req-6","payload":{"type":"get_status"}}`},
	{"get path meta", "req-7", GetPathMeta{}, `{"request_id":"req-7","payload":{"type":"get_path_meta"}}`},

	// What the appliance expects back.
	{"server hello", "init-0",
		ServerHello{Version: "1.0", Features: []string{"throughput", "udp_echo", "path_meta", "pairing"},
			PolicySummary: PolicySummary{MaxTestDurationSec: 60, MaxConcurrentTests: 1, MaxTestsPerHour: 10, AllowedTestTypes: []string{"throughput", "udp_echo"}}},
		`{"request_id":"init-0","payload":{"type":"server_hello","version":"1.0","features":["throughput","udp_echo","path_meta","pairing"],"policy_summary":{"max_test_duration_sec":60,"max_concurrent_tests":1,"max_tests_per_hour":10,"allowed_test_types":["throughput","udp_echo"]}}}`},
	{"server hello with position", "init-0",
		ServerHello{Version: "1.0", Features: []string{"throughput"},
			PolicySummary:   PolicySummary{MaxTestDurationSec: 30, MaxConcurrentTests: 2, MaxTestsPerHour: 6, AllowedTestTypes: []string{"throughput"}},
			NetworkPosition: PositionWAN},
		`{"request_id":"init-0","payload":{"type":"server_hello","version":"1.0","features":["throughput"],"policy_summary":{"max_test_duration_sec":30,"max_concurrent_tests":2,"max_tests_per_hour":6,"allowed_test_types":["throughput"]},"network_position":"wan"}}`},
	{"session grant", "req-1",
		SessionGrant{TestID: "550e8400-e29b-41d4-a716-446655440000", Mode: ModeDirectEphemeral, Port: 5201, Token: "9b2f6c1e-0d7a-4c55-8e43-2a8f1b7c9d10", ExpiresAt: "2026-11-29T04:00:15Z"},
		`{"request_id":"req-1","payload":{"type":"session_grant","test_id":"550e8400-e29b-41d4-a716-446655440000","mode":"direct_ephemeral","port":5201,"token":"9b2f6c1e-0d7a-4c55-8e43-2a8f1b7c9d10","expires_at":"2026-11-29T04:00:15Z"}}`},
	{"session grant with extensions", "req-2",
		SessionGrant{TestID: "t-2", Mode: ModeTunneled, Port: 4000, Token: "tok", ExpiresAt: "2026-11-29T04:01:05Z", DurationSec: 60, Streams: 4, Clamped: true},
		`{"request_id":"req-2","payload":{"type":"session_grant","test_id":"t-2","mode":"tunneled","port":4000,"token":"tok","expires_at":"2026-11-29T04:01:05Z","duration_sec":60,"streams":4,"clamped":true}}`},
	{"session deny busy", "req-2",
		SessionDeny{Reason: DenyBusy, Message: "a test is already running", RetryAfterSec: ptr(10)},
		`{"request_id":"req-2","payload":{"type":"session_deny","reason":"busy","message":"a test is already running","retry_after_sec":10}}`},
	{"session deny without retry", "req-1",
		SessionDeny{Reason: DenyUnauthorized, Message: "peer not in allowlist"},
		`{"request_id":"req-1","payload":{"type":"session_deny","reason":"unauthorized","message":"peer not in allowlist","retry_after_sec":null}}`},
	{"ok", "req-5", OK{}, `{"request_id":"req-5","payload":{"type":"ok"}}`},
	{"error unexpected", "req-9", Error{Code: CodeUnexpected, Message: "unexpected message type"},
		`{"request_id":"req-9","payload":{"type":"error","code":400,"message":"unexpected message type"}}`},
	{"error pairing required", "req-1", Error{Code: CodePairingRequired, Message: "pairing required before sending other messages"},
		`{"request_id":"req-1","payload":{"type":"error","code":403,"message":"pairing required before sending other messages"}}`},
	{"pair response success", "req-1",
		PairResponse{Success: true, Message: "paired successfully", EndpointID: ptr("PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K")},
		`{"request_id":"req-1","payload":{"type":"pair_response","success":true,"message":"paired successfully","endpoint_id":"PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"}}`},
	{"pair response failure", "req-1",
		PairResponse{Success: false, Message: "pairing failed: invalid code"},
		`{"request_id":"req-1","payload":{"type":"pair_response","success":false,"message":"pairing failed: invalid code"}}`},
	{"status idle", "req-6",
		StatusSnapshot{EndpointID: "PP-X", UptimeSec: 7200},
		`{"request_id":"req-6","payload":{"type":"status_snapshot","endpoint_id":"PP-X","uptime_sec":7200,"active_test":null,"tests_today":0,"bytes_today":0}}`},
	{"status active", "req-6",
		StatusSnapshot{EndpointID: "PP-X", UptimeSec: 3600, TestsToday: 3, BytesToday: 18446744073709551615, NetworkPosition: PositionLAN,
			ActiveTest: &ActiveTest{TestID: "t-1", TestType: TestThroughput, PeerID: "PP-Y", StartedAt: "2026-11-29T04:00:00Z", RemainingSec: 12}},
		`{"request_id":"req-6","payload":{"type":"status_snapshot","endpoint_id":"PP-X","uptime_sec":3600,"active_test":{"test_id":"t-1","test_type":"throughput","peer_id":"PP-Y","started_at":"2026-11-29T04:00:00Z","remaining_sec":12},"tests_today":3,"bytes_today":18446744073709551615,"network_position":"lan"}}`},
	{"path meta", "req-7",
		PathMeta{CPULoad: 0.35, MemoryUsedMB: 512, MemoryTotalMB: 2048, LoadAvg: [3]float64{0.25, 0.3, 0.28}, MTU: ptr(1500), TimeSynced: true, BuildVersion: "0.1.0", BuildHash: "abcdef123456"},
		`{"request_id":"req-7","payload":{"type":"path_meta","cpu_load":0.35,"memory_used_mb":512,"memory_total_mb":2048,"load_avg":[0.25,0.3,0.28],"mtu":1500,"time_synced":true,"build_version":"0.1.0","build_hash":"abcdef123456"}}`},
	{"path meta unknown mtu", "req-7",
		PathMeta{CPULoad: 0.5, MemoryUsedMB: 1, MemoryTotalMB: 2, LoadAvg: [3]float64{0.5, 0.5, 0.5}, BuildVersion: "dev", BuildHash: "unknown"},
		`{"request_id":"req-7","payload":{"type":"path_meta","cpu_load":0.5,"memory_used_mb":1,"memory_total_mb":2,"load_avg":[0.5,0.5,0.5],"mtu":null,"time_synced":false,"build_version":"dev","build_hash":"unknown"}}`},

	// Extensions.
	{"get test result", "req-8", TestResultRequest{TestID: "t-1"},
		`{"request_id":"req-8","payload":{"type":"get_test_result","test_id":"t-1"}}`},
	{"test result", "req-8",
		TestResult{TestID: "t-1", TestType: TestThroughput, State: StateCompleted, BytesSent: 1250000000, BytesReceived: 2048, DurationSec: 10.5, EndReason: "iperf_done", Summary: json.RawMessage(`{"streams":4}`)},
		`{"request_id":"req-8","payload":{"type":"test_result","test_id":"t-1","test_type":"throughput","state":"completed","bytes_sent":1250000000,"bytes_received":2048,"duration_sec":10.5,"end_reason":"iperf_done","summary":{"streams":4}}}`},
	{"test result running", "req-9",
		TestResult{TestID: "t-1", TestType: TestUDPEcho, State: StateRunning, BytesSent: 1, BytesReceived: 2, DurationSec: 0.25},
		`{"request_id":"req-9","payload":{"type":"test_result","test_id":"t-1","test_type":"udp_echo","state":"running","bytes_sent":1,"bytes_received":2,"duration_sec":0.25}}`},
	{"tunnel attach", "attach-0", TunnelAttach{TestID: "t-1", Token: "secret"},
		`{"request_id":"attach-0","payload":{"type":"tunnel_attach","test_id":"t-1","token":"secret"}}`},
	{"tunnel attach udp", "attach-0", TunnelAttach{TestID: "t-1", Token: "secret", StreamKind: ProtocolUDP},
		`{"request_id":"attach-0","payload":{"type":"tunnel_attach","test_id":"t-1","token":"secret","stream_kind":"udp"}}`},
	{"tunnel attached", "attach-0", TunnelAttachResult{OK: true, Message: "attached"},
		`{"request_id":"attach-0","payload":{"type":"tunnel_attached","ok":true,"message":"attached"}}`},
}

func TestGoldenEncode(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			got, err := Encode(g.reqID, g.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != g.wire {
				t.Fatalf("Encode:\n got %s\nwant %s", got, g.wire)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			id, m, err := Decode([]byte(g.wire))
			if err != nil {
				t.Fatal(err)
			}
			if id != g.reqID {
				t.Fatalf("request_id = %q, want %q", id, g.reqID)
			}
			want := reflect.New(reflect.TypeOf(g.msg))
			want.Elem().Set(reflect.ValueOf(g.msg))
			if !reflect.DeepEqual(m, want.Interface()) {
				t.Fatalf("Decode = %#v, want %#v", m, want.Interface())
			}
		})
	}
}

// Every registered type has a golden vector, so a new message cannot be
// added without one.
func TestGoldensCoverRegistry(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range goldens {
		seen[g.msg.MessageType()] = true
	}
	for typ, newMsg := range registry {
		if !seen[typ] {
			t.Errorf("no golden vector for %q", typ)
		}
		if got := newMsg().MessageType(); got != typ {
			t.Errorf("registry[%q] builds a %q", typ, got)
		}
	}
}

func TestEncodePointerAndValueAgree(t *testing.T) {
	v := SessionClose{TestID: "x"}
	a, err := Encode("r", v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode("r", &v)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Fatalf("value %s != pointer %s", a, b)
	}
}

func TestEncodeNilSlicesAsEmpty(t *testing.T) {
	sh := &ServerHello{Version: "1.0"}
	got, err := Encode("init-0", sh)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"request_id":"init-0","payload":{"type":"server_hello","version":"1.0","features":[],"policy_summary":{"max_test_duration_sec":0,"max_concurrent_tests":0,"max_tests_per_hour":0,"allowed_test_types":[]}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if sh.Features != nil || sh.PolicySummary.AllowedTestTypes != nil {
		t.Fatal("Encode modified the caller's message")
	}
}

func TestEncodeDoesNotEscapeHTML(t *testing.T) {
	got, err := Encode("a<b>&c", Error{Code: 400, Message: "<nope> & \"quoted\""})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"request_id":"a<b>&c","payload":{"type":"error","code":400,"message":"<nope> & \"quoted\""}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestEncodeRejects(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
	}{
		{"nil", nil},
		{"nil pointer", (*Hello)(nil)},
		{"not a struct", notStruct("x")},
		{"NaN", PathMeta{CPULoad: nan()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Encode("r", tt.msg); err == nil {
				t.Fatalf("Encode succeeded: %s", b)
			}
		})
	}
}

type notStruct string

func (notStruct) MessageType() string { return "not_struct" }

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestDecodeLenient(t *testing.T) {
	tests := []struct {
		name string
		wire string
		want Message
	}{
		{"unknown fields ignored",
			`{"request_id":"r","extra":1,"payload":{"type":"hello","version":"1.0","features":[],"future":{"x":[1,2]}}}`,
			&Hello{Version: "1.0", Features: []string{}}},
		{"options absent",
			`{"request_id":"r","payload":{"type":"session_request","test_type":"udp_echo","params":{"duration_sec":5}}}`,
			&SessionRequest{TestType: "udp_echo", Params: TestParams{DurationSec: 5}}},
		{"options null",
			`{"request_id":"r","payload":{"type":"session_deny","reason":"busy","message":"m","retry_after_sec":null}}`,
			&SessionDeny{Reason: DenyBusy, Message: "m"}},
		{"negative int is a value for the server to judge",
			`{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":-5,"streams":-1}}}`,
			&SessionRequest{TestType: "throughput", Params: TestParams{DurationSec: -5, Streams: ptr(-1)}}},
		{"unit message with fields",
			`{"request_id":"r","payload":{"type":"get_status","x":true}}`,
			&GetStatus{}},
		{"whitespace and key order",
			"{ \"payload\" : { \"token\" : \"T\" , \"type\" : \"pair_request\" } ,\n \"request_id\" : \"r\" }",
			&PairRequest{Token: "T"}},
		{"unknown deny reason kept",
			`{"request_id":"r","payload":{"type":"session_deny","reason":"maintenance","message":""}}`,
			&SessionDeny{Reason: "maintenance"}},
		{"empty request id",
			`{"request_id":"","payload":{"type":"ok"}}`,
			&OK{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m, err := Decode([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Fatalf("Decode = %#v, want %#v", m, tt.want)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name   string
		wire   string
		wantID string
	}{
		{"not json", `{"request_id":`, ""},
		{"trailing garbage", `{"request_id":"r","payload":{"type":"ok"}} x`, ""},
		{"null envelope", `null`, ""},
		{"array envelope", `[1]`, ""},
		{"missing request_id", `{"payload":{"type":"ok"}}`, ""},
		{"null request_id", `{"request_id":null,"payload":{"type":"ok"}}`, ""},
		{"numeric request_id", `{"request_id":7,"payload":{"type":"ok"}}`, ""},
		{"missing payload", `{"request_id":"r"}`, "r"},
		{"null payload", `{"request_id":"r","payload":null}`, "r"},
		{"payload is a string", `{"request_id":"r","payload":"ok"}`, "r"},
		{"payload without type", `{"request_id":"r","payload":{"version":"1.0"}}`, "r"},
		{"type not a string", `{"request_id":"r","payload":{"type":1}}`, "r"},
		{"missing required field", `{"request_id":"r","payload":{"type":"hello","version":"1.0"}}`, "r"},
		{"null required field", `{"request_id":"r","payload":{"type":"hello","version":null,"features":[]}}`, "r"},
		{"field names are case-sensitive", `{"request_id":"r","payload":{"type":"hello","Version":"1.0","features":[]}}`, "r"},
		{"missing nested field", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{}}}`, "r"},
		{"missing nested object", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput"}}`, "r"},
		{"nested not an object", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":[]}}`, "r"},
		{"string for number", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":"10"}}}`, "r"},
		{"float for int", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":1.5}}}`, "r"},
		{"int overflow", `{"request_id":"r","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":99999999999999999999999}}}`, "r"},
		{"negative unsigned", `{"request_id":"r","payload":{"type":"status_snapshot","endpoint_id":"e","uptime_sec":-1,"tests_today":0,"bytes_today":0}}`, "r"},
		{"bool as string", `{"request_id":"r","payload":{"type":"path_meta","cpu_load":0,"memory_used_mb":0,"memory_total_mb":0,"load_avg":[0,0,0],"time_synced":"yes","build_version":"","build_hash":""}}`, "r"},
		{"float out of range", `{"request_id":"r","payload":{"type":"path_meta","cpu_load":1e999,"memory_used_mb":0,"memory_total_mb":0,"load_avg":[0,0,0],"time_synced":true,"build_version":"","build_hash":""}}`, "r"},
		{"bad optional nested", `{"request_id":"r","payload":{"type":"status_snapshot","endpoint_id":"e","uptime_sec":1,"active_test":{"test_id":"t"},"tests_today":0,"bytes_today":0}}`, "r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, m, err := Decode([]byte(tt.wire))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if m != nil {
				t.Fatalf("message %#v returned with error", m)
			}
			if id != tt.wantID {
				t.Fatalf("request_id = %q, want %q", id, tt.wantID)
			}
		})
	}
}

func TestDecodeUnknownType(t *testing.T) {
	long := strings.Repeat("z", 500)
	for _, typ := range []string{"heartbeat", "Hello", "", long} {
		wire := `{"request_id":"req-3","payload":{"type":"` + typ + `","x":1}}`
		id, m, err := Decode([]byte(wire))
		var ute *UnknownTypeError
		if !errors.As(err, &ute) {
			t.Fatalf("type %.20q: err = %v, want *UnknownTypeError", typ, err)
		}
		if errors.Is(err, ErrMalformed) {
			t.Fatalf("type %.20q: unknown type must not be ErrMalformed", typ)
		}
		if ute.Type != typ || id != "req-3" || m != nil {
			t.Fatalf("type %.20q: got type %.20q id %q m %v", typ, ute.Type, id, m)
		}
		if len(err.Error()) > 2*maxTypeInError {
			t.Fatalf("error text not bounded: %d bytes", len(err.Error()))
		}
	}
}

func TestErrorIsAnError(t *testing.T) {
	var err error = &Error{Code: CodePairingRequired, Message: "pair first"}
	var e *Error
	if !errors.As(err, &e) || e.Code != 403 {
		t.Fatalf("errors.As failed on %v", err)
	}
	if got, want := err.Error(), "pp-link error 403: pair first"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestDenyReasons(t *testing.T) {
	tests := []struct {
		r         DenyReason
		known     bool
		appliance DenyReason
	}{
		{DenyUnauthorized, true, DenyUnauthorized},
		{DenyRateLimited, true, DenyRateLimited},
		{DenyBusy, true, DenyBusy},
		{DenyInvalidParams, true, DenyInvalidParams},
		{DenyQuotaExceeded, true, DenyQuotaExceeded},
		{DenyResourceExhausted, true, DenyBusy},
		{"maintenance", false, DenyBusy},
	}
	for _, tt := range tests {
		if got := tt.r.Known(); got != tt.known {
			t.Errorf("%q.Known() = %v", tt.r, got)
		}
		if got := tt.r.ForAppliance(); got != tt.appliance {
			t.Errorf("%q.ForAppliance() = %q, want %q", tt.r, got, tt.appliance)
		}
	}
}

func TestRequestIDs(t *testing.T) {
	var g RequestIDs
	for _, want := range []string{"init-0", "req-1", "req-2", "req-3"} {
		if got := g.Next(); got != want {
			t.Fatalf("Next() = %q, want %q", got, want)
		}
	}
}
