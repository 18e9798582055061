package link

import "testing"

func BenchmarkEncodeSessionGrant(b *testing.B) {
	m := SessionGrant{TestID: "550e8400-e29b-41d4-a716-446655440000", Mode: ModeDirectEphemeral, Port: 5201, Token: "tok", ExpiresAt: "2026-11-29T04:00:15Z"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode("req-1", m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSessionRequest(b *testing.B) {
	frame := []byte(`{"request_id":"req-1","payload":{"type":"session_request","test_type":"throughput","params":{"duration_sec":10,"protocol":"tcp","streams":4,"reverse":false}}}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}
