package sql

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// BenchmarkInboxPostgres measures an exactly-once batch's inbox work, 500
// message IDs, on inboxes of 10 thousand and 10 million IDs. Each inbox is
// built once with generate_series from a broker's sequence numbers ("1",
// "2", ... as JetStream's stream sequence; Redis stream IDs and Kafka
// offsets grow the same way), with autovacuum off (the planner's
// statistics stay those of the empty table, and no page is marked all
// visible), then checkpointed, so that writing the build out does not
// weigh on the figures. Each row reports µs/batch, the time of the call
// it names alone:
//
//   - Seen/new: the next 500 sequence numbers, none recorded: what the
//     runtime asks before processing a batch. Untimed, the batch is then
//     committed and the 500 oldest IDs deleted (the inbox's pruning), so
//     that the inbox keeps its size and each batch follows the last one
//     committed.
//   - CommitBatch/new: recording the next 500 sequence numbers (then
//     pruning as above, untimed).
//   - Seen/redelivered: 500 IDs of the last four batches committed, all
//     recorded: the redelivery after a crash.
//   - Seen/spread-worst-case: 250 recorded IDs spread uniformly over the
//     whole inbox and 250 never recorded, each recorded one a first visit
//     to a page of the index and one of the table that nothing read since
//     the build: the cost of cache misses, not of the lookup. Runtimes do
//     not ask for such IDs.
//
// Run it alone (building 10M IDs takes minutes):
//
//	go test ./connector/sql -run '^$' -bench BenchmarkInboxPostgres -benchtime 200x
func BenchmarkInboxPostgres(b *testing.B) {
	for _, size := range []int{10_000, 10_000_000} {
		in := buildInbox(b, size)
		b.Run(fmt.Sprintf("Seen/new/ids=%d", size), func(b *testing.B) {
			for range b.N {
				ids := in.next()
				in.seen(b, ids, 0)
				b.StopTimer()
				in.commit(b, ids)
				in.prune(b)
				b.StartTimer()
			}
			in.report(b)
		})
		b.Run(fmt.Sprintf("CommitBatch/new/ids=%d", size), func(b *testing.B) {
			for range b.N {
				in.commit(b, in.next())
				b.StopTimer()
				in.prune(b)
				b.StartTimer()
			}
			in.report(b)
		})
		b.Run(fmt.Sprintf("Seen/redelivered/ids=%d", size), func(b *testing.B) {
			for i := range b.N {
				last := in.newest - inboxBatch*(i%4) // of one of the last four batches
				in.seen(b, in.ids(last-inboxBatch+1, func(j int) int { return j }), inboxBatch)
			}
			in.report(b)
		})
		b.Run(fmt.Sprintf("Seen/spread-worst-case/ids=%d", size), func(b *testing.B) {
			for i := range b.N {
				span := in.newest - in.oldest + 1
				in.seen(b, in.ids(0, func(j int) int {
					if j%2 == 1 {
						return in.newest + 1 + j // never recorded
					}
					return in.oldest + (i*7919+j*(span/inboxBatch))%span
				}), inboxBatch/2)
			}
			in.report(b)
		})
	}
}

// inboxBatch is the number of IDs of a benchmarked batch.
const inboxBatch = 500

// benchInbox is an inbox of the sequence numbers oldest to newest of
// stream "bench".
type benchInbox struct {
	d              *DB
	oldest, newest int
}

func buildInbox(b *testing.B, size int) *benchInbox {
	d := openDBWith(b, TypePostgres, "orders", newDatabase(b, TypePostgres), nil)
	ctx := context.Background()
	if _, err := d.SQL().ExecContext(ctx, "ALTER TABLE kisflow_inbox SET (autovacuum_enabled = false)"); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	const chunk = 1_000_000
	for from := 1; from <= size; from += chunk {
		if _, err := d.SQL().ExecContext(ctx, "INSERT INTO kisflow_inbox (stream, id, committed_at) SELECT 'bench', g::text, $1 FROM generate_series($2::bigint, $3::bigint) g",
			time.Now().Unix(), from, min(from+chunk-1, size)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := d.SQL().ExecContext(ctx, "CHECKPOINT"); err != nil {
		b.Fatal(err)
	}
	b.Logf("built an inbox of %d IDs in %v", size, time.Since(start).Round(time.Second))
	return &benchInbox{d: d, oldest: 1, newest: size}
}

// ids returns a batch of sequence numbers: at(j) for j from 0, plus from.
func (in *benchInbox) ids(from int, at func(j int) int) []string {
	ids := make([]string, inboxBatch)
	for j := range ids {
		ids[j] = strconv.Itoa(from + at(j))
	}
	return ids
}

// next returns the batch that follows the newest ID.
func (in *benchInbox) next() []string {
	return in.ids(in.newest+1, func(j int) int { return j })
}

func (in *benchInbox) seen(b *testing.B, ids []string, want int) {
	seen, err := in.d.Seen(context.Background(), "bench", ids)
	if err != nil {
		b.Fatal(err)
	}
	if len(seen) != want {
		b.Fatalf("seen %d of %d IDs, want %d", len(seen), len(ids), want)
	}
}

// commit records ids, the batch next returned.
func (in *benchInbox) commit(b *testing.B, ids []string) {
	if err := in.d.CommitBatch(context.Background(), "bench", "", ids, nil); err != nil {
		b.Fatal(err)
	}
	in.newest += len(ids)
}

// prune deletes the oldest batch of IDs.
func (in *benchInbox) prune(b *testing.B) {
	ids := in.ids(in.oldest, func(j int) int { return j })
	if _, err := in.d.SQL().ExecContext(context.Background(), "DELETE FROM kisflow_inbox WHERE stream = 'bench' AND id = ANY($1)", ids); err != nil {
		b.Fatal(err)
	}
	in.oldest += len(ids)
}

func (in *benchInbox) report(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
}
