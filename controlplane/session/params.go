package session

import (
	"fmt"
	"strings"
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
	"github.com/packetparamedic/reflector/controlplane/link"
)

// Grace periods added to a test's duration for its hard deadline: setup
// (the client starts about 500 ms after the grant) and, for throughput, the
// iperf3 results exchange.
const (
	throughputGrace = 10 * time.Second
	echoGrace       = 3 * time.Second
)

// spec is a validated request with the server's limits applied.
type spec struct {
	TestType    string `json:"test_type"`
	Protocol    string `json:"protocol"`
	DurationSec int    `json:"duration_sec"`
	Streams     int    `json:"streams,omitempty"`
	Reverse     bool   `json:"reverse,omitempty"`
	Bidir       bool   `json:"bidir,omitempty"`
	// RatePPS is the echo rate clamp of the session (udp_echo).
	RatePPS     int  `json:"rate_pps,omitempty"`
	Timestamped bool `json:"timestamped,omitempty"`
	// Clamped lists what the server lowered, e.g. "duration_sec 120 -> 60".
	Clamped []string `json:"clamped,omitempty"`
}

// duration is the granted test duration.
func (s *spec) duration() time.Duration { return time.Duration(s.DurationSec) * time.Second }

// grace is the time added to the duration for the hard deadline; echo is
// the grace of udp_echo sessions (echoGrace unless a test shortened it).
func (s *spec) grace(echo time.Duration) time.Duration {
	if s.TestType == link.TestUDPEcho {
		return echo
	}
	return throughputGrace
}

// paramError is an invalid_params refusal.
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &paramError{msg: fmt.Sprintf(format, args...)}
}

// limitError refuses a request above the limits from a client that does
// not announce link.FeatureClamp: it would run the test it asked for, not
// the lowered one, and the iperf3 server would refuse that.
type limitError struct{ over []string }

func (e *limitError) Error() string {
	return strings.Join(e.over, "; ") + " (this client does not announce the \"" + link.FeatureClamp +
		"\" feature, so the request is refused rather than lowered: ask within the limit)"
}

// limits collects the values of a request that exceed the server's limits.
type limits struct {
	s    *spec
	over []string
}

// cap lowers *v to limit when above it, recording both forms: the grant's
// clamped list ("streams 8 -> 4") and the refusal ("streams 8 exceeds
// max_streams 4").
func (l *limits) cap(field string, v *int, limit int, key string) {
	if *v <= limit {
		return
	}
	l.s.Clamped = append(l.s.Clamped, fmt.Sprintf("%s %d -> %d", field, *v, limit))
	l.over = append(l.over, fmt.Sprintf("%s %d exceeds %s %d", field, *v, key, limit))
	*v = limit
}

// validate checks req against the configuration and applies its limits.
// For a client that announced link.FeatureClamp (clampOK), durations above
// quotas.max_test_duration_sec, stream counts above iperf3.max_streams and
// echo rates above quotas.echo_max_pps are clamped, not refused (the grant
// reports the effective values and Clamped); for any other client they
// are a *limitError naming each limit. Everything else that is wrong is an
// invalid_params error. udpThroughput says whether iperf3 UDP tests can be
// served.
func validate(cfg *config.Config, req link.SessionRequest, udpThroughput, clampOK bool) (*spec, error) {
	s, l, err := check(cfg, req, udpThroughput)
	if err != nil {
		return nil, err
	}
	if len(l.over) > 0 && !clampOK {
		return nil, &limitError{over: l.over}
	}
	return s, nil
}

// check validates req and applies the limits, collecting what it lowered.
func check(cfg *config.Config, req link.SessionRequest, udpThroughput bool) (*spec, *limits, error) {
	q := cfg.Quotas
	p := req.Params
	s := &spec{TestType: req.TestType}
	l := &limits{s: s}
	bad := func(format string, args ...any) (*spec, *limits, error) {
		return nil, nil, invalid(format, args...)
	}
	switch req.TestType {
	case link.TestThroughput:
		if !q.AllowThroughput {
			return bad("test type %q is not offered by this reflector", req.TestType)
		}
	case link.TestUDPEcho:
		if !q.AllowUDPEcho {
			return bad("test type %q is not offered by this reflector", req.TestType)
		}
	default:
		return bad("unknown test type %q (want %q or %q)", req.TestType, link.TestThroughput, link.TestUDPEcho)
	}
	if p.DurationSec <= 0 {
		return bad("duration_sec must be positive, got %d", p.DurationSec)
	}
	s.DurationSec = p.DurationSec
	l.cap("duration_sec", &s.DurationSec, q.MaxTestDurationSec, "max_test_duration_sec")

	s.Protocol = link.ProtocolTCP
	if req.TestType == link.TestUDPEcho {
		s.Protocol = link.ProtocolUDP
	}
	if p.Protocol != nil {
		switch proto := strings.ToLower(*p.Protocol); {
		case proto == link.ProtocolTCP && req.TestType == link.TestThroughput, proto == link.ProtocolUDP:
			s.Protocol = proto
		default:
			return bad("protocol %q is not valid for %s (want %q or %q)", *p.Protocol, req.TestType, link.ProtocolTCP, link.ProtocolUDP)
		}
	}

	if req.TestType == link.TestThroughput && s.Protocol == link.ProtocolUDP && !udpThroughput {
		return bad("protocol udp throughput tests are not available in this build")
	}
	if req.TestType == link.TestUDPEcho {
		s.RatePPS = q.EchoMaxPPS
		if p.RatePPS != nil {
			if *p.RatePPS <= 0 {
				return bad("rate_pps must be positive, got %d", *p.RatePPS)
			}
			s.RatePPS = *p.RatePPS
			l.cap("rate_pps", &s.RatePPS, q.EchoMaxPPS, "echo_max_pps")
		}
		s.Timestamped = p.Timestamped != nil && *p.Timestamped
		return s, l, nil
	}

	s.Streams = cfg.Iperf3.DefaultStreams
	if p.Streams != nil {
		n := *p.Streams
		if n <= 0 {
			return bad("streams must be positive, got %d", n)
		}
		s.Streams = n
	}
	l.cap("streams", &s.Streams, cfg.Iperf3.MaxStreams, "max_streams")
	s.Reverse = p.Reverse != nil && *p.Reverse
	s.Bidir = p.Bidir != nil && *p.Bidir
	if s.Reverse && s.Bidir {
		return bad("reverse and bidir are exclusive")
	}
	return s, l, nil
}
