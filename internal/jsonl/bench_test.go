package jsonl_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/jsonl"
)

// BenchmarkWriteWindowRows writes rows as a window function emits them
// (a map of an int64 key, two RFC 3339 strings, an int64 count and a
// float64 sum) in batches of 1000, without fsync: the encoding's cost.
func BenchmarkWriteWindowRows(b *testing.B) {
	w, err := jsonl.Open(filepath.Join(b.TempDir(), "out.jsonl"), false)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	batch := make([]any, 1000)
	for i := range batch {
		batch[i] = map[string]any{"user_id": int64(i * 7919 % 100_000), "window_start": start.Format(time.RFC3339),
			"window_end": start.Add(time.Minute).Format(time.RFC3339), "orders": int64(10), "revenue": float64(i) * 10.1}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += len(batch) {
		if err := w.Write(context.Background(), batch[:min(len(batch), b.N-done)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
