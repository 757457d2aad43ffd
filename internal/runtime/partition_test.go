package runtime

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// partedSource is a redeliverSource whose messages all come from
// partition "p0", which it owns (stream.PartitionOwner): announced before
// its first message.
type partedSource struct {
	redeliverSource
	h         stream.PartitionHandler
	announced bool
	assigned  int
}

func (s *partedSource) OwnPartitions(h stream.PartitionHandler) { s.h = h }

func (s *partedSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	msgs, err := s.redeliverSource.Read(ctx, max)
	for _, m := range msgs {
		m.Partition, m.Key = "p0", "0"
	}
	if len(msgs) > 0 && !s.announced {
		if err := s.h.Assigned(ctx, []string{"p0"}); err != nil {
			return nil, err
		}
		s.announced = true
		s.assigned++
	}
	return msgs, err
}

// partedStore is an exactly-once sink that keeps state with its
// partition, and loads it by partition. other, when set, is asked before
// each commit; when it returns true, another process committed the same
// messages and state just before: the commit fails as already committed.
type partedStore struct {
	txSink
	smu   sync.Mutex
	state map[string]stream.StateChange
	loads [][]string
	other func(ids []string) bool
}

func (s *partedStore) apply(changes []stream.StateChange) {
	s.smu.Lock()
	defer s.smu.Unlock()
	for _, c := range changes {
		s.state[c.Key] = c
	}
}

func (s *partedStore) CommitState(ctx context.Context, name, pos string, ids []string, rows []any, changes []stream.StateChange) error {
	if s.other != nil && s.other(ids) {
		if err := s.txSink.CommitBatch(ctx, name, pos, ids, rows); err != nil {
			return err
		}
		s.apply(changes) // the other process computed the same
		return fmt.Errorf("inbox: %w", stream.ErrAlreadyCommitted)
	}
	if err := s.txSink.CommitBatch(ctx, name, pos, ids, rows); err != nil {
		return err
	}
	s.apply(changes)
	return nil
}

func (s *partedStore) CommitStateAfter(ctx context.Context, name, _, pos string, ids []string, rows []any, changes []stream.StateChange) error {
	return s.CommitState(ctx, name, pos, ids, rows, changes)
}

func (s *partedStore) LoadState(ctx context.Context, name string, fn func(stream.StateChange) error) error {
	return s.LoadPartitionState(ctx, name, nil, fn)
}

func (s *partedStore) LoadPartitionState(_ context.Context, _ string, parts []string, fn func(stream.StateChange) error) error {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.loads = append(s.loads, parts)
	for _, c := range s.state {
		if parts == nil || slices.Contains(parts, c.Partition) {
			if err := fn(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// With a source that owns partitions, a partition's state is loaded from
// the store when the partition is assigned (what the store held before
// the run counts), changes record their partition, and when a commit
// finds its messages committed by another process, with the state, the
// partition's state is loaded again: later batches count on it, and the
// total is every message once.
func TestStateFollowsPartitionsAndIsReloadedAfterAnotherProcessCommitted(t *testing.T) {
	t.Parallel()
	src := &partedSource{redeliverSource: redeliverSource{idSource{newSource(200, 0)}}}
	store := &partedStore{state: map[string]stream.StateChange{
		"0":     {Name: "sum", Key: "0", Value: []byte("1000"), Partition: "p0"},
		"other": {Name: "sum", Key: "other", Value: []byte("5"), Partition: "p9"},
	}}
	var raced bool
	store.other = func(ids []string) bool {
		if slices.Contains(ids, "55") && !raced {
			raced = true
			return true
		}
		return false
	}
	table := state.New(1, encodeInt)
	table.Kept = true
	flow := summing(1)
	run(t, Config{Name: "s", BatchSize: 10, Delivery: ExactlyOnce, MaxInFlight: 4},
		Parts{Source: src, NewFlow: func(int) Flow {
			return funcFlow(func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
				// Loaded values are JSON: as an int, for summing.
				x := state.FromContext(ctx)
				if e, ok, _ := x.Get(state.ID{Name: "sum", Key: "0"}); ok && e.Val == nil {
					var v int
					fmt.Sscan(string(e.Raw), &v)
					_ = x.Put(state.ID{Name: "sum", Key: "0"}, v, 0)
				}
				return flow(ctx, rows)
			})
		}, Sink: store, TxSink: store, DeadLetter: &memSink{}, State: table, StateLoader: store})
	if !raced {
		t.Fatal("the other process's commit never happened")
	}
	if src.assigned != 1 {
		t.Fatalf("partition announced %d times, want 1", src.assigned)
	}
	if len(store.loads) < 2 || !slices.Equal(store.loads[0], []string{"p0"}) {
		t.Fatalf("loads %v: want p0 at its assignment, and again after the conflict", store.loads)
	}
	c := store.state["0"]
	if want := fmt.Sprint(1000 + 200*201/2); string(c.Value) != want || c.Partition != "p0" {
		t.Fatalf("committed sum %s at %q, want %s at p0", c.Value, c.Partition, want)
	}
	if table.Len() != 1 {
		t.Fatalf("%d entries in memory, want only p0's", table.Len())
	}
}
