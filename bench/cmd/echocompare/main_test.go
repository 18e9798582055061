package main

import (
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/packetparamedic/reflector/internal/freeport"
)

// sockperfOneWay is sockperf 3.7 ping-pong output without --full-rtt,
// colour escapes included.
const sockperfOneWay = "sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m\n" +
	"sockperf: [Total Run] RunTime=2.002 sec; Warm up time=400 msec; SentMessages=2000; ReceivedMessages=1999\n" +
	"sockperf: ========= Printing statistics for Server No: 0\n" +
	"sockperf: [Valid Duration] RunTime=1.548 sec; SentMessages=1545; ReceivedMessages=1545\n" +
	"sockperf: \x1b[2;35m====> avg-latency=293.022 (std-dev=1303.938)\x1b[0m\n" +
	"sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n" +
	"sockperf: Summary: Latency is 293.022 usec\n" +
	"sockperf: \x1b[2;35mTotal 1545 observations\x1b[0m; each percentile contains 15.45 observations\n" +
	"sockperf: ---> <MAX> observation = 39056.649\n" +
	"sockperf: ---> percentile 99.999 = 39056.649\n" +
	"sockperf: ---> percentile 99.990 = 39056.649\n" +
	"sockperf: ---> percentile 99.900 = 10925.646\n" +
	"sockperf: ---> percentile 99.000 = 3905.959\n" +
	"sockperf: ---> percentile 90.000 =  901.036\n" +
	"sockperf: ---> percentile 75.000 =   62.212\n" +
	"sockperf: ---> percentile 50.000 =    9.878\n" +
	"sockperf: ---> percentile 25.000 =    8.681\n" +
	"sockperf: ---> <MIN> observation =    7.889\n"

func TestParseSockperf(t *testing.T) {
	fullRTT := strings.NewReplacer("Summary: Latency is", "Summary: Round trip is", "avg-latency", "avg-rtt").Replace(sockperfOneWay)
	tests := []struct {
		name     string
		out      string
		p50, p99 float64
		wantErr  bool
	}{
		{name: "one-way latency doubled", out: sockperfOneWay, p50: 2 * 9.878, p99: 2 * 3905.959},
		{name: "--full-rtt taken as is", out: fullRTT, p50: 9.878, p99: 3905.959},
		{name: "no summary", out: strings.ReplaceAll(sockperfOneWay, "Summary:", "Other:"), wantErr: true},
		{name: "no p99", out: strings.ReplaceAll(sockperfOneWay, "percentile 99.000", "percentile 98.000"), wantErr: true},
		{name: "other unit", out: strings.ReplaceAll(sockperfOneWay, "293.022 usec", "0.293 msec"), wantErr: true},
		{name: "no server", out: "sockperf: [Total Run] RunTime=2.000 sec; SentMessages=2000; ReceivedMessages=0\nsockperf: No messages were received from the server. Is the server down?\n", wantErr: true},
		{name: "empty", out: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseSockperf([]byte(tc.out))
			if tc.wantErr {
				if !errors.Is(err, errSockperfOutput) {
					t.Fatalf("parseSockperf = %+v, %v; want errSockperfOutput", m, err)
				}
				return
			}
			if err != nil || !near(m.P50us, tc.p50) || !near(m.P99us, tc.p99) || m.Sent != 1545 || m.Received != 1545 {
				t.Fatalf("parseSockperf = %+v, %v; want p50 %v p99 %v, 1545/1545", m, err, tc.p50, tc.p99)
			}
		})
	}
}

