package http

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkParse measures splitting a body of 10,000 rows into rows, by
// format.
func BenchmarkParse(b *testing.B) {
	const rows = 10000
	var lines, array, csv bytes.Buffer
	array.WriteByte('[')
	csv.WriteString("id,name,score\n")
	for i := range rows {
		fmt.Fprintf(&lines, `{"id":%d,"name":"user %d","score":%d.5}`+"\n", i, i, i%100)
		if i > 0 {
			array.WriteByte(',')
		}
		fmt.Fprintf(&array, `{"id":%d,"name":"user %d","score":%d.5}`, i, i, i%100)
		fmt.Fprintf(&csv, "%d,user %d,%d.5\n", i, i, i%100)
	}
	array.WriteByte(']')
	for _, bench := range []struct {
		name string
		f    format
		body []byte
	}{
		{"lines", formatLines, lines.Bytes()},
		{"json-array", formatJSON, array.Bytes()},
		{"json-lines", formatJSON, lines.Bytes()},
		{"csv", formatCSV, csv.Bytes()},
	} {
		b.Run(bench.name, func(b *testing.B) {
			b.SetBytes(int64(len(bench.body)))
			for b.Loop() {
				n := 0
				if err := parse(bytes.NewReader(bench.body), bench.f, int64(len(bench.body)), func([]byte) error { n++; return nil }); err != nil || n != rows {
					b.Fatalf("%d rows, %v", n, err)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
