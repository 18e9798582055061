package link

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// ErrMalformed reports a frame that is not a valid pp-link/1 envelope:
// invalid JSON, a missing request_id or payload, a payload without a string
// "type", a missing required field or a field of the wrong JSON type
// (including numbers that do not fit the field). A server closes the
// connection on it.
var ErrMalformed = errors.New("malformed pp-link message")

// UnknownTypeError reports a well-formed envelope whose payload type this
// package does not know. The frame was consumed entirely, so a server can
// answer with an Error (CodeUnexpected) and keep reading.
type UnknownTypeError struct {
	// Type is the payload's "type" value as received.
	Type string
}

// maxTypeInError bounds how much of a peer-chosen type string ends up in
// error text and logs.
const maxTypeInError = 64

// Error implements the error interface.
func (e *UnknownTypeError) Error() string {
	t := e.Type
	if len(t) > maxTypeInError {
		t = t[:maxTypeInError] + "..."
	}
	return fmt.Sprintf("unknown pp-link message type %q", t)
}

// Encode builds the JSON envelope of m, {"request_id":...,"payload":{"type":
// ...,fields}}, with "type" first and the fields in declaration order, as
// serde writes them. HTML characters are not escaped, and nil slices of
// required fields are written as [] (the Rust side cannot read null there).
// m may be a message value or a non-nil pointer to one.
func Encode(requestID string, m Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("encode pp-link message: nil message")
	}
	rv := reflect.ValueOf(m)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, fmt.Errorf("encode pp-link %T: nil pointer", m)
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("encode pp-link %T: not a struct", m)
	}
	typ := m.MessageType()
	cp := reflect.New(rv.Type()).Elem()
	cp.Set(rv)
	fillNilSlices(cp)
	body, err := marshalNoEscape(cp.Interface())
	if err != nil {
		return nil, fmt.Errorf("encode pp-link %s: %w", typ, err)
	}
	id, err := marshalNoEscape(requestID)
	if err != nil {
		return nil, fmt.Errorf("encode pp-link request_id: %w", err)
	}
	tag, err := marshalNoEscape(typ)
	if err != nil {
		return nil, fmt.Errorf("encode pp-link type: %w", err)
	}
	var b bytes.Buffer
	b.Grow(len(body) + len(id) + len(tag) + 48)
	b.WriteString(`{"request_id":`)
	b.Write(id)
	b.WriteString(`,"payload":{"type":`)
	b.Write(tag)
	if fields := body[1 : len(body)-1]; len(fields) > 0 {
		b.WriteByte(',')
		b.Write(fields)
	}
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

