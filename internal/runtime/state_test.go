package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// stateTxSink is a transactional sink that keeps state with its rows.
type stateTxSink struct {
	txSink
	smu   sync.Mutex
	state map[string]string
	// fail, when set, is asked before each commit: a non-nil error fails it.
	fail func(ids []string) error
}

func (s *stateTxSink) CommitState(ctx context.Context, name, pos string, ids []string, rows []any, changes []stream.StateChange) error {
	if s.fail != nil {
		if err := s.fail(ids); err != nil {
			return err
		}
	}
	if err := s.txSink.CommitBatch(ctx, name, pos, ids, rows); err != nil {
		return err
	}
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
	return nil
}

func (s *stateTxSink) CommitStateAfter(ctx context.Context, name, _, pos string, ids []string, rows []any, changes []stream.StateChange) error {
	return s.CommitState(ctx, name, pos, ids, rows, changes)
}

func (s *stateTxSink) CommitBatch(ctx context.Context, name, pos string, ids []string, rows []any) error {
	return s.CommitState(ctx, name, pos, ids, rows, nil)
}

func (s *stateTxSink) LoadState(context.Context, string, func(stream.StateChange) error) error {
	return nil
}

// redeliverSource is an idSource that delivers returned messages again.
type redeliverSource struct{ idSource }

func (s redeliverSource) Nack(ctx context.Context, msgs []*stream.Message, cause error) error {
	s.mu.Lock()
	for _, m := range msgs {
		s.rows = append(s.rows, m.Payload.(int))
	}
	s.mu.Unlock()
	return s.memSource.Nack(ctx, msgs, cause)
}

// summing adds each row to the state of key "k" (%d of rows mod keys with
// keys > 1) and passes the rows on.
func summing(keys int) funcFlow {
	return func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
		x := state.FromContext(ctx)
		for _, r := range rows {
			id := state.ID{Name: "sum", Key: strconv.Itoa(r.(int) % keys)}
			e, ok, err := x.Get(id)
			if err != nil {
				return nil, nil, err
			}
			sum := 0
			if ok {
				sum = e.Val.(int)
			}
			if err := x.Put(id, sum+r.(int), 0); err != nil {
				return nil, nil, err
			}
		}
		return slices.Clone(rows), nil, nil
	}
}

func encodeInt(v any) ([]byte, error) { return []byte(fmt.Sprint(v)), nil }

// A batch returned to its source leaves no state change, and so do the
// batches in flight that read its changes: they are returned too, and
// every message, delivered again, counts once.
func TestReturnedBatchesNeverApplyStateTwice(t *testing.T) {
	t.Parallel()
	src := redeliverSource{idSource{newSource(200, 0)}}
	// The batch of 61 runs on the changes of the batch of 55, then waits
	// until that batch's commit fails: it is not part of that commit.
	read61, failing := make(chan struct{}), make(chan struct{})
	var once sync.Once
	flow := summing(1)
	var raced atomic.Bool
	tx := &stateTxSink{fail: func(ids []string) error {
		if slices.Contains(ids, "55") && raced.CompareAndSwap(false, true) {
			<-read61
			close(failing)
			return fmt.Errorf("inbox: %w", stream.ErrAlreadyCommitted)
		}
		return nil
	}}
	run(t, Config{Name: "s", BatchSize: 10, Delivery: ExactlyOnce, MaxInFlight: 8},
		Parts{Source: src, NewFlow: func(int) Flow {
			return funcFlow(func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
				out, rej, err := flow(ctx, rows)
				if slices.Contains(rows, any(61)) {
					once.Do(func() { close(read61); <-failing })
				}
				return out, rej, err
			})
		}, Sink: tx, TxSink: tx, DeadLetter: &memSink{}, State: state.New(1, encodeInt)})
	if !raced.Load() {
		t.Fatal("the failed commit never happened")
	}
	if !slices.Contains(src.nacked, 55) || !slices.Contains(src.nacked, 61) {
		t.Fatalf("returned %v: want the batch of 55 and the next one that read its state", src.nacked)
	}
	if got, want := tx.state["0"], fmt.Sprint(200*201/2); got != want {
		t.Fatalf("committed sum %s, want %s", got, want)
	}
	if len(tx.rows) != 200 {
		t.Fatalf("%d rows committed, want 200", len(tx.rows))
	}
}

// A run retried after it changed state, and a message dead-lettered after
// its runs changed state, leave no change.
func TestRetriedRunsNeverApplyStateTwice(t *testing.T) {
	t.Parallel()
	src := newSource(300, 4)
	var calls atomic.Int64
	flow := summing(4)
	tx := &stateTxSink{}
	sleep := &noSleep{}
	r := run(t, Config{Name: "s", BatchSize: 16, Workers: 2, Key: "", Delivery: ExactlyOnce, Sleep: sleep.sleep},
		Parts{Source: src, NewFlow: func(int) Flow {
			return funcFlow(func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
				out, rej, err := flow(ctx, rows)
				if err == nil && (calls.Add(1)%3 == 0 || slices.Contains(rows, any(77))) {
					return nil, nil, errors.New("failed after changing state")
				}
				return out, rej, err
			})
		}, Sink: tx, TxSink: tx, DeadLetter: &memSink{}, State: state.New(2, encodeInt)})
	if s := r.Stats(); s.Retries == 0 || s.DeadLettered != 1 {
		t.Fatalf("stats %+v: want retries and one dead letter", s)
	}
	want := map[string]int{}
	for i := 1; i <= 300; i++ {
		if i != 77 {
			want[strconv.Itoa(i%4)] += i
		}
	}
	for k, v := range want {
		if tx.state[k] != strconv.Itoa(v) {
			t.Errorf("key %s: committed sum %s, want %d", k, tx.state[k], v)
		}
	}
}

