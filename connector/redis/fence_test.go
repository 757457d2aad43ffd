package redis

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// A fenced commit commits only while the stream's position is the one it
// expects; otherwise nothing of the batch is written. Of racers from the
// same position, one commits.
func TestCommitBatchAfterIsACompareAndSet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list:{user_id}", map[string]string{"mode": "list", "state_prefix": prefix + "list:state:"})
	key := prefix + "list:1"
	row := func(n int) []any { return []any{map[string]any{"user_id": 1, "n": n}} }
	if err := r.CommitBatchAfter(ctx, "f", "", "10", []string{"a"}, row(1)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, pos string }{{"", "10"}, {"5", "20"}, {"5", ""}} {
		err := r.CommitBatchAfter(ctx, "f", c.from, c.pos, []string{"b"}, row(2))
		var fe *stream.FenceError
		if !errors.As(err, &fe) || fe.Found != "10" || fe.Expected != c.from || !stream.IsFatal(err) {
			t.Fatalf("a commit expecting %q over position 10: %v", c.from, err)
		}
	}
	if n := r.client.LLen(ctx, key).Val(); n != 1 {
		t.Fatalf("%d entries, want 1: a fenced commit wrote", n)
	}
	if seen, _ := r.Seen(ctx, "f", []string{"b"}); seen["b"] {
		t.Fatal("a fenced commit recorded its IDs")
	}
	if pos, _ := r.Position(ctx, "f"); pos != "10" {
		t.Fatalf("position %q, want 10", pos)
	}

	const racers = 6
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 { // a transaction Redis refused is tried again, as the runtime does
				if errs[i] = r.CommitBatchAfter(ctx, "f", "10", "11", nil, row(100+i)); errs[i] == nil || stream.IsFatal(errs[i]) {
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
			t.Fatal(err)
		}
	}
	if won != 1 || r.client.LLen(ctx, key).Val() != 2 {
		t.Fatalf("%d racers committed, %d entries; want 1 and 2", won, r.client.LLen(ctx, key).Val())
	}
}
