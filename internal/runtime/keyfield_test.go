package runtime

import (
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// The stream's key field orders rows even when the source sets a key of
// its own (Kafka's partition, MQTT's topic); the source's key is the
// fallback for a row without the field.
func TestKeyFieldWinsOverTheSourceKey(t *testing.T) {
	t.Parallel()
	type row struct {
		User string `json:"user"`
	}
	tests := []struct {
		name, field string
		msg         stream.Message
		want        string
	}{
		{"JSON", "user", stream.Message{Key: "partition-3", Payload: []byte(`{"user":"u1"}`)}, "u1"},
		{"map", "user", stream.Message{Key: "orders/eu", Payload: map[string]any{"user": "u2"}}, "u2"},
		{"struct", "user", stream.Message{Key: "partition-3", Payload: row{User: "u3"}}, "u3"},
		{"field missing", "user", stream.Message{Key: "partition-3", Payload: map[string]any{"id": 1}}, "partition-3"},
		{"no field configured", "", stream.Message{Key: "partition-3", Payload: []byte(`{"user":"u1"}`)}, "partition-3"},
		{"no source key", "user", stream.Message{Payload: `{"user":"u4"}`}, "u4"},
		// As Python's json.dumps writes it: the space is not part of the key.
		{"JSON with spaces", "user", stream.Message{Payload: []byte(`{"user": "u5", "id": 1}`)}, "u5"},
		{"JSON number with spaces", "id", stream.Message{Payload: []byte(`{"user": "u5", "id":  17 }`)}, "17"},
		{"JSON escapes", "user", stream.Message{Payload: []byte(`{"user":"caf\u00e9 \"x\""}`)}, `café "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := newKeyReader(tt.field).of(&tt.msg); got != tt.want {
				t.Fatalf("key = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFlatJSONKeyIsThePathsKey: the key read from a flat JSON object
// without decoding it is the one the JSON path gives, for every payload
// the quick read takes; the others it leaves to the path.
func TestFlatJSONKeyIsThePathsKey(t *testing.T) {
	t.Parallel()
	payloads := []string{
		`{"user":"u1"}`, `{"user": "u5", "id": 1}`, ` { "id" :  17 , "user":"x" } `, `{"user":17}`, `{"user":-1.5e3}`,
		`{"user":0}`, `{"user":true}`, `{"user":null}`, `{"user":""}`, `{}`, `{"id":1}`, `{"ts":1764527000000,"user_id":42,"amount":9.99}`,
		`{"user":"caf\u00e9"}`, `{"us\u0065r":"u"}`, `{"user":{"a":1}}`, `{"user":[1]}`, `{"id":{"a":1},"user":"u"}`,
		`{"user":"a","user":"b"}`, `{"user":abc}`, `{"user":01}`, `{"user":1.}`, `{"user":-}`, `{"user":"u"} x`, `{"user":"u"`,
		`{"user" "u"}`, `{"user":"u",}`, `[1,2]`, `plain text`, ``, `{"user":"tab	in"}`, `{"user":1e}`, `{"user":tru}`,
		`{"user":"café"}`, "{\"user\":\"bad \xff utf-8\"}",
	}
	for _, field := range []string{"user", "id", "user_id"} {
		k := newKeyReader(field)
		for _, p := range payloads {
			fast, ok := k.fromFlatJSON([]byte(p))
			if !ok {
				continue
			}
			var slow string
			if vals, err := k.path.Extract([]byte(p)); err == nil && len(vals) > 0 {
				slow = jsonKey(vals[0])
			}
			if fast != slow {
				t.Errorf("field %s of %s: quick read %q, the path %q", field, p, fast, slow)
			}
		}
	}
	k := newKeyReader("user")
	for _, p := range []string{`{"user":"u1"}`, `{"user": "u5", "id": 1}`, `{"user":17}`, `{}`} {
		if _, ok := k.fromFlatJSON([]byte(p)); !ok {
			t.Errorf("%s: not read quickly", p)
		}
	}
}
