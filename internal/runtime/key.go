package runtime

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"

	gojson "github.com/goccy/go-json"

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
	vals, err := k.path.Extract(data)
	if err != nil || len(vals) == 0 {
		return ""
	}
	return jsonKey(vals[0])
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
