package iperf3proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Params is the parameter JSON a client sends after PARAM_EXCHANGE. Boolean
// keys appear on the wire only when true; numeric keys only when set.
// Unknown keys are ignored; a known key with the wrong JSON type is an error
// (a string where a number belongs crashed the reference server,
// CVE-2024-53580).
type Params struct {
	TCP              bool   // "tcp": true
	UDP              bool   // "udp": true
	SCTP             bool   // "sctp": true
	Omit             int    // "omit", seconds
	ServerAffinity   int    // "server_affinity"
	Time             int    // "time", seconds (0 when -n/-k end the test)
	Bytes            int64  // "num", bytes to transfer (-n)
	Blocks           int64  // "blockcount" (-k)
	MSS              int    // "MSS" (-M)
	NoDelay          bool   // "nodelay": true (-N)
	Parallel         int    // "parallel" (-P)
	Reverse          bool   // "reverse": true (-R)
	Bidirectional    bool   // "bidirectional": true (--bidir)
	Window           int    // "window" (-w), bytes
	Len              int    // "len" (-l), block length
	Bandwidth        uint64 // "bandwidth" (-b), bits/s per stream; 0 unlimited
	FQRate           uint64 // "fqrate" (--fq-rate), bits/s
	PacingTimer      int    // "pacing_timer", microseconds
	Burst            int    // "burst"
	TOS              int    // "TOS"
	FlowLabel        int    // "flowlabel"
	Title            string // "title"
	ExtraData        string // "extra_data"
	Congestion       string // "congestion" (-C)
	CongestionUsed   string // "congestion_used"
	GetServerOutput  bool   // "get_server_output": 1
	UDPCounters64Bit bool   // "udp_counters_64bit": 1
	RepeatingPayload bool   // "repeating_payload": 1
	ZeroCopy         bool   // "zerocopy": 1 (-Z)
	DontFragment     bool   // "dont_fragment": 1
	SkipRxCopy       bool   // "skip_rx_copy": 1
	MPTCP            bool   // "mptcp": true
	AuthToken        string // "authtoken" (we do not implement iperf3 RSA auth)
	ClientVersion    string // "client_version"
	GSO              int    // "gso"
	GSODgSize        int    // "gso_dg_size"
	GSOBfSize        int    // "gso_bf_size"
	GRO              int    // "gro"
	GROBfSize        int    // "gro_bf_size"
}

// ErrParamType is wrapped by ParseParams and ParseResults when a known key
// has the wrong type or a required key is missing.
var ErrParamType = errors.New("iperf3: wrong or missing value")

// ErrMalformed is wrapped by ParseParams and ParseResults when the message
// is not a JSON object.
var ErrMalformed = errors.New("iperf3: malformed JSON")

type keyKind int

const (
	kindTrue keyKind = iota // present and JSON true
	kindFlag                // a number; non-zero (or present, per key) means set
	kindInt
	kindUint
	kindString
)

// paramKeys describes every key the reference clients send.
type paramKey struct {
	name string
	kind keyKind
	set  func(p *Params, b bool, i int64, s string)
	get  func(p *Params) (bool, int64, string)
}

func intField(name string, f func(p *Params) *int) paramKey {
	return paramKey{name, kindInt,
		func(p *Params, _ bool, i int64, _ string) { *f(p) = int(i) },
		func(p *Params) (bool, int64, string) { v := *f(p); return v != 0, int64(v), "" }}
}

func int64Field(name string, f func(p *Params) *int64) paramKey {
	return paramKey{name, kindInt,
		func(p *Params, _ bool, i int64, _ string) { *f(p) = i },
		func(p *Params) (bool, int64, string) { v := *f(p); return v != 0, v, "" }}
}

func uintField(name string, f func(p *Params) *uint64) paramKey {
	return paramKey{name, kindUint,
		func(p *Params, _ bool, i int64, _ string) { *f(p) = uint64(i) },
		func(p *Params) (bool, int64, string) { v := *f(p); return v != 0, int64(min(v, math.MaxInt64)), "" }}
}

func boolField(name string, kind keyKind, f func(p *Params) *bool) paramKey {
	return paramKey{name, kind,
		func(p *Params, b bool, _ int64, _ string) { *f(p) = b },
		func(p *Params) (bool, int64, string) { v := *f(p); return v, 1, "" }}
}

func stringField(name string, f func(p *Params) *string) paramKey {
	return paramKey{name, kindString,
		func(p *Params, _ bool, _ int64, s string) { *f(p) = s },
		func(p *Params) (bool, int64, string) { v := *f(p); return v != "", 0, v }}
}

