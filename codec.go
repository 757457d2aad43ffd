package kisflow

import (
	"encoding/json"

	gojson "github.com/goccy/go-json"
)

// Codec decodes rows that arrive as JSON text (string or []byte) or as maps
// into the struct a function asks for. The default is GoJSON.
type Codec interface {
	Unmarshal(data []byte, v any) error
	Marshal(v any) ([]byte, error)
}

// GoJSON is the default codec: github.com/goccy/go-json, a drop-in
// replacement for encoding/json that decodes the quick-start rows about eight
// times faster (see the README's performance section).
type GoJSON struct{}

// Unmarshal decodes JSON data into v.
func (GoJSON) Unmarshal(data []byte, v any) error { return gojson.Unmarshal(data, v) }

// Marshal encodes v as JSON.
func (GoJSON) Marshal(v any) ([]byte, error) { return gojson.Marshal(v) }

// StdJSON is the standard library's encoding/json.
type StdJSON struct{}

// Unmarshal decodes JSON data into v.
func (StdJSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Marshal encodes v as JSON.
func (StdJSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }
