package flatjson

import "testing"

func BenchmarkDecode(b *testing.B) {
	line := []byte(`{"stu_id":12345,"score_1":77,"score_2":81,"score_3":93}`)
	var d Decoder
	b.ReportAllocs()
	for range b.N {
		if _, ok := d.Decode(line); !ok {
			b.Fatal("refused")
		}
	}
}

// BenchmarkDecodeEvent decodes issue 13's window benchmark rows (an epoch
// milliseconds time, an integer id, a decimal amount) into one reused map,
// as the window function does.
func BenchmarkDecodeEvent(b *testing.B) {
	line := []byte(`{"ts":1777636812345,"user_id":67890,"amount":123.45}`)
	var d Decoder
	m := make(map[string]any, 8)
	b.ReportAllocs()
	for range b.N {
		if !d.DecodeInto(m, line) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkNumberDecimal reads a decimal amount.
func BenchmarkNumberDecimal(b *testing.B) {
	x := []byte("123.45")
	for range b.N {
		if _, ok := number(x); !ok {
			b.Fatal("refused")
		}
	}
}
