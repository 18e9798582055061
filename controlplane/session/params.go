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

// grace is the time added to the duration for the hard deadline.
func (s *spec) grace() time.Duration {
	if s.TestType == link.TestUDPEcho {
		return echoGrace
	}
	return throughputGrace
}

// paramError is an invalid_params refusal.
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &paramError{msg: fmt.Sprintf(format, args...)}
}

// validate checks req against the configuration and applies its limits.
// Durations above quotas.max_test_duration_sec and stream counts above
// iperf3.max_streams are clamped, not refused (the grant reports the
// effective values and Clamped); an echo rate above quotas.echo_max_pps is
// clamped too. Everything else that is wrong is an invalid_params error.
// udpThroughput says whether iperf3 UDP tests can be served.
func validate(cfg *config.Config, req link.SessionRequest, udpThroughput bool) (*spec, error) {
	q := cfg.Quotas
	p := req.Params
	s := &spec{TestType: req.TestType}
	switch req.TestType {
	case link.TestThroughput:
		if !q.AllowThroughput {
			return nil, invalid("test type %q is not offered by this reflector", req.TestType)
		}
	case link.TestUDPEcho:
		if !q.AllowUDPEcho {
			return nil, invalid("test type %q is not offered by this reflector", req.TestType)
		}
	default:
		return nil, invalid("unknown test type %q (want %q or %q)", req.TestType, link.TestThroughput, link.TestUDPEcho)
	}
	if p.DurationSec <= 0 {
		return nil, invalid("duration_sec must be positive, got %d", p.DurationSec)
	}
	s.DurationSec = p.DurationSec
	if s.DurationSec > q.MaxTestDurationSec {
		s.Clamped = append(s.Clamped, fmt.Sprintf("duration_sec %d -> %d", s.DurationSec, q.MaxTestDurationSec))
		s.DurationSec = q.MaxTestDurationSec
	}

	s.Protocol = link.ProtocolTCP
	if req.TestType == link.TestUDPEcho {
		s.Protocol = link.ProtocolUDP
	}
	if p.Protocol != nil {
		switch proto := strings.ToLower(*p.Protocol); {
		case proto == link.ProtocolTCP && req.TestType == link.TestThroughput, proto == link.ProtocolUDP:
			s.Protocol = proto
		default:
			return nil, invalid("protocol %q is not valid for %s (want %q or %q)", *p.Protocol, req.TestType, link.ProtocolTCP, link.ProtocolUDP)
		}
	}

	if req.TestType == link.TestThroughput && s.Protocol == link.ProtocolUDP && !udpThroughput {
		return nil, invalid("protocol udp throughput tests are not available in this build")
	}
	if req.TestType == link.TestUDPEcho {
		s.RatePPS = q.EchoMaxPPS
		if p.RatePPS != nil {
			switch r := *p.RatePPS; {
			case r <= 0:
				return nil, invalid("rate_pps must be positive, got %d", r)
			case r > q.EchoMaxPPS:
				s.Clamped = append(s.Clamped, fmt.Sprintf("rate_pps %d -> %d", r, q.EchoMaxPPS))
			default:
				s.RatePPS = r
			}
		}
		s.Timestamped = p.Timestamped != nil && *p.Timestamped
		return s, nil
	}

	s.Streams = cfg.Iperf3.DefaultStreams
	if p.Streams != nil {
		n := *p.Streams
		if n <= 0 {
			return nil, invalid("streams must be positive, got %d", n)
		}
		s.Streams = n
	}
	if s.Streams > cfg.Iperf3.MaxStreams {
		s.Clamped = append(s.Clamped, fmt.Sprintf("streams %d -> %d", s.Streams, cfg.Iperf3.MaxStreams))
		s.Streams = cfg.Iperf3.MaxStreams
	}
	s.Reverse = p.Reverse != nil && *p.Reverse
	s.Bidir = p.Bidir != nil && *p.Bidir
	if s.Reverse && s.Bidir {
		return nil, invalid("reverse and bidir are exclusive")
	}
	return s, nil
}
