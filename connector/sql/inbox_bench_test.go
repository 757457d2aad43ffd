package sql

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkInboxPostgres measures an exactly-once batch's inbox work on
// inboxes of 10 thousand and 10 million IDs (built once per size with
// generate_series, autovacuum off, so that the planner's statistics stay
// those of the empty table): Seen, looking up 500 IDs of which half are
// recorded, and CommitBatch, recording 500 new ones. Each must cost the
// same at both sizes. Run it alone (building 10M IDs takes minutes):
//
//	go test ./connector/sql -run '^$' -bench BenchmarkInboxPostgres -benchtime 200x
func BenchmarkInboxPostgres(b *testing.B) {
	const batch = 500
	for _, size := range []int{10_000, 10_000_000} {
		d := openDBWith(b, TypePostgres, "orders", newDatabase(b, TypePostgres), nil)
		ctx := context.Background()
		if _, err := d.SQL().ExecContext(ctx, "ALTER TABLE kisflow_inbox SET (autovacuum_enabled = false)"); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		const chunk = 1_000_000
		for from := 1; from <= size; from += chunk {
			if _, err := d.SQL().ExecContext(ctx, "INSERT INTO kisflow_inbox (stream, id, committed_at) SELECT 'bench', 'msg-' || g, $1 FROM generate_series($2::bigint, $3::bigint) g",
				time.Now().Unix(), from, min(from+chunk-1, size)); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("built an inbox of %d IDs in %v", size, time.Since(start).Round(time.Second))
		ids := make([]string, batch)
		b.Run(fmt.Sprintf("Seen/ids=%d", size), func(b *testing.B) {
			for i := range b.N {
				for j := range ids {
					if j%2 == 0 { // recorded, spread over the whole inbox
						ids[j] = fmt.Sprintf("msg-%d", 1+(i*7919+j*(size/batch))%size)
					} else {
						ids[j] = fmt.Sprintf("new-%d-%d", i, j)
					}
				}
				seen, err := d.Seen(ctx, "bench", ids)
				if err != nil {
					b.Fatal(err)
				}
				if len(seen) != batch/2 {
					b.Fatalf("seen %d of %d recorded IDs", len(seen), batch/2)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
		})
		b.Run(fmt.Sprintf("CommitBatch/ids=%d", size), func(b *testing.B) {
			for i := range b.N {
				for j := range ids {
					ids[j] = fmt.Sprintf("commit-%d-%d-%d", b.N, i, j)
				}
				if err := d.CommitBatch(ctx, "bench", "", ids, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
		})
	}
}
