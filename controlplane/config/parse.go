package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// ErrInvalid is wrapped by every error about the content of a configuration.
var ErrInvalid = errors.New("invalid configuration")

// maxFileSize bounds how much of a configuration file is read.
const maxFileSize = 1 << 20

// FieldError is one problem with one key.
type FieldError struct {
	Key     string // dotted key, e.g. "network.mode" or "access.authorized_peers[2]"
	Value   string // the offending value as written in TOML, or "" when the problem text shows it
	Problem string // what is wrong and what is allowed
	Err     error  // underlying error, if any
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return e.Key + ": " + e.Problem
	}
	return e.Key + " = " + e.Value + ": " + e.Problem
}

// Unwrap returns ErrInvalid and the underlying error.
func (e *FieldError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}

// Error is every problem found in one configuration source.
type Error struct {
	Name string  // file name or other label of the source
	Errs []error // mostly *FieldError, in key order
}

func (e *Error) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %d configuration error", e.Name, len(e.Errs))
	if len(e.Errs) != 1 {
		sb.WriteByte('s')
	}
	sb.WriteByte(':')
	for _, err := range e.Errs {
		sb.WriteString("\n  ")
		sb.WriteString(err.Error())
	}
	return sb.String()
}

// Unwrap returns the individual errors.
func (e *Error) Unwrap() []error { return e.Errs }

// legacyKeys were read by the earlier implementation and mean nothing here:
// accepted (if of the right type) with a warning, so old files still load.
var legacyKeys = map[string]string{
	"network.listen_address_health": "ignored; /health is served on [metrics] listen_address",
	"network.deployment_mode":       "ignored; the network position is not configured here",
}

// LoadFile reads and parses the configuration file at path.
func LoadFile(path string) (*Config, error) {
	data, err := readFileCapped(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// readFileCapped reads at most maxFileSize bytes of a configuration file.
func readFileCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("read config %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// Parse reads a TOML configuration strictly: unknown keys, values of the
// wrong type and values out of range are all reported, each naming the key,
// the value and what is allowed, in one *Error (which wraps ErrInvalid).
// Missing keys take their defaults; the identity key and audit log paths,
// unless set, follow [state] dir. name labels the source in errors.
func Parse(data []byte, name string) (*Config, error) {
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrInvalid, err)
	}
	c := Default()
	set := map[string]bool{}
	var errs []error
	sections := sectionFields(c)
	for _, sec := range sortedKeys(top) {
		fields, ok := sections[sec]
		if !ok {
			errs = append(errs, &FieldError{Key: sec, Problem: "unknown section or key; known sections: " + strings.Join(sortedKeys(sections), ", ")})
			continue
		}
		// The decoder quietly turns a non-table into an empty map: ask first.
		var raw any
		if err := md.PrimitiveDecode(top[sec], &raw); err != nil {
			errs = append(errs, &FieldError{Key: sec, Problem: "must be a table [" + sec + "]", Err: err})
			continue
		}
		if _, ok := raw.(map[string]any); !ok {
			errs = append(errs, &FieldError{Key: sec, Value: render(raw), Problem: "must be a table [" + sec + "]"})
			continue
		}
		var keys map[string]toml.Primitive
		if err := md.PrimitiveDecode(top[sec], &keys); err != nil {
			errs = append(errs, &FieldError{Key: sec, Problem: "must be a table [" + sec + "]", Err: err})
			continue
		}
		for _, k := range sortedKeys(keys) {
			full := sec + "." + k
			if note, ok := legacyKeys[full]; ok {
				var s string
				if err := md.PrimitiveDecode(keys[k], &s); err != nil {
					errs = append(errs, typeError(&md, full, keys[k], reflect.TypeFor[string](), err))
					continue
				}
				c.warnings = append(c.warnings, fmt.Sprintf("config %s: %s = %q is %s", name, full, s, note))
				continue
			}
			ptr, ok := fields[k]
			if !ok {
				errs = append(errs, &FieldError{Key: full, Problem: fmt.Sprintf("unknown key; [%s] takes: %s", sec, strings.Join(sortedKeys(fields), ", "))})
				continue
			}
			// Decode into a fresh value: a failed decode may leave half of one.
			val := reflect.New(ptr.Type().Elem())
			if err := md.PrimitiveDecode(keys[k], val.Interface()); err != nil {
				errs = append(errs, typeError(&md, full, keys[k], ptr.Type().Elem(), err))
				continue
			}
			ptr.Elem().Set(val.Elem())
			set[full] = true
		}
	}
	if set["iperf3.path"] {
		c.warnings = append(c.warnings, fmt.Sprintf("config %s: iperf3.path = %q is ignored; the iperf3 server is built in and no iperf3 binary is run", name, c.Iperf3.Path))
	}
	if filepath.IsAbs(c.State.Dir) {
		c.deriveStatePaths(!set["identity.private_key_path"], !set["logging.audit_log_path"])
	}
	// Keys that failed to decode kept their (valid) defaults, so validating
	// now adds only the remaining problems.
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, &Error{Name: name, Errs: errs}
	}
	c.warnings = append(c.warnings, c.advice()...)
	return c, nil
}

// sectionFields maps section name -> key name -> pointer to the field in c,
// from the toml struct tags, so the schema has one source: the types.
func sectionFields(c *Config) map[string]map[string]reflect.Value {
	out := map[string]map[string]reflect.Value{}
	cv := reflect.ValueOf(c).Elem()
	for i := 0; i < cv.NumField(); i++ {
		sf := cv.Type().Field(i)
		name := tagName(sf)
		if name == "" {
			continue
		}
		sec := cv.Field(i)
		keys := map[string]reflect.Value{}
		for j := 0; j < sec.NumField(); j++ {
			if k := tagName(sec.Type().Field(j)); k != "" {
				keys[k] = sec.Field(j).Addr()
			}
		}
		out[name] = keys
	}
	return out
}

func tagName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// typeError reports a value whose TOML type does not fit the key.
func typeError(md *toml.MetaData, key string, p toml.Primitive, want reflect.Type, err error) error {
	return &FieldError{Key: key, Value: rawValue(md, p), Problem: "wrong type, expected " + describe(want), Err: err}
}

// rawValue renders a primitive as TOML-ish text for an error message.
func rawValue(md *toml.MetaData, p toml.Primitive) string {
	var v any
	if err := md.PrimitiveDecode(p, &v); err != nil {
		return "?"
	}
	s := render(v)
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

func render(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = render(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		return "{table}"
	case []map[string]any:
		return "[[array of tables]]"
	default:
		return fmt.Sprint(v)
	}
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(describe(t.Elem()), "a ") + "s"
	default:
		return t.String()
	}
}