// Decode parses one frame payload. It returns the request_id whenever the
// envelope got that far, even with an error. An unknown payload type gives
// a *UnknownTypeError; anything else wrong gives an error wrapping
// ErrMalformed. Unknown fields are ignored, field names are matched exactly
// (case-sensitively, as serde does), fields the Rust type requires must be
// present and non-null, and optional ones may be absent or null.
// The returned Message is always a pointer (*Hello, *SessionRequest, ...).
func Decode(frame []byte) (requestID string, m Message, err error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(frame, &env); err != nil {
		return "", nil, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
	}
	if env == nil {
		return "", nil, fmt.Errorf("%w: envelope is null", ErrMalformed)
	}
	rawID, ok := env["request_id"]
	if !ok || isNull(rawID) {
		return "", nil, fmt.Errorf("%w: missing request_id", ErrMalformed)
	}
	if err := json.Unmarshal(rawID, &requestID); err != nil {
		return "", nil, fmt.Errorf("%w: request_id: %w", ErrMalformed, err)
	}
	rawPayload, ok := env["payload"]
	if !ok || isNull(rawPayload) {
		return requestID, nil, fmt.Errorf("%w: missing payload", ErrMalformed)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(rawPayload, &obj); err != nil {
		return requestID, nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	rawType, ok := obj["type"]
	if !ok || isNull(rawType) {
		return requestID, nil, fmt.Errorf("%w: payload without type", ErrMalformed)
	}
	var typ string
	if err := json.Unmarshal(rawType, &typ); err != nil {
		return requestID, nil, fmt.Errorf("%w: payload type: %w", ErrMalformed, err)
	}
	newMsg, ok := registry[typ]
	if !ok {
		return requestID, nil, &UnknownTypeError{Type: typ}
	}
	m = newMsg()
	if err := decodeFields(obj, reflect.ValueOf(m).Elem(), typ); err != nil {
		return requestID, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return requestID, m, nil
}

// marshalNoEscape is json.Marshal without HTML escaping (serde does not
// escape <, > and &).
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

func isNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// fieldKind says how decodeFields treats a struct field.
type fieldKind int

const (
	kindLeaf      fieldKind = iota // decoded by encoding/json
	kindObject                     // nested struct, decoded field by field
	kindPtrObject                  // optional nested struct
)

// fieldInfo describes one JSON field of a message struct.
type fieldInfo struct {
	index    int
	name     string
	kind     fieldKind
	required bool // non-pointer and not omitempty, like a non-Option serde field
	slice    bool // a required slice: encoded as [] when nil
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	fieldCache     sync.Map // reflect.Type -> []fieldInfo
)

// fieldsOf returns the JSON fields of struct type t, cached.
func fieldsOf(t reflect.Type) []fieldInfo {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]fieldInfo)
	}
	var fs []fieldInfo
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		omitempty := strings.Contains(","+opts+",", ",omitempty,")
		fi := fieldInfo{index: i, name: name}
		switch {
		case sf.Type.Kind() == reflect.Struct:
			fi.kind = kindObject
		case sf.Type.Kind() == reflect.Pointer && sf.Type.Elem().Kind() == reflect.Struct:
			fi.kind = kindPtrObject
		}
		fi.required = !omitempty && sf.Type.Kind() != reflect.Pointer
		fi.slice = fi.required && sf.Type.Kind() == reflect.Slice && sf.Type != rawMessageType
		fs = append(fs, fi)
	}
	actual, _ := fieldCache.LoadOrStore(t, fs)
	return actual.([]fieldInfo)
}

// decodeFields fills struct v from the JSON object obj. path names the
// object in error messages.
func decodeFields(obj map[string]json.RawMessage, v reflect.Value, path string) error {
	for _, f := range fieldsOf(v.Type()) {
		raw, ok := obj[f.name]
		if !ok || isNull(raw) {
			if f.required {
				return fmt.Errorf("%s: missing field %q", path, f.name)
			}
			continue
		}
		fv := v.Field(f.index)
		sub := path + "." + f.name
		switch f.kind {
		case kindObject:
			if err := decodeObject(raw, fv, sub); err != nil {
				return err
			}
		case kindPtrObject:
			nv := reflect.New(fv.Type().Elem())
			if err := decodeObject(raw, nv.Elem(), sub); err != nil {
				return err
			}
			fv.Set(nv)
		default:
			if err := json.Unmarshal(raw, fv.Addr().Interface()); err != nil {
				return fmt.Errorf("%s: %w", sub, err)
			}
		}
	}
	return nil
}

// decodeObject decodes a nested JSON object into struct v.
func decodeObject(raw json.RawMessage, v reflect.Value, path string) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return decodeFields(obj, v, path)
}

// fillNilSlices replaces nil required slices in the addressable struct v
// (and in nested structs) by empty ones. Nested pointers are copied first,
// so the caller's values are never modified.
func fillNilSlices(v reflect.Value) {
	for _, f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		switch {
		case f.slice:
			if fv.IsNil() {
				fv.Set(reflect.MakeSlice(fv.Type(), 0, 0))
			}
		case f.kind == kindObject:
			fillNilSlices(fv)
		case f.kind == kindPtrObject && !fv.IsNil():
			nv := reflect.New(fv.Type().Elem())
			nv.Elem().Set(fv.Elem())
			fillNilSlices(nv.Elem())
			fv.Set(nv)
		}
	}
}
