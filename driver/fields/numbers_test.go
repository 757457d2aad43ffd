package fields

import (
	"reflect"
	"testing"
)

// TestOfKeepsIntegers: JSON text rows are typed as the engine types them
// (internal/flatjson): integers int64, even past 2^53, at every depth;
// other numbers float64. Rows a remote function returns are JSON text,
// and a sink reading them through Of typed 9007199254740993 as the float
// 9007199254740992.
func TestOfKeepsIntegers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		want       map[string]any
	}{
		{"flat", `{"id":9007199254740993,"amount":3,"neg":-9223372036854775808,"price":6.5,"whole":6.0,"exp":1e3,"big":18446744073709551616,"s":"a"}`,
			map[string]any{"id": int64(9007199254740993), "amount": int64(3), "neg": int64(-9223372036854775808), "price": 6.5, "whole": 6.0, "exp": 1000.0, "big": 18446744073709551616.0, "s": "a"}},
		{"nested", `{"id":9007199254740993,"o":{"n":9007199254740995,"f":0.5,"a":[1,2.5,{"x":-7}]},"l":[[3]],"e":"\u00e9"}`,
			map[string]any{"id": int64(9007199254740993), "o": map[string]any{"n": int64(9007199254740995), "f": 0.5, "a": []any{int64(1), 2.5, map[string]any{"x": int64(-7)}}}, "l": []any{[]any{int64(3)}}, "e": "é"}},
	} {
		for _, row := range []any{tc.text, []byte(tc.text)} {
			got, err := Of(row)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s (%T): got %#v\nwant %#v", tc.name, row, got, tc.want)
			}
		}
	}
	for _, bad := range []string{`{"a":1} {"b":2}`, `{"a":[1,}`, `[1]`, `{"a":1}x`} {
		if m, err := Of([]byte(bad)); err == nil {
			t.Errorf("%s: decoded as %v, want an error", bad, m)
		}
	}
}
