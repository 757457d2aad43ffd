package sql

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// A fenced commit commits only while the stream's position is the one it
// expects; otherwise nothing of the batch is written and the error names
// both positions.
func TestCommitBatchAfterIsACompareAndSet(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", map[string]string{"create": "true", "columns": "order_id, total"})
		ctx := context.Background()
		if err := d.CommitBatchAfter(ctx, "s", "", "10", []string{"m1"}, []any{&order{ID: 1, Total: 1}}); err != nil {
			t.Fatal(err)
		}
		// Another process that also started with no position.
		err := d.CommitBatchAfter(ctx, "s", "", "10", []string{"m2"}, []any{&order{ID: 2, Total: 1}})
		var fe *stream.FenceError
		if !errors.As(err, &fe) || fe.Found != "10" || fe.Expected != "" || !stream.IsFatal(err) {
			t.Fatalf("a commit expecting no position over position 10: %v", err)
		}
		if err.Error() != "another process committed stream s (position 10, expected none): two runs on one stream; stop one" {
			t.Fatalf("message: %v", err)
		}
		if err := d.CommitBatchAfter(ctx, "s", "10", "20", []string{"m3"}, []any{&order{ID: 3, Total: 1}}); err != nil {
			t.Fatal(err)
		}
		// A stale expectation, with and without a position of its own.
		for _, pos := range []string{"20", "30", ""} {
			err := d.CommitBatchAfter(ctx, "s", "10", pos, []string{"m4"}, []any{&order{ID: 4, Total: 1}})
			if !errors.As(err, &fe) || fe.Found != "20" || fe.Expected != "10" {
				t.Fatalf("a commit of %q expecting 10 over 20: %v", pos, err)
			}
		}
		if pos, _ := d.Position(ctx, "s"); pos != "20" {
			t.Fatalf("position %q, want 20", pos)
		}
		if n := count(t, d, "SELECT count(*) FROM orders"); n != 2 {
			t.Fatalf("%d rows, want 2: a fenced commit wrote", n)
		}
		if seen, _ := d.Seen(ctx, "s", []string{"m2", "m4"}); len(seen) != 0 {
			t.Fatalf("a fenced commit recorded IDs: %v", seen)
		}
		// A check-only commit on a stream with no position leaves it none.
		if err := d.CommitBatchAfter(ctx, "t", "", "", nil, []any{&order{ID: 5, Total: 1}}); err != nil {
			t.Fatal(err)
		}
		if pos, _ := d.Position(ctx, "t"); pos != "" {
			t.Fatalf("position %q after a commit without one", pos)
		}
		if err := d.CommitBatchAfter(ctx, "t", "", "5", nil, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// Processes racing from the same position: exactly one commits.
func TestCommitBatchAfterRacersOneWins(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		base := newDatabase(t, typ)
		params := map[string]string{"create": "true", "columns": "order_id, total"}
		const racers = 4
		dbs := make([]*DB, racers)
		for i := range dbs {
			dbs[i] = openDBWith(t, typ, "orders", base, params)
		}
		ctx := context.Background()
		for _, from := range []string{"", "start"} {
			if from != "" {
				if err := dbs[0].CommitBatchAfter(ctx, "s", "+1", from, nil, nil); err != nil {
					t.Fatal(err)
				}
				if pos, _ := dbs[0].Position(ctx, "s"); pos != from {
					t.Fatalf("position %q", pos)
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, racers)
			for i, d := range dbs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// A deadlock or busy database is retried, as the runtime does.
					for range 20 {
						errs[i] = d.CommitBatchAfter(ctx, "s", from, from+"+1", nil, []any{&order{ID: 1000 + i, Total: 1}})
						if errs[i] == nil || stream.IsFatal(errs[i]) {
							return
						}
					}
				}()
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.As(err, new(*stream.FenceError)):
					t.Fatalf("from %q: %v", from, err)
				}
			}
			if won != 1 {
				t.Fatalf("from %q: %d racers committed, want 1 (%v)", from, won, errs)
			}
			if n := count(t, dbs[0], "SELECT count(*) FROM orders"); n != 1 {
				t.Fatalf("from %q: %d rows, want 1", from, n)
			}
			if _, err := dbs[0].SQL().Exec("DELETE FROM orders"); err != nil {
				t.Fatal(err)
			}
		}
	})
}
