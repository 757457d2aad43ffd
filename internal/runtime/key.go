package runtime

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	gojson "github.com/goccy/go-json"

	"github.com/kisflow-go/kisflow/internal/flatjson"
	"github.com/kisflow-go/kisflow/stream"
)

// keyReader reads a message's ordering key: the stream's key field of the
// payload (a JSON object, a map, or a struct field by its json tag or
// name) when it is configured and present, else Message.Key, the key the
// source sets (a Kafka partition, an MQTT topic).
type keyReader struct {
	field  string
	path   *gojson.Path
	fields sync.Map // reflect.Type -> []int field index, or nil
}

func newKeyReader(field string) *keyReader {
	k := &keyReader{field: field}
	if field != "" {
		k.path, _ = gojson.CreatePath("$." + field)
	}
	return k
}

func (k *keyReader) of(m *stream.Message) string {
	key, found := k.ofPayload(m)
	switch {
	case k.field != "" && found:
		return key
	case m.Key != "":
		return m.Key
	}
	return key
}

// ofPayload reads the key field of the payload; found tells whether the
// payload has it. A payload with no fields is its own key.
func (k *keyReader) ofPayload(m *stream.Message) (key string, found bool) {
	switch p := m.Payload.(type) {
	case string:
		// The quick read reads the string in place (it neither writes
		// nor keeps it); the JSON path gets a copy.
		if k.path != nil {
			if key, ok := k.fromFlatJSON(unsafe.Slice(unsafe.StringData(p), len(p))); ok {
				return key, key != ""
			}
		}
		key = k.fromJSON([]byte(p))
		return key, key != ""
	case []byte:
		key = k.fromJSON(p)
		return key, key != ""
	case map[string]any:
		v, ok := p[k.field]
		return fmt.Sprint(v), ok
	case map[string]string:
		v, ok := p[k.field]
		return v, ok
	}
	v := reflect.ValueOf(m.Payload)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "", false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return fmt.Sprint(m.Payload), false
	}
	idx := k.structField(v.Type())
	if idx == nil {
		return "", false
	}
	return fmt.Sprint(v.FieldByIndex(idx).Interface()), true
}

func (k *keyReader) fromJSON(data []byte) string {
	if k.path == nil {
		return ""
	}
	if key, ok := k.fromFlatJSON(data); ok {
		return key
	}
	vals, err := k.path.Extract(data)
	if err != nil || len(vals) == 0 {
		return ""
	}
	return jsonKey(vals[0])
}

// fromFlatJSON is fromJSON for the common row, read without decoding it: a
// JSON object whose field names have no escapes and whose values are
// strings without escapes, numbers, true, false or null. ok is false for
// anything else (a nested value, an escape, a repeated name, text that is
// not such an object), which fromJSON reads with its JSON path; the key is
// the one that path gives (the field's text; a missing field gives "").
func (k *keyReader) fromFlatJSON(data []byte) (key string, ok bool) {
	i := flatjson.SkipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return "", false
	}
	i = flatjson.SkipSpace(data, i+1)
	var val []byte
	seen := false
	if i < len(data) && data[i] == '}' {
		return "", flatjson.SkipSpace(data, i+1) == len(data)
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return "", false
		}
		name, next, ok := flatjson.PlainString(data, i)
		if !ok {
			return "", false
		}
		i = flatjson.SkipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return "", false
		}
		i = flatjson.SkipSpace(data, i+1)
		start := i
		if i < len(data) && data[i] == '"' {
			if _, i, ok = flatjson.PlainString(data, i); !ok {
				return "", false
			}
		} else {
			for i < len(data) && isLiteralByte(data[i]) {
				i++
			}
			if !jsonLiteral(data[start:i]) {
				return "", false // an object, an array, or not JSON
			}
		}
		if string(name) == k.field {
			if seen {
				return "", false
			}
			val, seen = data[start:i], true
		}
		i = flatjson.SkipSpace(data, i)
		switch {
		case i < len(data) && data[i] == ',':
			i = flatjson.SkipSpace(data, i+1)
			continue
		case i < len(data) && data[i] == '}' && flatjson.SkipSpace(data, i+1) == len(data):
		default:
			return "", false
		}
		break
	}
	if len(val) > 0 && val[0] == '"' {
		val = val[1 : len(val)-1]
		if !utf8.Valid(val) {
			return "", false // the path's decoder replaces invalid bytes
		}
	}
	return string(val), true
}

// isLiteralByte reports whether c may be part of a JSON number, true,
// false or null.
func isLiteralByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
}

// jsonLiteral reports whether b is a JSON number, true, false or null.
func jsonLiteral(b []byte) bool {
	switch string(b) {
	case "true", "false", "null":
		return true
	}
	_, ok := flatjson.ValidNumber(b)
	return ok
}

// jsonKey is the key a JSON value gives: a string's text (its escapes
// decoded, as the function that decodes the row sees it), else the
// value's JSON text. Space around the value (`{"id": "o1"}`) is no part
// of it.
func jsonKey(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if gojson.Unmarshal(raw, &s) == nil {
			return s
		}
		return strings.Trim(string(raw), `"`)
	}
	return string(raw)
}

func (k *keyReader) structField(t reflect.Type) []int {
	if v, ok := k.fields.Load(t); ok {
		return v.([]int)
	}
	var idx []int
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == k.field || (tag == "" && strings.EqualFold(f.Name, k.field)) {
			idx = f.Index
			break
		}
	}
	k.fields.Store(t, idx)
	return idx
}
