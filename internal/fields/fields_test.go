package fields

import "testing"

func TestKeyText(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v    any
		want string
	}{
		{int64(7), "7"}, {7, "7"}, {float64(7), "7"}, {float32(7), "7"}, {[]byte("7"), "7"}, {"7", "7"},
		{1.5, "1.5"}, {true, "true"}, {float64(1 << 60), "1.152921504606847e+18"},
	} {
		if got := KeyText(tt.v); got != tt.want {
			t.Errorf("KeyText(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
