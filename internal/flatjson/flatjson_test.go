package flatjson

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	var d Decoder
	tests := []struct {
		in   string
		want map[string]any
	}{
		{`{"a":1,"b":-2.5,"c":"x","d":true,"e":false,"f":null}`, map[string]any{"a": int64(1), "b": -2.5, "c": "x", "d": true, "e": false, "f": nil}},
		{` { "big" : 123456789012345678901234 , "exp":1e3, "neg":-0 } `, map[string]any{"big": 1.2345678901234568e23, "exp": 1000.0, "neg": int64(0)}},
		{`{}`, map[string]any{}},
		{"{\"s\":\"héllo wörld\"}\n", map[string]any{"s": "héllo wörld"}},
	}
	for _, tt := range tests {
		got, ok := d.Decode([]byte(tt.in))
		if !ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v %v, want %v", tt.in, got, ok, tt.want)
		}
	}
	// Refused: the caller's general decoder handles (or explains) these.
	for _, in := range []string{
		`{"a":{"b":1}}`, `{"a":[1]}`, `{"a":"x\"y"}`, `{"a":1,}`, `{"a" 1}`, `{"a":01}`, `{"a":+1}`, `{"a":1.}`,
		`{"a":.5}`, `{"a":truex}`, `[1]`, `{"a":1}x`, `{"a":1`, `{"user_id": oops}`, ``, `{"a":"\u0001"}`,
	} {
		if m, ok := d.Decode([]byte(in)); ok {
			t.Errorf("%q: accepted as %v", in, m)
		}
	}
}

func TestAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	var d Decoder
	for _, in := range []string{
		`{"stu_id":12345,"score_1":77,"score_2":81.5,"name":"ann","ok":true}`,
		`{"x":-1.25e-3,"y":0,"z":9007199254740993}`,
	} {
		got, ok := d.Decode([]byte(in))
		if !ok {
			t.Fatalf("%s refused", in)
		}
		var want map[string]any
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		for k, w := range want {
			g := got[k]
			if n, isInt := g.(int64); isInt {
				g = float64(n)
			}
			if g != w && k != "z" {
				t.Errorf("%s: %s = %v, encoding/json says %v", in, k, got[k], w)
			}
		}
		if in[2] == 'x' && got["z"] != int64(9007199254740993) {
			t.Errorf("large integer lost precision: %v", got["z"])
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"a":1,"b":"x"}`)
	f.Add(`{"a":-0.5e10}`)
	f.Fuzz(func(t *testing.T, in string) {
		var d Decoder
		m, ok := d.Decode([]byte(in))
		if !ok {
			return
		}
		// Whatever it accepts is valid JSON with the same keys.
		var want map[string]any
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("accepted invalid JSON %q: %v", in, err)
		}
		if len(want) != len(m) {
			t.Fatalf("%q: %d keys, encoding/json has %d", in, len(m), len(want))
		}
	})
}

func TestDecodeIntoReusesTheMap(t *testing.T) {
	var d Decoder
	m := map[string]any{"stale": 1}
	if !d.DecodeInto(m, []byte(`{"a":1,"b":"x","c":2.5}`)) || len(m) != 3 || m["a"] != int64(1) || m["b"] != "x" || m["c"] != 2.5 {
		t.Fatalf("first row: %v", m)
	}
	if !d.DecodeInto(m, []byte(`{"a":2}`)) || len(m) != 1 || m["a"] != int64(2) {
		t.Fatalf("second row keeps fields of the first: %v", m)
	}
	if d.DecodeInto(m, []byte(`{"a":{"nested":1}}`)) || d.DecodeInto(m, []byte(`[1]`)) {
		t.Fatal("a nested object or an array decoded")
	}
}

// Decimals read without strconv.ParseFloat have the value ParseFloat
// gives them, bit for bit, whatever their digits.
func TestShortDecimalsAreParsedAsParseFloatDoes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fixed := []string{"0.0", "-0.0", "0.1", "0.05", "123.45", "-123.45", "999999999999999.9", "0.000000000000001",
		"1.000000000000001", "123456789012345.6", "1234567890123456.7", "9007199254740993.0", "0.1e1", "5.5E-3"}
	for range 200_000 {
		digits := 1 + rng.IntN(17)
		s := strconv.FormatUint(rng.Uint64()%uint64(math.Pow10(digits)), 10)
		for len(s) < digits {
			s = "0" + s
		}
		dot := 1 + rng.IntN(len(s))
		num := strings.TrimLeft(s[:dot], "0")
		if num == "" {
			num = "0"
		}
		if dot == len(s) {
			s = num + ".0"
		} else {
			s = num + "." + s[dot:]
		}
		if rng.IntN(2) == 0 {
			s = "-" + s
		}
		fixed = append(fixed, s)
	}
	for _, s := range fixed {
		want, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := number([]byte(s))
		if !ok {
			t.Fatalf("%s refused", s)
		}
		if f, isFloat := got.(float64); !isFloat || math.Float64bits(f) != math.Float64bits(want) {
			t.Fatalf("%s: %v (%T), want %v", s, got, got, want)
		}
	}
}
