package hostinfo

import (
	"errors"
	"strings"
	"testing"
)

// Canned inputs taken from real machines.
const (
	statReal = `cpu  43052 7 22620 302074 949 0 1800 0 0 0
cpu0 21192 0 11066 151772 213 0 879 0 0 0
cpu1 21859 6 11554 150302 735 0 921 0 0 0
intr 1234 0 0
ctxt 99
`
	routeDefault = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	routeTwoDefaults = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"wg0\t00000000\t00000000\t0001\t0\t0\t-1\t00000000\t0\t0\t0\n"
	routeNoDefault = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	routeDownDefault = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
	ipv6Route = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000100 00000002 00000000 00000003    wlan0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`
	ipv6RouteNoDefault = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    cpuTimes
		wantErr bool
	}{
		// total = 43052+7+22620+302074+949+0+1800+0; idle = 302074+949
		{"real", statReal, cpuTimes{busy: 43052 + 7 + 22620 + 1800, total: 43052 + 7 + 22620 + 302074 + 949 + 1800}, false},
		{"old kernel, four values", "cpu 10 0 5 85\n", cpuTimes{busy: 15, total: 100}, false},
		{"guest not double counted", "cpu 10 0 0 90 0 0 0 0 7 3\n", cpuTimes{busy: 10, total: 100}, false},
		{"no cpu line", "cpu0 1 2 3 4\n", cpuTimes{}, true},
		{"too few fields", "cpu 1 2 3\n", cpuTimes{}, true},
		{"not a number", "cpu 1 x 3 4 5\n", cpuTimes{}, true},
		{"negative", "cpu 1 -2 3 4 5\n", cpuTimes{}, true},
		{"empty", "", cpuTimes{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memInfo
		wantErr bool
	}{
		{"modern", "MemTotal:       24683620 kB\nMemFree:         1000000 kB\nMemAvailable:   24308804 kB\nBuffers: 1 kB\n",
			memInfo{totalKB: 24683620, availableKB: 24308804}, false},
		{"pre-3.14 fallback", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\nSwapCached: 5 kB\n",
			memInfo{totalKB: 1000, availableKB: 420}, false},
		{"available capped at total", "MemTotal: 1000 kB\nMemAvailable: 5000 kB\n", memInfo{totalKB: 1000, availableKB: 1000}, false},
		{"no total", "MemFree: 100 kB\n", memInfo{}, true},
		{"zero total", "MemTotal: 0 kB\n", memInfo{}, true},
		{"bad number", "MemTotal: lots kB\n", memInfo{}, true},
		{"missing value", "MemTotal:\n", memInfo{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMeminfo(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		in      string
		want    [3]float64
		wantErr bool
	}{
		{"2.32 2.20 1.16 3/113 21990\n", [3]float64{2.32, 2.20, 1.16}, false},
		{"0.00 0.00 0.00 1/1 1", [3]float64{}, false},
		{"1.0 2.0", [3]float64{}, true},
		{"1.0 x 3.0 1/1 1", [3]float64{}, true},
		{"-1 0 0 1/1 1", [3]float64{}, true},
		{"NaN 0 0 1/1 1", [3]float64{}, true},
		{"0 +Inf 0 1/1 1", [3]float64{}, true},
	}
	for _, tt := range tests {
		got, err := parseLoadavg(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: err = %v, wantErr %v", tt.in, err, tt.wantErr)
		}
		if !tt.wantErr && got != tt.want {
			t.Fatalf("%q: got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseRoute(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"default", routeDefault, "eth0", nil},
		{"lowest metric wins, %d-printed u32 metric is large", routeTwoDefaults, "eth0", nil},
		{"no default", routeNoDefault, "", ErrNoDefaultRoute},
		{"default route down", routeDownDefault, "", ErrNoDefaultRoute},
		{"header only", "Iface\tDestination\tGateway\n", "", ErrNoDefaultRoute},
		{"empty", "", "", ErrNoDefaultRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRoute(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("iface = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := parseRoute(strings.NewReader("eth0\tzz\t0\t0003\t0\t0\t0\t00000000\n")); err == nil || errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("garbage line: err = %v, want a parse error", err)
	}
}

func TestParseIPv6Route(t *testing.T) {
	got, err := parseIPv6Route(strings.NewReader(ipv6Route))
	if err != nil || got != "wlan0" {
		t.Fatalf("got %q, %v; want wlan0 (metric 0x100 beats 0x400; lo reject route skipped)", got, err)
	}
	if _, err := parseIPv6Route(strings.NewReader(ipv6RouteNoDefault)); !errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("no default: err = %v", err)
	}
	bad := "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 zz 00000001 00000000 00000003 eth0\n"
	if _, err := parseIPv6Route(strings.NewReader(bad)); err == nil || errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("garbage: err = %v, want a parse error", err)
	}
}

func TestParseMTU(t *testing.T) {
	for in, want := range map[string]int{"1500\n": 1500, "65536": 65536, " 9000 \n": 9000} {
		if got, err := parseMTU([]byte(in)); err != nil || got != want {
			t.Errorf("parseMTU(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "-1", "abc"} {
		if _, err := parseMTU([]byte(in)); err == nil {
			t.Errorf("parseMTU(%q) accepted", in)
		}
	}
}

func TestValidIfaceName(t *testing.T) {
	for name, want := range map[string]bool{"eth0": true, "enp0s31f6": true, "br-1a2b": true,
		"": false, ".": false, "..": false, "../etc": false, "a/b": false, "x\x00": false} {
		if got := validIfaceName(name); got != want {
			t.Errorf("validIfaceName(%q) = %v", name, got)
		}
	}
}

func TestClockSynced(t *testing.T) {
	tests := []struct {
		name     string
		state    int
		status   int32
		maxError int64
		want     bool
	}{
		{"synced", 0, 0x2001, 12_000, true},
		{"unsync flag", 0, 0x0041, 12_000, false},
		{"time error state", timeError, 0, 12_000, false},
		{"max error too large", 0, 0, 16_000_000, false},
		{"negative max error", 0, 0, -1, false},
		{"leap second pending still synced", 1, 0x0011, 500_000, true},
	}
	for _, tt := range tests {
		if got := clockSynced(tt.state, tt.status, tt.maxError); got != tt.want {
			t.Errorf("%s: clockSynced = %v, want %v", tt.name, got, tt.want)
		}
	}
}
