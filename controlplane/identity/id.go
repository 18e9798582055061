// Package identity holds the reflector's Ed25519 identity: the key file, the
// human-readable Endpoint ID derived from the public key, the self-signed
// certificate built from the key, and the mutual-TLS configurations that
// identify peers by the key in their certificate (never by its names).
package identity

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
)

// SeedSize is the size in bytes of an Ed25519 seed, the content of a key file.
const SeedSize = ed25519.SeedSize

// SANPrefix starts the DNS Subject Alternative Name that carries an Endpoint
// ID in a certificate: "pp-id-PP-XXXX-...".
const SANPrefix = "pp-id-"

// alphabet is Crockford's base32 alphabet (no I, L, O, U).
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

const (
	idPrefix     = "PP"
	symbolCount  = (ed25519.PublicKeySize*8 + 4) / 5 // 52 symbols of 5 bits
	groupSize    = 4
	compactLen   = len(idPrefix) + symbolCount + 1         // 55
	canonicalLen = compactLen + symbolCount/groupSize + 1  // 69: one dash per group and before the check
	maxInputLen  = 4 * canonicalLen                        // longer input is rejected before any work
	padBits      = symbolCount*5 - ed25519.PublicKeySize*8 // 4 zero bits in the last symbol
	padMask      = 1<<padBits - 1                          // they must be zero
	showInputMax = canonicalLen + 16                       // how much of a bad input an error quotes
)

// ErrInvalidID is wrapped by every error ParseEndpointID returns.
var ErrInvalidID = errors.New("invalid endpoint ID")

// ErrBadChecksum is additionally wrapped when only the check character is
// wrong (most likely a typo).
var ErrBadChecksum = errors.New("endpoint ID check character does not match")

// EndpointID identifies a reflector or appliance. Its canonical form is
// "PP-XXXX-...-XXXX-C": the Crockford base32 of the Ed25519 public key in
// groups of four, then a Luhn mod 32 check character; 69 characters in all.
// Values from IDFromPublicKey and ParseEndpointID are always canonical.
type EndpointID string

// symbolValue maps an input byte to its base32 value, or -1. It is
// case-insensitive and reads O as 0 and I, L as 1, as Crockford specifies.
var symbolValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for v, c := range []byte(alphabet) {
		t[c] = int8(v)
		t[c|0x20] = int8(v) // lower case; digits are unaffected by the bit
	}
	for c, v := range map[byte]int8{'O': 0, 'o': 0, 'I': 1, 'i': 1, 'L': 1, 'l': 1} {
		t[c] = v
	}
	return t
}()

// IDFromPublicKey derives the Endpoint ID of an Ed25519 public key. It
// panics if pub is not 32 bytes long, as crypto/ed25519 does.
func IDFromPublicKey(pub ed25519.PublicKey) EndpointID {
	if len(pub) != ed25519.PublicKeySize {
		panic(fmt.Sprintf("identity: bad Ed25519 public key length %d", len(pub)))
	}
	var vals [symbolCount]byte
	var acc uint32
	bits, n := 0, 0
	for _, b := range pub {
		acc = acc<<8 | uint32(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			vals[n] = byte(acc>>bits) & 31
			n++
		}
	}
	if bits > 0 {
		vals[n] = byte(acc<<(5-bits)) & 31
	}
	return format(&vals, luhn32(&vals))
}

// format renders symbol values and a check value canonically.
func format(vals *[symbolCount]byte, check byte) EndpointID {
	var sb strings.Builder
	sb.Grow(canonicalLen)
	sb.WriteString(idPrefix)
	for i, v := range vals {
		if i%groupSize == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(alphabet[v])
	}
	sb.WriteByte('-')
	sb.WriteByte(alphabet[check])
	return EndpointID(sb.String())
}

// luhn32 computes the Luhn mod 32 check value: factor 2 on the rightmost
// symbol, alternating with 1; products folded as p/32 + p%32.
func luhn32(vals *[symbolCount]byte) byte {
	sum, factor := 0, 2
	for i := len(vals) - 1; i >= 0; i-- {
		p := int(vals[i]) * factor
		sum += p/32 + p%32
		factor = 3 - factor
	}
	return byte((32 - sum%32) % 32)
}