// paramKeys lists the keys in the order the reference client writes them.
var paramKeys = []paramKey{
	boolField("tcp", kindTrue, func(p *Params) *bool { return &p.TCP }),
	boolField("udp", kindTrue, func(p *Params) *bool { return &p.UDP }),
	boolField("sctp", kindTrue, func(p *Params) *bool { return &p.SCTP }),
	intField("omit", func(p *Params) *int { return &p.Omit }),
	intField("server_affinity", func(p *Params) *int { return &p.ServerAffinity }),
	intField("time", func(p *Params) *int { return &p.Time }),
	int64Field("num", func(p *Params) *int64 { return &p.Bytes }),
	int64Field("blockcount", func(p *Params) *int64 { return &p.Blocks }),
	intField("MSS", func(p *Params) *int { return &p.MSS }),
	boolField("nodelay", kindTrue, func(p *Params) *bool { return &p.NoDelay }),
	intField("parallel", func(p *Params) *int { return &p.Parallel }),
	boolField("reverse", kindTrue, func(p *Params) *bool { return &p.Reverse }),
	boolField("bidirectional", kindTrue, func(p *Params) *bool { return &p.Bidirectional }),
	boolField("mptcp", kindTrue, func(p *Params) *bool { return &p.MPTCP }),
	intField("window", func(p *Params) *int { return &p.Window }),
	intField("len", func(p *Params) *int { return &p.Len }),
	uintField("bandwidth", func(p *Params) *uint64 { return &p.Bandwidth }),
	uintField("fqrate", func(p *Params) *uint64 { return &p.FQRate }),
	intField("pacing_timer", func(p *Params) *int { return &p.PacingTimer }),
	intField("burst", func(p *Params) *int { return &p.Burst }),
	intField("TOS", func(p *Params) *int { return &p.TOS }),
	intField("flowlabel", func(p *Params) *int { return &p.FlowLabel }),
	stringField("title", func(p *Params) *string { return &p.Title }),
	stringField("extra_data", func(p *Params) *string { return &p.ExtraData }),
	stringField("congestion", func(p *Params) *string { return &p.Congestion }),
	stringField("congestion_used", func(p *Params) *string { return &p.CongestionUsed }),
	boolField("get_server_output", kindFlag, func(p *Params) *bool { return &p.GetServerOutput }),
	boolField("udp_counters_64bit", kindFlag, func(p *Params) *bool { return &p.UDPCounters64Bit }),
	boolField("repeating_payload", kindFlag, func(p *Params) *bool { return &p.RepeatingPayload }),
	boolField("zerocopy", kindFlag, func(p *Params) *bool { return &p.ZeroCopy }),
	boolField("dont_fragment", kindFlag, func(p *Params) *bool { return &p.DontFragment }),
	boolField("skip_rx_copy", kindFlag, func(p *Params) *bool { return &p.SkipRxCopy }),
	intField("gso", func(p *Params) *int { return &p.GSO }),
	intField("gso_dg_size", func(p *Params) *int { return &p.GSODgSize }),
	intField("gso_bf_size", func(p *Params) *int { return &p.GSOBfSize }),
	intField("gro", func(p *Params) *int { return &p.GRO }),
	intField("gro_bf_size", func(p *Params) *int { return &p.GROBfSize }),
	stringField("authtoken", func(p *Params) *string { return &p.AuthToken }),
	stringField("client_version", func(p *Params) *string { return &p.ClientVersion }),
}

// presenceFlags are the number-typed keys whose mere presence means "on" in
// the reference server (it never looks at the value).
var presenceFlags = map[string]bool{
	"get_server_output": true, "udp_counters_64bit": true, "repeating_payload": true,
}

// ParseParams decodes and type-checks a parameter JSON object. It accepts at
// most MaxParamsSize bytes. Range checks against protocol and server limits
// are done by Validate.
func ParseParams(b []byte) (Params, error) {
	var p Params
	if len(b) > MaxParamsSize {
		return p, fmt.Errorf("iperf3 params: %d bytes: %w", len(b), ErrTooLarge)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return p, fmt.Errorf("iperf3 params: %w: %v", ErrMalformed, err)
	}
	if raw == nil {
		return p, fmt.Errorf("iperf3 params: not an object: %w", ErrParamType)
	}
	for _, k := range paramKeys {
		v, ok := raw[k.name]
		if !ok {
			continue
		}
		if err := k.decode(&p, v); err != nil {
			return Params{}, fmt.Errorf("iperf3 params: key %q: %w", k.name, err)
		}
	}
	return p, nil
}

func (k paramKey) decode(p *Params, v json.RawMessage) error {
	v = bytes.TrimSpace(v)
	switch k.kind {
	case kindTrue:
		switch string(v) {
		case "true":
			k.set(p, true, 0, "")
		case "false", "null":
		default:
			return fmt.Errorf("want boolean, got %.20s: %w", v, ErrParamType)
		}
	case kindString:
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("want string: %w", ErrParamType)
		}
		k.set(p, false, 0, s)
	default:
		var f float64
		if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
			return fmt.Errorf("want number, got %.20s: %w", v, ErrParamType)
		}
		if err := json.Unmarshal(v, &f); err != nil {
			return fmt.Errorf("want number: %w", ErrParamType)
		}
		if math.IsNaN(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return fmt.Errorf("number %v out of range: %w", f, ErrParamType)
		}
		i := int64(f)
		switch k.kind {
		case kindFlag:
			k.set(p, presenceFlags[k.name] || i != 0, i, "")
		case kindUint:
			if i < 0 {
				return fmt.Errorf("negative value %d: %w", i, ErrParamType)
			}
			k.set(p, false, i, "")
		default:
			wide := k.name == "num" || k.name == "blockcount"
			if !wide && (i < math.MinInt32 || i > math.MaxInt32) {
				return fmt.Errorf("number %d out of range: %w", i, ErrParamType)
			}
			k.set(p, false, i, "")
		}
	}
	return nil
}

// Marshal encodes p as the reference client does: booleans only when true,
// numbers only when non-zero (except time, parallel and len, always sent).
func (p Params) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			buf.WriteByte(',')
		}
		first = false
	}
	for _, k := range paramKeys {
		on, i, s := k.get(&p)
		always := k.name == "time" || k.name == "parallel" || k.name == "len" || k.name == "omit"
		if !on && !always {
			continue
		}
		sep()
		name, _ := json.Marshal(k.name)
		buf.Write(name)
		buf.WriteByte(':')
		switch k.kind {
		case kindTrue:
			buf.WriteString("true")
		case kindString:
			sv, err := json.Marshal(s)
			if err != nil {
				return nil, fmt.Errorf("marshal params %s: %w", k.name, err)
			}
			buf.Write(sv)
		default:
			fmt.Fprintf(&buf, "%d", i)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Streams returns the number of data connections the test uses (twice the
// parallel count for --bidir).
func (p Params) Streams() int {
	n := max(p.Parallel, 1)
	if p.Bidirectional {
		return 2 * n
	}
	return n
}

// BlockLen returns the block length in effect (the default when unset).
func (p Params) BlockLen() int {
	if p.Len > 0 {
		return p.Len
	}
	if p.UDP {
		return DefaultUDPBlockSize
	}
	return DefaultTCPBlockSize
}

// Protocol returns "udp" or "tcp".
func (p Params) Protocol() string {
	if p.UDP {
		return "udp"
	}
	return "tcp"
}

// Validate checks p against the protocol limits the reference server
// enforces, returning a *ProtocolError naming the iperf3 error code.
func (p Params) Validate() error {
	bad := func(c ErrorCode, format string, a ...any) error {
		return &ProtocolError{Code: c, Detail: fmt.Sprintf(format, a...)}
	}
	switch {
	case p.SCTP:
		return bad(ErrUnimplemented, "SCTP is not supported")
	case p.Omit < 0 || p.Omit > MaxOmit:
		return bad(ErrOmit, "omit %d outside 0..%d", p.Omit, MaxOmit)
	case p.Time < 0 || p.Time > MaxTime:
		return bad(ErrDuration, "time %d outside 0..%d", p.Time, MaxTime)
	case p.Bytes < 0 || p.Blocks < 0:
		return bad(ErrRecvParams, "negative byte or block count")
	case p.MSS < 0 || p.MSS > MaxMSS:
		return bad(ErrMSS, "MSS %d outside 0..%d", p.MSS, MaxMSS)
	case p.Parallel < 0 || p.Parallel > MaxStreams:
		return bad(ErrNumStreams, "parallel %d outside 1..%d", p.Parallel, MaxStreams)
	case p.Window < 0 || p.Window > MaxTCPBuffer:
		return bad(ErrBufSize, "window %d outside 0..%d", p.Window, MaxTCPBuffer)
	case p.Len < 0:
		return bad(ErrBlockSize, "negative block length %d", p.Len)
	case p.Burst < 0 || p.Burst > MaxBurst:
		return bad(ErrBurst, "burst %d outside 0..%d", p.Burst, MaxBurst)
	case p.TOS < 0 || p.TOS > 255:
		return bad(ErrBadTOS, "TOS %d", p.TOS)
	case p.FlowLabel < 0 || p.FlowLabel > 0xfffff:
		return bad(ErrSetFlow, "flow label %d", p.FlowLabel)
	case p.PacingTimer < 0 || p.GSO < 0 || p.GSODgSize < 0 || p.GSOBfSize < 0 || p.GROBfSize < 0 || p.GRO < 0 || p.GRO > 1:
		return bad(ErrRecvParams, "negative pacing or offload value")
	case p.Reverse && p.Bidirectional:
		return bad(ErrReverseBidir, "reverse and bidirectional both set")
	case !p.UDP && p.Len > MaxBlockSize:
		return bad(ErrBlockSize, "block length %d above %d", p.Len, MaxBlockSize)
	case p.UDP && p.Len > 0 && (p.Len < MinUDPBlockSize || p.Len > MaxUDPBlockSize):
		return bad(ErrUDPBlockSize, "UDP block length %d outside %d..%d", p.Len, MinUDPBlockSize, MaxUDPBlockSize)
	case p.UDP && p.UDPCounters64Bit && p.Len > 0 && p.Len < 16:
		return bad(ErrUDPBlockSize, "UDP block length %d too short for 64-bit counters", p.Len)
	}
	return nil
}
