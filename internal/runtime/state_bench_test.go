package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync/atomic"
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
// Its source makes each batch's messages in one allocation, positions
// included, and counts acknowledgements, as a broker client would: the
// figure is the runtime's and the state's, not a test source's. Beside
// updates/s it reports updates/cpu-s, updates per second of CPU the
// process used, which the load of other jobs on the machine moves less.
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
	src := &countSource{n: b.N}
	b.ResetTimer()
	start := time.Now()
	cpu0, cpuOK := cpuTime()
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
	if cpu1, ok := cpuTime(); ok && cpuOK {
		b.ReportMetric(float64(b.N)/(cpu1-cpu0).Seconds(), "updates/cpu-s")
	}
	b.StopTimer()
	var stored int
	if err := store.LoadState(context.Background(), "bench", func(stream.StateChange) error { stored++; return nil }); err != nil {
		b.Fatal(err)
	}
	if want := min(b.N, keys); stored != want || r.Stats().Batches == 0 {
		b.Fatalf("%d entries stored, want %d", stored, want)
	}
	if src.acked.Load() != int64(b.N) {
		b.Fatalf("%d messages acknowledged, want %d", src.acked.Load(), b.N)
	}
	var sum int
	for i := range min(b.N, keys) {
		e, ok := tbl.Committed(ids[i])
		if !ok {
			b.Fatalf("key %d has no state", i)
		}
		n, err := strconv.Atoi(string(e.Raw))
		if e.Val != nil {
			n, err = e.Val.(int), nil
		}
		if err != nil {
			b.Fatal(err)
		}
		sum += n
	}
	if sum != b.N {
		b.Fatalf("the counters add up to %d, want %d", sum, b.N)
	}
}

// countSource delivers the rows 0..n-1, each batch's messages and
// positions made in one allocation, and counts acknowledgements.
type countSource struct {
	n, next int
	acked   atomic.Int64
}

func (s *countSource) Read(_ context.Context, max int) ([]*stream.Message, error) {
	if s.next >= s.n {
		return nil, io.EOF
	}
	k := min(max, s.n-s.next)
	msgs, out, ends := make([]stream.Message, k), make([]*stream.Message, k), make([]int, k)
	var b []byte
	for i := range k {
		b = strconv.AppendInt(b, int64(s.next+i), 10)
		ends[i] = len(b)
	}
	pos, start := string(b), 0
	for i := range msgs {
		msgs[i].Payload, msgs[i].Position = s.next, pos[start:ends[i]]
		out[i], start = &msgs[i], ends[i]
		s.next++
	}
	return out, nil
}

func (s *countSource) Ack(_ context.Context, msgs []*stream.Message) error {
	s.acked.Add(int64(len(msgs)))
	return nil
}

func (s *countSource) Close(context.Context) error { return nil }
