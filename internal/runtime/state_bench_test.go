package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// BenchmarkKeyedStateUpdates measures keyed-state updates per second
// through the runtime, at-least-once with the embedded SQLite store: one
// update (a read and a write of a counter) per message, over 1k, 10k and
// 100k keys, batches of 4096 committed one by one (the changed entries are
// saved with the position in one SQLite transaction, every
// DefaultCheckpointInterval or more, see saveSpacing, and at the end).
func BenchmarkKeyedStateUpdates(b *testing.B) {
	for _, keys := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) { benchStateUpdates(b, keys) })
	}
}

func benchStateUpdates(b *testing.B, keys int) {
	store, err := checkpoint.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "checkpoints.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	ids := make([]state.ID, keys)
	for i := range ids {
		ids[i] = state.ID{Name: "n", Key: strconv.Itoa(i)}
	}
	flow := funcFlow(func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
		x := state.FromContext(ctx)
		for _, r := range rows {
			id := ids[r.(int)%keys]
			e, ok, err := x.Get(id)
			if err != nil {
				return nil, nil, err
			}
			n := 0
			if ok {
				n = e.Val.(int)
			}
			if err := x.Put(id, n+1, 0); err != nil {
				return nil, nil, err
			}
		}
		return nil, nil, nil
	})
	src := newSource(b.N, 0)
	b.ResetTimer()
	start := time.Now()
	tbl := state.New(1, json.Marshal)
	r, err := New(Config{Name: "bench", BatchSize: 4096, Delivery: AtLeastOnce},
		Parts{Source: src, NewFlow: func(int) Flow { return flow }, DeadLetter: &memSink{}, Checkpoints: store,
			State: tbl, StateStore: store})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
	b.StopTimer()
	var stored int
	if err := store.LoadState(context.Background(), "bench", func(stream.StateChange) error { stored++; return nil }); err != nil {
		b.Fatal(err)
	}
	if want := min(b.N, keys); stored != want || r.Stats().Batches == 0 {
		b.Fatalf("%d entries stored, want %d", stored, want)
	}
}
