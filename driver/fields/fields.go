// Package fields reads a row's named fields, for connector authors: a map
// as it is, a struct (or pointer to one) by its exported fields with json
// tag names first, JSON text decoded. Connectors use it to build keys,
// columns and query arguments, and its Template for key templates such as
// user:{user_id}.
package fields

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	gojson "github.com/goccy/go-json"

	"github.com/kisflow-go/kisflow/internal/flatjson"
)

// Of returns a row's fields: a map as is, a struct (or pointer) by its
// exported fields (json tag names first), JSON text decoded.
func Of(row any) (map[string]any, error) {
	switch v := row.(type) {
	case map[string]any:
		return v, nil
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return m, nil
	case string:
		return decodeJSON([]byte(v))
	case []byte:
		return decodeJSON(v)
	case nil:
		return nil, errors.New("nil row")
	}
	rv := reflect.ValueOf(row)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, errors.New("nil row")
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("row of type %T has no fields", row)
	}
	info := structInfo(rv.Type())
	m := make(map[string]any, len(info))
	for _, f := range info {
		m[f.name] = rv.FieldByIndex(f.index).Interface()
	}
	return m, nil
}

// decodeJSON decodes a JSON object row as the engine reads JSON text rows
// (internal/flatjson): an integer is an int64 when it fits, any other
// number a float64, at every depth (an id of 2^53+1 keeps its value, and
// a sink creating its table types the column as integer). Rows that come
// back from a remote function are JSON text, so they are typed as the
// same step's rows run locally.
func decodeJSON(b []byte) (map[string]any, error) {
	var dec flatjson.Decoder
	if m, ok := dec.Decode(b); ok {
		return m, nil
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("row is not a JSON object: %w", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("row is not a JSON object: text after the object")
	}
	for k, v := range m {
		m[k] = ExactNumbers(v)
	}
	return m, nil
}

// ExactNumbers replaces each json.Number within v (a value decoded with
// json.Decoder.UseNumber: maps and slices are changed in place) by an
// int64 when it is an integer that fits, else by a float64, as the engine
// types the numbers of JSON rows; it returns the result.
func ExactNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = ExactNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = ExactNumbers(e)
		}
	}
	return v
}

type fieldInfo struct {
	name      string
	index     []int
	omitEmpty bool // tagged omitempty: the JSON form leaves a zero value out
}

var structs sync.Map // reflect.Type -> []fieldInfo; derived from types, safe to share

func structInfo(t reflect.Type) []fieldInfo {
	if v, ok := structs.Load(t); ok {
		return v.([]fieldInfo)
	}
	var out []fieldInfo
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name := f.Name
		tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		} else if tag != "" {
			name = tag
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty")
		out = append(out, fieldInfo{name: name, index: f.Index, omitEmpty: omit})
	}
	structs.Store(t, out)
	return out
}

// Has reports whether row carries the field at path with a value that is
// not null. row is a map[string]any, a map[string]string or a struct (or
// a pointer to one); each element of path after the first names a field
// of the map or struct the one before holds. A struct field is found by
// its JSON name. What the row's JSON form would write as null or leave
// out is missing: a nil pointer, interface, map or slice, and a zero
// value tagged omitempty.
func Has(row any, path []string) bool {
	v := row
	for i, name := range path {
		switch m := v.(type) {
		case map[string]any:
			x, ok := m[name]
			if !ok || x == nil {
				return false
			}
			v = x
			continue
		case map[string]string:
			_, ok := m[name]
			return ok && i == len(path)-1
		case nil:
			return false
		}
		return hasValue(reflect.ValueOf(v), path[i:])
	}
	return true
}

// hasValue is Has over a value found by reflection.
func hasValue(rv reflect.Value, path []string) bool {
	for _, name := range path {
		for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
			if rv.IsNil() {
				return false
			}
			rv = rv.Elem()
		}
		switch rv.Kind() {
		case reflect.Struct:
			i := slices.IndexFunc(structInfo(rv.Type()), func(f fieldInfo) bool { return f.name == name })
			if i < 0 {
				return false
			}
			f := structInfo(rv.Type())[i]
			fv, err := rv.FieldByIndexErr(f.index)
			if err != nil || (f.omitEmpty && fv.IsZero()) {
				return false // behind a nil embedded pointer, or left out
			}
			rv = fv
		case reflect.Map:
			if rv.Type().Key().Kind() != reflect.String {
				return false
			}
			rv = rv.MapIndex(reflect.ValueOf(name).Convert(rv.Type().Key()))
			if !rv.IsValid() {
				return false
			}
		default:
			return false
		}
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice:
		return !rv.IsNil()
	}
	return true
}

// Template is a string with {field} placeholders, such as "user:{user_id}".
type Template struct {
	parts []string // literal, field, literal, field, ..., literal
}

// ParseTemplate parses s; a '{' without its '}' is an error.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{}
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.parts = append(t.parts, s)
			return t, nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("template %q: '{' without '}'", s)
		}
		t.parts = append(t.parts, s[:i], s[i+1:i+j])
		s = s[i+j+1:]
	}
}

// Static reports whether the template has no placeholders.
func (t *Template) Static() bool { return len(t.parts) == 1 }

// Fields lists the placeholders.
func (t *Template) Fields() []string {
	var out []string
	for i := 1; i < len(t.parts); i += 2 {
		out = append(out, t.parts[i])
	}
	return out
}

// Expand fills the placeholders from m; a missing field is an error.
func (t *Template) Expand(m map[string]any) (string, error) {
	if t.Static() {
		return t.parts[0], nil
	}
	var b strings.Builder
	for i, p := range t.parts {
		if i%2 == 0 {
			b.WriteString(p)
			continue
		}
		v, ok := m[p]
		if !ok || v == nil {
			return "", fmt.Errorf("key template needs field %q, which the row lacks", p)
		}
		fmt.Fprint(&b, v)
	}
	return b.String(), nil
}

// Encode prepares a row for a message sink: its fields, its destination
// (dest expanded over the fields: a topic, subject or routing key) and its
// JSON encoding.
func Encode(row any, dest *Template) (m map[string]any, to string, data []byte, err error) {
	if m, err = Of(row); err != nil {
		return nil, "", nil, err
	}
	if to, err = dest.Expand(m); err != nil {
		return nil, "", nil, err
	}
	if data, err = gojson.Marshal(m); err != nil {
		return nil, "", nil, err
	}
	return m, to, data, nil
}

// KeyText is the text a lookup key compares by: the same value read from a
// row (an integer decoded from JSON as float64, or as int64) and from a
// store (an int64, a []byte, a string) gives the same text.
func KeyText(v any) string {
	switch k := v.(type) {
	case string:
		return k
	case []byte:
		return string(k)
	case int64:
		return strconv.FormatInt(k, 10)
	case int:
		return strconv.Itoa(k)
	case float64:
		if k == math.Trunc(k) && math.Abs(k) < 1<<53 {
			return strconv.FormatInt(int64(k), 10)
		}
	case float32:
		if f := float64(k); f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return strconv.FormatInt(int64(f), 10)
		}
	}
	return fmt.Sprint(v)
}
