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
