package window

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The tags of the canonical encoding of a scalar, used for group keys and
// distinct values.
const (
	tagNil    = 'n'
	tagFalse  = 'f'
	tagTrue   = 't'
	tagInt    = 'i'
	tagFloat  = 'd'
	tagString = 's'
)

// appendValue appends the canonical encoding of v to b: numbers are equal
// when their values are (1, 1.0 and json.Number("1") encode alike), and a
// number never equals a string.
func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNil), nil
	case string:
		b = append(b, tagString)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case float64:
		return appendFloat(b, x), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return appendInt(b, i), nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return b, fmt.Errorf("bad number %q", string(x))
		}
		return appendFloat(b, f), nil
	case float32:
		return appendFloat(b, float64(x)), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case uint32:
		return appendInt(b, int64(x)), nil
	case uint16:
		return appendInt(b, int64(x)), nil
	case uint8:
		return appendInt(b, int64(x)), nil
	}
	return b, fmt.Errorf("a %T is not a scalar", v)
}

func appendInt(b []byte, i int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, tagInt), uint64(i))
}

func appendUint(b []byte, u uint64) []byte {
	if u > math.MaxInt64 {
		return appendFloat(b, float64(u))
	}
	return appendInt(b, int64(u))
}

func appendFloat(b []byte, f float64) []byte {
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 {
		return appendInt(b, int64(f))
	}
	return binary.BigEndian.AppendUint64(append(b, tagFloat), math.Float64bits(f))
}

var errBadKey = errors.New("bad encoded value")

// decodeValue reads one value that appendValue wrote at the start of b and
// returns it with the rest of b.
func decodeValue(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errBadKey
	}
	tag, b := b[0], b[1:]
	switch tag {
	case tagNil:
		return nil, b, nil
	case tagTrue:
		return true, b, nil
	case tagFalse:
		return false, b, nil
	case tagInt, tagFloat:
		if len(b) < 8 {
			return nil, nil, errBadKey
		}
		u := binary.BigEndian.Uint64(b)
		if tag == tagInt {
			return int64(u), b[8:], nil
		}
		return math.Float64frombits(u), b[8:], nil
	case tagString:
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, nil, errBadKey
		}
		return string(b[k : k+int(n)]), b[k+int(n):], nil
	}
	return nil, nil, errBadKey
}

// number reads v as a float64; null is false with no error.
func number(v any) (f float64, ok bool, err error) {
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case float64:
		return x, true, nil
	case int:
		return float64(x), true, nil
	case int64:
		return float64(x), true, nil
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, false, fmt.Errorf("%q is not a number", string(x))
		}
		return f, true, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, false, fmt.Errorf("%q is not a number", x)
		}
		return f, true, nil
	case float32:
		return float64(x), true, nil
	case int32:
		return float64(x), true, nil
	case int16:
		return float64(x), true, nil
	case int8:
		return float64(x), true, nil
	case uint:
		return float64(x), true, nil
	case uint64:
		return float64(x), true, nil
	case uint32:
		return float64(x), true, nil
	case uint16:
		return float64(x), true, nil
	case uint8:
		return float64(x), true, nil
	}
	return 0, false, fmt.Errorf("a %T is not a number", v)
}

// millis reads an event time: an RFC 3339 string, or milliseconds since
// the Unix epoch as a number or a string of digits.
func millis(v any) (int64, error) {
	switch x := v.(type) {
	case nil:
		return 0, errors.New("missing")
	case string:
		if isDigits(x) {
			return strconv.ParseInt(x, 10, 64)
		}
		t, err := time.Parse(time.RFC3339, x)
		if err != nil {
			return 0, fmt.Errorf("%q is neither RFC 3339 nor epoch milliseconds", x)
		}
		return t.UnixMilli(), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
	case time.Time:
		return x.UnixMilli(), nil
	}
	f, ok, err := number(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%v is neither RFC 3339 nor epoch milliseconds", v)
	case !ok || math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Errorf("%v is not a time", v)
	}
	return int64(math.Floor(f)), nil
}

// secondsBelow is the epoch number below which a time looks like seconds:
// 1e11 milliseconds is March 1973; 1e11 seconds is in the year 5138.
const secondsBelow = 1e11

// looksSeconds reports whether v, read as t milliseconds, is an epoch
// number (not RFC 3339 text) small enough to be epoch seconds.
func looksSeconds(v any, t int64) bool {
	switch x := v.(type) {
	case time.Time:
		return false
	case string:
		if !isDigits(x) {
			return false
		}
	}
	return t > -secondsBelow && t < secondsBelow
}

func isDigits(s string) bool {
	if strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// formatMillis writes ms as RFC 3339 in UTC.
func formatMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// floorDiv is a/b rounded toward minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// EventTime reads an event time as a window's time_field does: an RFC 3339
// string, or milliseconds since the Unix epoch as a number or a string of
// digits. It returns Unix milliseconds.
func EventTime(v any) (int64, error) { return millis(v) }
