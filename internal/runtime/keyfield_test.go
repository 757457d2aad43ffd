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