func TestParseTestDoc(t *testing.T) {
	tests := []struct {
		name   string
		doc    string
		want   rtt
		denied bool
		fails  bool
	}{
		{name: "echo", doc: `{"test_type":"udp_echo","echo":{"sent":5000,"received":4999,"rtt_p50_ms":0.0625,"rtt_p99_ms":0.25}}`,
			want: rtt{P50us: 62.5, P99us: 250, Sent: 5000, Received: 4999}},
		{name: "timestamped", doc: `{"echo":{"sent":10,"received":10,"rtt_p50_ms":0.1,"rtt_p99_ms":0.2,"server_time_ms":0.0125}}`,
			want: rtt{P50us: 100, P99us: 200, ServerUs: 12.5, Sent: 10, Received: 10}},
		{name: "denied", doc: `{"denied":{"reason":"busy","message":"1 of 1 concurrent tests running","retry_after_sec":2}}`, denied: true},
		{name: "error", doc: `{"error":"echo: read: connection refused"}`, fails: true},
		{name: "nothing back", doc: `{"echo":{"sent":10,"received":0}}`, fails: true},
		{name: "no echo", doc: `{"test_type":"udp_echo"}`, fails: true},
		{name: "not JSON", doc: `reflector: dial: refused`, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseTestDoc([]byte(tc.doc))
			switch {
			case tc.denied:
				if !errors.Is(err, errDenied) || !strings.Contains(err.Error(), "retry after 2 s") {
					t.Fatalf("parseTestDoc = %+v, %v; want errDenied with the retry", m, err)
				}
			case tc.fails:
				if err == nil || errors.Is(err, errDenied) {
					t.Fatalf("parseTestDoc = %+v, %v; want a failure", m, err)
				}
			default:
				if err != nil || !near(m.P50us, tc.want.P50us) || !near(m.P99us, tc.want.P99us) || !near(m.ServerUs, tc.want.ServerUs) || m.Sent != tc.want.Sent || m.Received != tc.want.Received {
					t.Fatalf("parseTestDoc = %+v, %v; want %+v", m, err, tc.want)
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-reflector", "bin/reflector"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.rates, []int{1000, 10000}) || o.rounds != 3 || o.seconds != 5 || o.size != 64 {
		t.Fatalf("defaults %+v", o)
	}
	if o, err = parseFlags([]string{"-reflector", "r", "-rates", " 500, ,20000"}, io.Discard); err != nil || !slices.Equal(o.rates, []int{500, 20000}) {
		t.Fatalf("rates %v, %v", o.rates, err)
	}
	for _, bad := range [][]string{
		{},
		{"-reflector", "r", "-rates", "0"},
		{"-reflector", "r", "-rates", "20001"},
		{"-reflector", "r", "-rates", "fast"},
		{"-reflector", "r", "-rates", ","},
		{"-reflector", "r", "-size", "8"},
		{"-reflector", "r", "-rounds", "0"},
		{"-reflector", "r", "extra"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestMedianAndSummary(t *testing.T) {
	s := side{Runs: []rtt{{P50us: 30, P99us: 100}, {P50us: 10, P99us: 400}, {P50us: 20, P99us: 200}}}
	s.summarize()
	if s.MedianP50us != 20 || s.MedianP99us != 200 {
		t.Fatalf("summary %+v", s)
	}
}

func TestFreeRange(t *testing.T) {
	base, err := freeport.Range(dataPorts, 0)
	if err != nil {
		t.Fatal(err)
	}
	if base < 20000 || base+dataPorts > 32768 {
		t.Fatalf("range %d+%d outside 20000-32767", base, dataPorts)
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestMissingSockperf(t *testing.T) {
	var stderr strings.Builder
	code := run([]string{"-reflector", "bin/reflector", "-sockperf", filepath.Join(t.TempDir(), "sockperf")}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "apt-get install -y sockperf") {
		t.Fatalf("exit %d, stderr %q; want 1 and the install hint", code, stderr.String())
	}
}

// TestSpreadAndRunSeconds: the ratio range pairs runs of the same round,
// and low rates run long enough for minProbes.
func TestSpreadAndRunSeconds(t *testing.T) {
	ours := []rtt{{P50us: 20}, {P50us: 30}, {P50us: 10}}
	stock := []rtt{{P50us: 10}, {P50us: 10}, {P50us: 20}}
	if got := spread(ours, stock, func(r rtt) float64 { return r.P50us }); got != [2]float64{0.5, 3} {
		t.Fatalf("spread %v, want [0.5 3]", got)
	}
	if got := spread(nil, stock, func(r rtt) float64 { return r.P50us }); got != [2]float64{} {
		t.Fatalf("spread of no runs %v", got)
	}
	for _, c := range []struct{ seconds, rate, want int }{{5, 1000, 10}, {5, 10000, 5}, {20, 1000, 20}, {1, 3000, 4}} {
		if got := runSeconds(c.seconds, c.rate); got != c.want {
			t.Errorf("runSeconds(%d, %d) = %d, want %d", c.seconds, c.rate, got, c.want)
		}
	}
}
