// Package flatjson decodes the most common row shape, a flat JSON object
// (string keys; string, number, boolean or null values), into a
// map[string]any, faster than a general decoder: integers become int64
// directly, other numbers float64, and keys and short string values that
// repeat from row to row are interned instead of allocated each time.
//
// Anything else (nested values, escaped strings, invalid JSON) is refused
// with ok == false, and the caller decodes it with a general JSON decoder,
// which also explains what is wrong with invalid input.
package flatjson

import (
	"math"
	"strconv"
	"unsafe"
)

// Decoder keeps the interned strings. It is not safe for concurrent use;
// use one per goroutine.
type Decoder struct {
	strs map[string]string
	keys []string // the keys of the last row, by position
}

// maxInterned bounds the interned strings, so rows with ever new values
// (ids as strings) do not grow it without end.
const maxInterned = 4096

// maxInternLen is the longest string value interned.
const maxInternLen = 24

func (d *Decoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if d.strs == nil {
		d.strs = make(map[string]string, 64)
	}
	if len(d.strs) < maxInterned {
		d.strs[s] = s
	}
	return s
}

// key interns the key at position field, first trying the key the last row
// had there: rows of one stream mostly repeat their keys in order, and a
// comparison is cheaper than a lookup.
func (d *Decoder) key(field int, b []byte) string {
	if field < len(d.keys) && d.keys[field] == string(b) {
		return d.keys[field]
	}
	k := d.intern(b)
	if field < len(d.keys) {
		d.keys[field] = k
	} else if field == len(d.keys) && field < 64 {
		d.keys = append(d.keys, k)
	}
	return k
}

// Decode decodes data into a new map, or returns ok == false.
func (d *Decoder) Decode(data []byte) (m map[string]any, ok bool) {
	i := SkipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	return d.decode(make(map[string]any, 8), data, i)
}

// DecodeInto decodes data into m, which it clears first, so that a caller
// that does not keep its rows reuses one map. On ok == false, m holds part
// of the row.
func (d *Decoder) DecodeInto(m map[string]any, data []byte) bool {
	clear(m)
	i := SkipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	_, ok := d.decode(m, data, i)
	return ok
}

// decode fills m with the object that starts at data[i] == '{'.
func (d *Decoder) decode(m map[string]any, data []byte, i int) (map[string]any, bool) {
	field := 0
	i = SkipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return m, SkipSpace(data, i+1) == len(data)
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return nil, false
		}
		key, next, ok := PlainString(data, i)
		if !ok {
			return nil, false
		}
		i = SkipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return nil, false
		}
		i = SkipSpace(data, i+1)
		if i >= len(data) {
			return nil, false
		}
		var v any
		switch c := data[i]; {
		case c == '"':
			s, next, ok := PlainString(data, i)
			if !ok {
				return nil, false
			}
			if len(s) <= maxInternLen {
				v = d.intern(s)
			} else {
				v = string(s)
			}
			i = next
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			for j < len(data) && isNumByte(data[j]) {
				j++
			}
			n, ok := number(data[i:j])
			if !ok {
				return nil, false
			}
			v, i = n, j
		case hasWord(data, i, "true"):
			v, i = true, i+4
		case hasWord(data, i, "false"):
			v, i = false, i+5
		case hasWord(data, i, "null"):
			v, i = nil, i+4
		default:
			return nil, false // nested, or not JSON
		}
		m[d.key(field, key)] = v
		field++
		i = SkipSpace(data, i)
		if i >= len(data) {
			return nil, false
		}
		switch data[i] {
		case ',':
			i = SkipSpace(data, i+1)
		case '}':
			return m, SkipSpace(data, i+1) == len(data)
		default:
			return nil, false
		}
	}
}

// SkipSpace returns the index of the first byte at or after b[i] that is
// not JSON white space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// PlainString returns the bytes of the JSON string starting at b[i] == '"'
// and the index after its closing quote; a string with an escape or a
// control byte, or one not closed, is refused with ok == false.
func PlainString(b []byte, i int) (text []byte, next int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func isNumByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// number parses a JSON number: int64 when it has no fraction or exponent
// and fits, float64 otherwise.
func number(b []byte) (any, bool) {
	integral, ok := ValidNumber(b)
	if !ok {
		return nil, false
	}
	if integral && len(b) <= 18 {
		// At most 18 digits: fits an int64 without overflow checks.
		var n int64
		neg := b[0] == '-'
		digits := b
		if neg {
			digits = b[1:]
		}
		for _, c := range digits {
			n = n*10 + int64(c-'0')
		}
		if neg {
			n = -n
		}
		return n, true
	}
	if !integral {
		if f, ok := shortDecimal(b); ok {
			return f, true
		}
	}
	s := unsafe.String(unsafe.SliceData(b), len(b)) // read only, not kept
	if integral {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, false
	}
	return f, true
}

// pow10 holds the powers of ten a float64 represents exactly.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// shortDecimal reads a valid JSON number without exponent and with at most
// 15 digits (123.45, the common amount) without strconv.ParseFloat: its
// digits as an integer and the power of ten it is divided by are both
// exact float64s, so their quotient is the correctly rounded value, the
// one ParseFloat returns. ok == false leaves the number to ParseFloat.
func shortDecimal(b []byte) (float64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	var mant int64
	digits, frac := 0, -1
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + int64(c-'0')
			digits++
		case c == '.':
			frac = digits
		default:
			return 0, false // an exponent
		}
	}
	if digits > 15 || frac < 0 {
		return 0, false
	}
	f := float64(mant) / pow10[digits-frac]
	if neg {
		f = -f
	}
	return f, true
}

// ValidNumber checks JSON's number grammar,
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?,
// and reports whether the number has neither fraction nor exponent.
func ValidNumber(b []byte) (integral, ok bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false, false
	}
	integral = true
	if i < len(b) && b[i] == '.' {
		i++
		integral = false
		if digits() == 0 {
			return false, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		integral = false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false, false
		}
	}
	return integral, i == len(b)
}

func hasWord(b []byte, i int, w string) bool {
	if len(b)-i < len(w) || string(b[i:i+len(w)]) != w {
		return false
	}
	j := i + len(w)
	return j == len(b) || !(b[j] >= 'a' && b[j] <= 'z')
}
