package runtime

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// countingStateStore counts the state saves that reach the store and the
// entries they write.
type countingStateStore struct {
	*checkpoint.Store
	mu             sync.Mutex
	saves, entries int
}

func (s *countingStateStore) SaveState(ctx context.Context, key, pos string, changes []stream.StateChange) error {
	s.mu.Lock()
	s.saves++
	s.entries += len(changes)
	s.mu.Unlock()
	return s.Store.SaveState(ctx, key, pos, changes)
}

// TestCheckpointIntervalCoalescesStateWrites: with a long checkpoint
// interval, the counters of 10 keys changed by 50 batches are written at
// the first save and at the end only, each key once per save, and the store
// ends with every count.
func TestCheckpointIntervalCoalescesStateWrites(t *testing.T) {
	t.Parallel()
	cp, err := checkpoint.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	store := &countingStateStore{Store: cp}
	const keys, rows = 10, 5000
	flow := funcFlow(func(ctx context.Context, in []any) ([]any, []Rejected, error) {
		time.Sleep(5 * time.Millisecond) // batches keep coming for a while
		x := state.FromContext(ctx)
		for _, r := range in {
			id := state.ID{Name: "n", Key: strconv.Itoa(r.(int) % keys)}
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
	r, err := New(Config{Name: "c", BatchSize: 100, Delivery: AtLeastOnce, CheckpointInterval: time.Hour},
		Parts{Source: newSource(rows, 0), NewFlow: func(int) Flow { return flow }, DeadLetter: &memSink{}, Checkpoints: cp,
			State: state.New(1, json.Marshal), StateStore: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.Stats().Batches < 10 || store.saves > 3 || store.entries > 3*keys {
		t.Fatalf("%d batches made %d saves of %d entries; want at most 3 saves of %d entries each", r.Stats().Batches, store.saves, store.entries, keys)
	}
	total := 0
	if err := cp.LoadState(context.Background(), "c", func(c stream.StateChange) error {
		n, err := strconv.Atoi(string(c.Value))
		total += n
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if total != rows {
		t.Fatalf("stored counts sum to %d, want %d", total, rows)
	}
}
