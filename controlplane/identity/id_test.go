package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func seedOf(f func(i int) byte) []byte {
	s := make([]byte, SeedSize)
	for i := range s {
		s[i] = f(i)
	}
	return s
}

func TestIDVectors(t *testing.T) {
	tests := []struct {
		name   string
		seed   []byte
		pubHex string // "" when the vector does not state it
		want   EndpointID
	}{
		{
			name: "zero seed",
			seed: seedOf(func(int) byte { return 0 }),
			want: "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K",
		},
		{
			name:   "seed 00..1f",
			seed:   seedOf(func(i int) byte { return byte(i) }),
			pubHex: "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
			want:   "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66W0-A",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub := ed25519.NewKeyFromSeed(tc.seed).Public().(ed25519.PublicKey)
			if tc.pubHex != "" && hex.EncodeToString(pub) != tc.pubHex {
				t.Fatalf("public key = %x, want %s", pub, tc.pubHex)
			}
			id := IDFromPublicKey(pub)
			if id != tc.want {
				t.Fatalf("IDFromPublicKey = %s, want %s", id, tc.want)
			}
			if len(id.String()) != 69 {
				t.Errorf("len(String()) = %d, want 69", len(id.String()))
			}
			compact := id.Compact()
			if len(compact) != 55 || strings.Contains(compact, "-") || compact != strings.ReplaceAll(string(tc.want), "-", "") {
				t.Errorf("Compact() = %q", compact)
			}
			back, err := id.PublicKey()
			if err != nil || !bytes.Equal(back, pub) {
				t.Errorf("PublicKey() = %x, %v; want %x", back, err, pub)
			}
		})
	}
}

func TestParseEndpointID(t *testing.T) {
	const canon = "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66W0-A"
	compact := strings.ReplaceAll(canon, "-", "")
	tests := []struct {
		name     string
		in       string
		want     EndpointID
		checksum bool   // error must also be ErrBadChecksum
		msg      string // error message must contain this
	}{
		{name: "canonical", in: canon, want: canon},
		{name: "lower case", in: strings.ToLower(canon), want: canon},
		{name: "compact", in: compact, want: canon},
		{name: "surrounding space", in: " \t" + canon + "\n", want: canon},
		{name: "extra dashes", in: "PP--" + strings.ReplaceAll(canon[3:], "-", "--") + "-", want: canon},
		{name: "O for zero", in: strings.ReplaceAll(canon, "0", "O"), want: canon},
		{name: "lower o, i, l", in: "pp-oegg" + strings.ToLower(canon[7:]), want: canon},
		{name: "I and L for one", in: "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-RI4A-32TS-V8MG-K", want: "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"},
		{name: "L for one", in: "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-RL4A-32TS-V8MG-K", want: "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"},

		{name: "bad check char", in: canon[:len(canon)-1] + "B", checksum: true, msg: "check character"},
		{name: "typo in body", in: "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66X0-A", checksum: true, msg: "mistyped"},
		{name: "swapped neighbours", in: "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-6W60-A", checksum: true},
		{name: "empty", in: "", msg: "empty"},
		{name: "only space", in: "   ", msg: "empty"},
		{name: "missing prefix", in: canon[3:], msg: `start with "PP-"`},
		{name: "wrong prefix", in: "XX" + canon[2:], msg: `start with "PP-"`},
		{name: "too short", in: canon[:len(canon)-2], msg: "52 characters after \"PP\", expected 53"},
		{name: "too long", in: canon + "0", msg: "54 characters after"},
		{name: "far too long", in: strings.Repeat("P", 1000), msg: "1000 characters"},
		{name: "U is not base32", in: strings.Replace(canon, "EGG", "EGU", 1), msg: `character 'U'`},
		{name: "punctuation", in: strings.Replace(canon, "EGG", "EG*", 1), msg: `character '*'`},
		{name: "inner space", in: strings.Replace(canon, "-", " ", 2), msg: `character ' '`},
		{name: "non-ASCII", in: strings.Replace(canon, "E", "É", 1), msg: "not Crockford base32"},
		{name: "nonzero padding bits", in: "PP-0EGG-FFZK-SR8B-W7BG-VMCE-EJY0-K5KY-9NHG-KEJG-TQRX-VJ36-84JN-66W1-9", msg: "cannot occur"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEndpointID(tc.in)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseEndpointID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseEndpointID(%q) = %q, want an error", tc.in, got)
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Errorf("error %v does not wrap ErrInvalidID", err)
			}
			if errors.Is(err, ErrBadChecksum) != tc.checksum {
				t.Errorf("errors.Is(%v, ErrBadChecksum) = %v, want %v", err, !tc.checksum, tc.checksum)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if tc.in != "" && strings.TrimSpace(tc.in) != "" && len(tc.in) < 100 && !strings.Contains(err.Error(), strings.TrimSpace(tc.in)[:10]) {
				t.Errorf("error %q does not quote the input", err)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error message is %d bytes long; long input must be shortened", len(err.Error()))
			}
		})
	}
}

// TestParseDetectsEverySingleSubstitution: the Luhn mod N check catches every
// single-character change in the key part.
func TestParseDetectsEverySingleSubstitution(t *testing.T) {
	id := IDFromPublicKey(ed25519.NewKeyFromSeed(make([]byte, SeedSize)).Public().(ed25519.PublicKey))
	s := []byte(id.String())
	for i := 3; i < len(s)-2; i++ {
		if s[i] == '-' {
			continue
		}
		orig := s[i]
		for _, c := range []byte(alphabet) {
			if c == orig {
				continue
			}
			s[i] = c
			if got, err := ParseEndpointID(string(s)); err == nil {
				t.Fatalf("ParseEndpointID(%s) = %s, accepted a changed ID", s, got)
			}
		}
		s[i] = orig
	}
}

func TestPublicKeyOfInvalidID(t *testing.T) {
	if _, err := EndpointID("").PublicKey(); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("EndpointID(\"\").PublicKey() error = %v, want ErrInvalidID", err)
	}
}

func TestIDFromPublicKeyPanicsOnBadLength(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a 31-byte key")
		}
	}()
	IDFromPublicKey(make(ed25519.PublicKey, 31))
}

func FuzzParseEndpointID(f *testing.F) {
	for _, s := range []string{
		"PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K",
		"pp-oegg-ffzk-sr8b-w7bg-vmce-ejyo-k5ky-9nhg-kejg-tqrx-vj36-84jn-66wo-a",
		"PP0EGGFFZKSR8BW7BGVMCEEJY0K5KY9NHGKEJGTQRXVJ3684JN66W0A",
		"", "PP-", "PP-0000", "-", "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseEndpointID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("error %v does not wrap ErrInvalidID", err)
			}
			return
		}
		if len(id.String()) != 69 || len(id.Compact()) != 55 {
			t.Fatalf("parsed %q to non-canonical %q", s, id)
		}
		again, err := ParseEndpointID(id.String())
		if err != nil || again != id {
			t.Fatalf("String() %q parses to %q, %v", id, again, err)
		}
		if again, err := ParseEndpointID(id.Compact()); err != nil || again != id {
			t.Fatalf("Compact() %q parses to %q, %v", id.Compact(), again, err)
		}
		pub, err := id.PublicKey()
		if err != nil || IDFromPublicKey(pub) != id {
			t.Fatalf("PublicKey() of %s = %x, %v; does not derive back", id, pub, err)
		}
	})
}