// ParseEndpointID reads an Endpoint ID as people type and paste it:
// surrounding space is trimmed, case is ignored, O reads as 0 and I, L as 1,
// and dashes may be missing or doubled. It checks the "PP" prefix, the
// length, every character and the check character, and returns the
// canonical form. Every error wraps ErrInvalidID; a wrong check character
// also wraps ErrBadChecksum.
func ParseEndpointID(s string) (EndpointID, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return "", fmt.Errorf("%w: empty, expected %d characters like %q", ErrInvalidID, canonicalLen, example)
	}
	if len(in) > maxInputLen {
		return "", fmt.Errorf("%w %s: %d characters, expected %d like %q", ErrInvalidID, quote(in), len(in), canonicalLen, example)
	}
	compact := make([]byte, 0, compactLen)
	for _, r := range in {
		if r == '-' {
			continue
		}
		if r >= 0x80 || symbolValue[r] < 0 {
			return "", fmt.Errorf("%w %s: character %q is not Crockford base32 (expected 0-9, A-Z without U, and dashes)",
				ErrInvalidID, quote(in), r)
		}
		compact = append(compact, byte(r))
	}
	if len(compact) < len(idPrefix) || !strings.EqualFold(string(compact[:len(idPrefix)]), idPrefix) {
		return "", fmt.Errorf("%w %s: must start with %q", ErrInvalidID, quote(in), idPrefix+"-")
	}
	body := compact[len(idPrefix):]
	if len(body) != symbolCount+1 {
		return "", fmt.Errorf("%w %s: %d characters after %q, expected %d (%d for the key and 1 check character)",
			ErrInvalidID, quote(in), len(body), idPrefix, symbolCount+1, symbolCount)
	}
	var vals [symbolCount]byte
	for i := range vals {
		vals[i] = byte(symbolValue[body[i]])
	}
	check := byte(symbolValue[body[symbolCount]])
	if vals[symbolCount-1]&padMask != 0 {
		return "", fmt.Errorf("%w %s: last key character %q cannot occur in an ID (expected one of %q)",
			ErrInvalidID, quote(in), alphabet[vals[symbolCount-1]], string([]byte{alphabet[0], alphabet[1<<padBits]}))
	}
	if luhn32(&vals) != check {
		return "", fmt.Errorf("%w %s: %w (a character was probably mistyped)", ErrInvalidID, quote(in), ErrBadChecksum)
	}
	return format(&vals, check), nil
}

// example is shown in parse errors: the ID of the all-zero seed.
const example = "PP-7DN2-FF6E-PTJ2-TRN3-N382-MVRD-EDJK-45BQ-3QH4-79HT-R14A-32TS-V8MG-K"

// quote renders untrusted input for an error message, shortened if long.
func quote(s string) string {
	if len(s) > showInputMax {
		return fmt.Sprintf("%q...", s[:showInputMax])
	}
	return fmt.Sprintf("%q", s)
}

// String returns the canonical form, "PP-XXXX-...-C".
func (id EndpointID) String() string { return string(id) }

// Compact returns the ID without dashes (55 characters), short enough for a
// certificate Common Name.
func (id EndpointID) Compact() string { return strings.ReplaceAll(string(id), "-", "") }

// PublicKey decodes the Ed25519 public key an ID was derived from. It fails
// for a value that is not a canonical ID (e.g. a zero EndpointID).
func (id EndpointID) PublicKey() (ed25519.PublicKey, error) {
	canon, err := ParseEndpointID(string(id))
	if err != nil {
		return nil, err
	}
	body := canon.Compact()[len(idPrefix) : len(idPrefix)+symbolCount]
	pub := make(ed25519.PublicKey, 0, ed25519.PublicKeySize)
	var acc uint32
	bits := 0
	for i := 0; i < len(body); i++ {
		acc = acc<<5 | uint32(symbolValue[body[i]])
		bits += 5
		if bits >= 8 {
			bits -= 8
			pub = append(pub, byte(acc>>bits))
		}
	}
	return pub, nil
}
