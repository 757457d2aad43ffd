package runtime

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// slowStateStore is a checkpoint store that keeps state (deletions too)
// and takes a while to save, as a disk does: the commit loop then puts off
// position saves (see saveSpacing).
type slowStateStore struct {
	memCheckpoints
	smu   sync.Mutex
	state map[string]string
}

func (s *slowStateStore) SaveState(ctx context.Context, name, pos string, changes []stream.StateChange) error {
	time.Sleep(20 * time.Millisecond)
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.state == nil {
		s.state = map[string]string{}
	}
	for _, c := range changes {
		if c.Deleted {
			delete(s.state, c.Key)
		} else {
			s.state[c.Key] = string(c.Value)
		}
	}
	if pos != "" {
		return s.memCheckpoints.SavePosition(ctx, name, pos)
	}
	return nil
}

func (s *slowStateStore) LoadState(context.Context, string, func(stream.StateChange) error) error {
	return nil
}

// timerFlow sets a "timer" entry per row, keyed by the row, and its final
// flush fires them all: it deletes every entry it set.
type timerFlow struct {
	mu  *sync.Mutex
	set *[]string
}

func (f timerFlow) Run(ctx context.Context, rows []any) ([]any, []Rejected, error) {
	x := state.FromContext(ctx)
	for _, r := range rows {
		k := strconv.Itoa(r.(int))
		if err := x.Put(state.ID{Name: "timer", Key: k}, r, 0); err != nil {
			return nil, nil, err
		}
		f.mu.Lock()
		*f.set = append(*f.set, k)
		f.mu.Unlock()
	}
	return slices.Clone(rows), nil, nil
}

func (f timerFlow) Flush(ctx context.Context, final bool) ([]any, []Rejected, error) {
	if !final {
		return nil, nil, nil
	}
	x := state.FromContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range *f.set {
		if err := x.Delete(state.ID{Name: "timer", Key: k}); err != nil {
			return nil, nil, err
		}
	}
	return []any{-len(*f.set)}, nil, nil
}

// At-least-once with a stored position, the state changes of the final
// flush (an epoch without a position: timers it fired, windows it closed)
// are kept after those of the rows before it, whose save with their
// position the commit loop may have put off: a slow store makes it put
// off the last ones. Saved before them, the flush's deletions were
// overwritten by the older entries, and the next run fired the timers
// again.
func TestFinalFlushStateIsKeptAfterPendingState(t *testing.T) {
	t.Parallel()
	for range 3 {
		store := &slowStateStore{}
		var mu sync.Mutex
		var set []string
		run(t, Config{Name: "f", BatchSize: 5, Delivery: AtLeastOnce, FlushAtEnd: true},
			Parts{Source: newSource(40, 0), NewFlow: func(int) Flow { return timerFlow{&mu, &set} }, Sink: &memSink{}, DeadLetter: &memSink{},
				Checkpoints: store, StateStore: store, State: state.New(1, encodeInt)})
		if store.pos["f"] != "40" {
			t.Fatalf("saved position %q, want 40", store.pos["f"])
		}
		if len(store.state) != 0 {
			t.Fatalf("the final flush deleted every timer, yet the store keeps %d: %v", len(store.state), store.state)
		}
	}
}
