package runtime

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	gojson "github.com/goccy/go-json"

	"github.com/kisflow-go/kisflow/stream"
)

// keyReader reads a message's ordering key: Message.Key if the source set
// one, else the key field of the payload (a JSON object, a map, or a struct
// field by its json tag or name).
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
	if m.Key != "" {
		return m.Key
	}
	switch p := m.Payload.(type) {
	case string:
		return k.fromJSON([]byte(p))
	case []byte:
		return k.fromJSON(p)
	case map[string]any:
		return fmt.Sprint(p[k.field])
	case map[string]string:
		return p[k.field]
	}
	v := reflect.ValueOf(m.Payload)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return fmt.Sprint(m.Payload)
	}
	idx := k.structField(v.Type())
	if idx == nil {
		return ""
	}
	return fmt.Sprint(v.FieldByIndex(idx).Interface())
}

func (k *keyReader) fromJSON(data []byte) string {
	if k.path == nil {
		return ""
	}
	vals, err := k.path.Extract(data)
	if err != nil || len(vals) == 0 {
		return ""
	}
	return strings.Trim(string(vals[0]), `"`)
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
