package jsonl

import (
	"math"
	"slices"
	"strconv"
)

// AppendFlat appends m encoded exactly as encoding/json.Marshal encodes it
// (keys sorted, HTML-safe escaping, its float format) when m is flat:
// every value a string, int, int64, float64 (finite), bool or nil, and
// every key and string made of printable ASCII that needs no escaping.
// Otherwise it returns ok == false and the caller uses encoding/json.
// keys is scratch space for the sorted keys.
func AppendFlat(b []byte, m map[string]any, keys *[]string) ([]byte, bool) {
	ks := (*keys)[:0]
	for k := range m {
		if !plain(k) {
			return b, false
		}
		ks = append(ks, k)
	}
	slices.Sort(ks)
	*keys = ks
	b = append(b, '{')
	for i, k := range ks {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendField(b, k, m[k]); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// AppendFlatUnordered is AppendFlat with the keys in the map's order, for
// readers that read a row by field: it saves sorting them.
func AppendFlatUnordered(b []byte, m map[string]any) ([]byte, bool) {
	b = append(b, '{')
	first := true
	for k, v := range m {
		if !first {
			b = append(b, ',')
		}
		first = false
		if !plain(k) {
			return b, false
		}
		var ok bool
		if b, ok = appendField(b, k, v); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// AppendField appends "k":v as AppendFlat writes a field, or returns
// ok == false when k or v is not one it writes.
func AppendField(b []byte, k string, v any) ([]byte, bool) {
	if !plain(k) {
		return b, false
	}
	return appendField(b, k, v)
}

// appendField is AppendField of a key known plain.
func appendField(b []byte, k string, v any) ([]byte, bool) {
	b = append(b, '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	switch v := v.(type) {
	case string:
		if !plain(v) {
			return b, false
		}
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
	case int64:
		b = strconv.AppendInt(b, v, 10)
	case int:
		b = strconv.AppendInt(b, int64(v), 10)
	case float64:
		return appendFloat(b, v)
	case bool:
		b = strconv.AppendBool(b, v)
	case nil:
		b = append(b, "null"...)
	default:
		return b, false
	}
	return b, true
}

// plain reports whether s is printable ASCII that encoding/json writes as
// it is: no quote, backslash or HTML-escaped <, > and &.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendFloat appends f as encoding/json writes a float64 (ES6 number to
// string, with 'e' only below 1e-6 or from 1e21, and e-07 written e-7);
// NaN and infinities, which it refuses, return ok == false.
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}
