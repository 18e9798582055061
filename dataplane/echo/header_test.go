package echo

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func TestHeaderGolden(t *testing.T) {
	cases := []struct {
		name string
		h    Header
		hex  string
	}{
		{
			name: "client probe",
			h:    Header{Seq: 1, ClientSend: 1_000_000},
			hex: "50504531" + "00" + "000000" + "0000000000000001" + "00000000000f4240" +
				"0000000000000000" + "0000000000000000",
		},
		{
			name: "stamped reply",
			h: Header{Flags: FlagStamped, Seq: 0x0102030405060708, ClientSend: 42,
				ServerRx: 1_700_000_000_123_456_789, ServerTx: 1_700_000_000_123_457_000},
			hex: "50504531" + "01" + "000000" + "0102030405060708" + "000000000000002a" +
				"17979cfe3d85cd15" + "17979cfe3d85cde8",
		},
		{
			name: "other flags kept, negative send time",
			h:    Header{Flags: 0x80, Seq: ^uint64(0), ClientSend: -1},
			hex: "50504531" + "80" + "000000" + "ffffffffffffffff" + "ffffffffffffffff" +
				"0000000000000000" + "0000000000000000",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, HeaderLen)
			if err := tc.h.Encode(got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode = %x\nwant     %x", got, want)
			}
			back, err := ParseHeader(want)
			if err != nil || back != tc.h {
				t.Fatalf("ParseHeader = %+v, %v; want %+v", back, err, tc.h)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	valid := make([]byte, HeaderLen)
	if err := (&Header{Seq: 9}).Encode(valid); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"one short", valid[:HeaderLen-1], ErrShort},
		{"bad magic", mutate(func(b []byte) []byte { b[3] = '2'; return b }), ErrMagic},
		{"reserved set", mutate(func(b []byte) []byte { b[6] = 1; return b }), ErrReserved},
		{"longer is fine", append(bytes.Clone(valid), 1, 2, 3), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHeader(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseHeader error = %v, want %v", err, tc.want)
			}
		})
	}
	if err := (&Header{}).Encode(make([]byte, HeaderLen-1)); !errors.Is(err, ErrShort) {
		t.Fatalf("Encode into short buffer = %v, want ErrShort", err)
	}
}

func TestStamp(t *testing.T) {
	probe := make([]byte, 64)
	if err := (&Header{Seq: 3, ClientSend: 5}).Encode(probe); err != nil {
		t.Fatal(err)
	}
	fillPadding(probe[HeaderLen:], 3, 5)
	b := bytes.Clone(probe)
	if !stamp(b, 100, 200) {
		t.Fatal("conforming probe not stamped")
	}
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Header{Flags: FlagStamped, Seq: 3, ClientSend: 5, ServerRx: 100, ServerTx: 200}); h != want {
		t.Fatalf("stamped header = %+v, want %+v", h, want)
	}
	if !bytes.Equal(b[HeaderLen:], probe[HeaderLen:]) || !checkPadding(b[HeaderLen:], 3, 5) {
		t.Fatal("stamping touched the padding")
	}
	for _, bad := range [][]byte{[]byte("hello"), bytes.Repeat([]byte{'x'}, 64), probe[:HeaderLen-1]} {
		c := bytes.Clone(bad)
		if stamp(c, 1, 2) || !bytes.Equal(c, bad) {
			t.Fatalf("non-conforming %q modified", bad)
		}
	}
}

func TestPadding(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 24, 1432} {
		a, b := make([]byte, n), make([]byte, n)
		fillPadding(a, 77, 1234)
		fillPadding(b, 77, 1234)
		if !bytes.Equal(a, b) || !checkPadding(a, 77, 1234) {
			t.Fatalf("n=%d: padding not deterministic", n)
		}
		if n == 0 {
			continue
		}
		if checkPadding(a, 78, 1234) || checkPadding(a, 77, 1235) {
			t.Fatalf("n=%d: padding of another probe accepted", n)
		}
		a[n-1] ^= 0x10
		if checkPadding(a, 77, 1234) {
			t.Fatalf("n=%d: flipped bit not detected", n)
		}
	}
}

func TestSeenSet(t *testing.T) {
	var s seenSet
	s.init(128)
	steps := []struct {
		seq uint64
		dup bool
	}{
		{0, false}, {0, true}, {5, false}, {3, false}, {3, true}, {5, true},
		{200, false}, // jumps past the window: 5 slides out, slot reused
		{73, false},  // the window is the 128 numbers up to 200
		{73, true},
		{72, false}, // older than the window: cannot tell, counts as new
		{72, false},
		{328, false}, // reuses the slot of 200
		{200, false}, // now outside the window
		{201, false}, {201, true},
	}
	for i, st := range steps {
		if got := s.add(st.seq); got != st.dup {
			t.Fatalf("step %d add(%d) = %v, want %v", i, st.seq, got, st.dup)
		}
	}
}

func TestPercentile(t *testing.T) {
	s := make([]time.Duration, 100)
	for i := range s {
		s[i] = time.Duration(i + 1)
	}
	for _, c := range []struct {
		pct  int
		want time.Duration
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := percentile(s, c.pct); got != c.want {
			t.Fatalf("p%d = %v, want %v", c.pct, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 || percentile(s[:1], 99) != 1 {
		t.Fatal("edge cases")
	}
}

func FuzzProbeHeader(f *testing.F) {
	seed := make([]byte, 64)
	if err := (&Header{Flags: FlagStamped, Seq: 7, ClientSend: 9, ServerRx: 10, ServerTx: 11}).Encode(seed); err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(Magic))
	f.Add([]byte("PPE1\x00\x00\x00\x01" + "0123456789abcdef0123456789abcdef"))
	f.Add(bytes.Repeat([]byte{0xff}, HeaderLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		orig := bytes.Clone(b)
		stamped := stamp(b, 1, 2)
		if err != nil {
			if stamped || !bytes.Equal(b, orig) {
				t.Fatalf("non-conforming input (%v) was stamped", err)
			}
			return
		}
		if !stamped {
			t.Fatal("conforming input not stamped")
		}
		if !bytes.Equal(b[HeaderLen:], orig[HeaderLen:]) {
			t.Fatal("stamp modified bytes past the header")
		}
		out := make([]byte, HeaderLen)
		if err := h.Encode(out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, orig[:HeaderLen]) {
			t.Fatalf("re-encoded header %x differs from input %x", out, orig[:HeaderLen])
		}
		back, err := ParseHeader(out)
		if err != nil || back != h {
			t.Fatalf("round trip = %+v, %v; want %+v", back, err, h)
		}
	})
}