// memStateStore is a checkpoint store that keeps state; it logs saves.
type memStateStore struct {
	memCheckpoints
	smu    sync.Mutex
	state  map[string]string
	events *[]string
}

func (s *memStateStore) SaveState(ctx context.Context, name, pos string, changes []stream.StateChange) error {
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.state == nil {
		s.state = map[string]string{}
	}
	for _, c := range changes {
		s.state[c.Key] = string(c.Value)
	}
	*s.events = append(*s.events, "save")
	if pos != "" {
		return s.memCheckpoints.SavePosition(ctx, name, pos)
	}
	return nil
}

func (s *memStateStore) LoadState(context.Context, string, func(stream.StateChange) error) error {
	return nil
}

// ackLog is an idSource that logs its acknowledgements.
type ackLog struct {
	idSource
	store *memStateStore
}

func (s ackLog) Ack(ctx context.Context, msgs []*stream.Message) error {
	s.store.smu.Lock()
	*s.store.events = append(*s.store.events, "ack")
	s.store.smu.Unlock()
	return s.idSource.Ack(ctx, msgs)
}

// Without a stored position (a broker that takes acknowledgements) and
// at-most-once, each group's state is saved when it commits, before the
// acknowledgement; at-least-once with a position, with the position.
func TestStateSavedOutsideATransactionalSink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		delivery  string
		positions bool
	}{{AtLeastOnce, false}, {AtMostOnce, false}, {AtLeastOnce, true}} {
		t.Run(fmt.Sprint(tc.delivery, tc.positions), func(t *testing.T) {
			t.Parallel()
			var events []string
			store := &memStateStore{events: &events}
			var src stream.Source = ackLog{idSource{newSource(100, 0)}, store}
			if tc.positions {
				src = newSource(100, 0)
			}
			run(t, Config{Name: "s", BatchSize: 10, Delivery: tc.delivery},
				Parts{Source: src, NewFlow: func(int) Flow { return summing(1) }, DeadLetter: &memSink{},
					Checkpoints: store, StateStore: store, State: state.New(1, encodeInt)})
			if got := store.state["0"]; got != "5050" {
				t.Fatalf("saved sum %q, want 5050", got)
			}
			switch {
			case tc.positions:
				if store.pos["s"] != "100" {
					t.Fatalf("position %q saved with the state, want 100", store.pos["s"])
				}
			case tc.delivery == AtLeastOnce:
				// Every acknowledgement follows the save of its group.
				for i := 0; i+1 < len(events); i += 2 {
					if events[i] != "save" || events[i+1] != "ack" {
						t.Fatalf("events %v: want save before each ack", events)
					}
				}
			}
		})
	}
}

// With a source that answers per message, a run in which a later function
// rejects rows is run again in halves to trace them: the state keeps the
// changes of the halves only, and the sink's refused rows, traced by runs
// made again, change nothing.
func TestTracedRunsApplyStateOnce(t *testing.T) {
	t.Parallel()
	src := &notifySource{memSource: newSource(200, 0)}
	var runs atomic.Int64
	two := twoRowsFlow(&runs)
	sum := summing(1)
	sink := &refusingSink{}
	store := &memStateStore{events: new([]string)}
	run(t, Config{Name: "s", BatchSize: 20},
		Parts{Source: src, NewFlow: func(int) Flow {
			return funcFlow(func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
				if _, _, err := sum(ctx, rows); err != nil {
					return nil, nil, err
				}
				return two.Run(ctx, rows)
			})
		}, Sink: sink, DeadLetter: &memSink{}, Checkpoints: store, StateStore: store, State: state.New(1, encodeInt)})
	if runs.Load() <= 10 {
		t.Fatalf("%d runs: the rejections were not traced", runs.Load())
	}
	if got := store.state["0"]; got != "20100" {
		t.Fatalf("saved sum %s, want 20100 (each message once)", got)
	}
}

// A flow that changes state with nothing to keep it ends with an error
// that says so, and commits nothing.
func TestStateWithoutAStoreEndsTheRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		delivery string
		tx       *txSink
	}{{ExactlyOnce, &txSink{}}, {AtLeastOnce, nil}} {
		t.Run(tc.delivery, func(t *testing.T) {
			t.Parallel()
			parts := Parts{Source: newSource(50, 0), NewFlow: func(int) Flow { return summing(1) }, DeadLetter: &memSink{},
				Checkpoints: &memCheckpoints{}, State: state.New(1, encodeInt)}
			if tc.tx != nil {
				parts.Sink, parts.TxSink = tc.tx, tc.tx
			}
			r, err := New(Config{Name: "s", BatchSize: 10, Delivery: tc.delivery}, parts)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), "changes keyed state, which its") {
				t.Fatalf("run ended with %v, want an error saying the state cannot be kept", err)
			}
			if r.Stats().Committed != 0 {
				t.Fatalf("%d messages committed", r.Stats().Committed)
			}
		})
	}
}
