package iperfrun

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseReport(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Report
		wantErr error
		errText string
	}{
		{
			name: "tcp",
			in: `{"start":{"test_start":{"protocol":"TCP"}},"end":{
				"sum_sent":{"seconds":3.0,"bytes":36515664,"bits_per_second":97366860.2},
				"sum_received":{"seconds":3.003801,"bytes":35897368,"bits_per_second":95605182.9}}}`,
			want: Report{SentBytes: 36515664, ReceivedBytes: 35897368, ReceivedBitsPerSecond: 95605182.9, Seconds: 3.003801},
		},
		{
			name: "udp with sum_received",
			in: `{"start":{"test_start":{"protocol":"UDP"}},"end":{
				"sum":{"seconds":1.00008,"bytes":337232000,"bits_per_second":2697802043.9,"lost_percent":0.61},
				"sum_sent":{"seconds":1.00002,"bytes":337232000,"bits_per_second":2697802043.9,"lost_percent":0},
				"sum_received":{"seconds":1.00008,"bytes":335113800,"bits_per_second":2680695944.3,"lost_percent":0.61}}}`,
			want: Report{UDP: true, SentBytes: 337232000, ReceivedBytes: 335113800, ReceivedBitsPerSecond: 2680695944.3, LossPercent: 0.61, Seconds: 1.00008},
		},
		{
			name: "old udp with sum only",
			in: `{"start":{"test_start":{"protocol":"UDP"}},"end":{
				"sum":{"seconds":2,"bytes":1000000,"bits_per_second":4000000,"lost_percent":10}}}`,
			want: Report{UDP: true, SentBytes: 1000000, ReceivedBytes: 900000, ReceivedBitsPerSecond: 3600000, LossPercent: 10, Seconds: 2},
		},
		{
			name:    "client error",
			in:      `{"start":{"connected":[]},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}`,
			errText: "Connection refused",
		},
		{
			name:    "no summary",
			in:      `{"start":{"test_start":{"protocol":"TCP"}},"end":{}}`,
			wantErr: ErrNoSummary,
		},
		{
			name:    "not json",
			in:      `iperf3: error - unable to connect`,
			errText: "decode iperf3 report",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseReport([]byte(tc.in))
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			case tc.errText != "":
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errText)
				}
				return
			case err != nil:
				t.Fatalf("ParseReport: %v", err)
			}
			if got.UDP != tc.want.UDP || got.SentBytes != tc.want.SentBytes ||
				got.ReceivedBytes != tc.want.ReceivedBytes || !near(got.ReceivedBitsPerSecond, tc.want.ReceivedBitsPerSecond) ||
				!near(got.LossPercent, tc.want.LossPercent) || !near(got.Seconds, tc.want.Seconds) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseReportClientErrorType(t *testing.T) {
	_, err := ParseReport([]byte(`{"end":{},"error":"the server is busy running a test. try again later"}`))
	var ce *ClientError
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "busy") {
		t.Fatalf("err = %v, want a *ClientError about a busy server", err)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &TailBuffer{Max: 5}
	for _, s := range []string{"ab", "cd", "efg"} {
		if n, err := tb.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := string(tb.Bytes()); got != "cdefg" {
		t.Fatalf("after small writes: %q, want %q", got, "cdefg")
	}
	_, _ = tb.Write([]byte("0123456789"))
	if got := string(tb.Bytes()); got != "56789" {
		t.Fatalf("after a large write: %q, want %q", got, "56789")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }
