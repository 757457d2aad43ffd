package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// memSource delivers rows 1..n as messages with positions; with a key count
// it sets Message.Key. It records acks. unbounded sources block at the end.
type memSource struct {
	mu        sync.Mutex
	rows      []int
	next      int
	keys      int
	unbounded bool
	acked     []int
	nacked    []int
	closed    bool
}

func newSource(n, keys int) *memSource {
	s := &memSource{keys: keys}
	for i := 1; i <= n; i++ {
		s.rows = append(s.rows, i)
	}
	return s
}

func (s *memSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	s.mu.Lock()
	if s.next >= len(s.rows) {
		s.mu.Unlock()
		if s.unbounded {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, io.EOF
	}
	var out []*stream.Message
	for len(out) < max && s.next < len(s.rows) {
		id := s.rows[s.next]
		m := &stream.Message{Payload: id, Position: strconv.Itoa(id)}
		if s.keys > 0 {
			m.Key = strconv.Itoa(id % s.keys)
		}
		out = append(out, m)
		s.next++
	}
	s.mu.Unlock()
	return out, nil
}

func (s *memSource) Ack(_ context.Context, msgs []*stream.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.acked = append(s.acked, m.Payload.(int))
	}
	return nil
}

func (s *memSource) Nack(_ context.Context, msgs []*stream.Message, _ error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.nacked = append(s.nacked, m.Payload.(int))
	}
	return nil
}

func (s *memSource) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// funcFlow runs a function over the rows.
type funcFlow func(ctx context.Context, rows []any) ([]any, []Rejected, error)

func (f funcFlow) Run(ctx context.Context, rows []any) ([]any, []Rejected, error) {
	return f(ctx, rows)
}

func passAll(_ context.Context, rows []any) ([]any, []Rejected, error) {
	return slices.Clone(rows), nil, nil
}

// memSink records rows; with a gate it blocks each write until released.
type memSink struct {
	mu   sync.Mutex
	rows []any
	gate chan struct{}
}

func (s *memSink) Write(ctx context.Context, rows []any) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, rows...)
	return nil
}

func (s *memSink) ints() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, r := range s.rows {
		switch v := r.(type) {
		case int:
			out = append(out, v)
		case *stream.DeadLetter:
			out = append(out, v.Payload.(int))
		}
	}
	return out
}

type memCheckpoints struct {
	mu  sync.Mutex
	pos map[string]string
}

func (c *memCheckpoints) Position(_ context.Context, s string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos[s], nil
}

func (c *memCheckpoints) SavePosition(_ context.Context, s, p string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pos == nil {
		c.pos = map[string]string{}
	}
	c.pos[s] = p
	return nil
}

// noSleep records waits instead of sleeping.
type noSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (n *noSleep) sleep(ctx context.Context, d time.Duration) error {
	n.mu.Lock()
	n.waits = append(n.waits, d)
	n.mu.Unlock()
	return ctx.Err()
}

func run(t *testing.T, cfg Config, parts Parts) *Runner {
	t.Helper()
	r, err := New(cfg, parts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestEveryMessageIsWrittenThenAckedInOrder(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d workers", workers), func(t *testing.T) {
			t.Parallel()
			src := newSource(10000, 0)
			sink, dlq, ck := &memSink{}, &memSink{}, &memCheckpoints{}
			r := run(t, Config{Name: "s", BatchSize: 100, Workers: workers}, Parts{
				Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: sink, DeadLetter: dlq, Checkpoints: ck,
			})
			got := sink.ints()
			slices.Sort(got)
			if !slices.Equal(got, seq(10000)) {
				t.Fatalf("sink holds %d rows, want 1..10000", len(got))
			}
			if !slices.Equal(src.acked, seq(10000)) {
				t.Fatal("acks are not every message in source order")
			}
			if ck.pos["s"] != "10000" || !src.closed {
				t.Fatalf("position %q, closed %v", ck.pos["s"], src.closed)
			}
			if s := r.Stats(); s.Read != 10000 || s.Committed != 10000 || s.Out != 10000 || s.InFlight != 0 || s.Batches != 100 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestPoisonRowsAreDeadLetteredWhileTheRestProceed(t *testing.T) {
	t.Parallel()
	poison := map[int]bool{7: true, 500: true, 501: true, 999: true}
	var runs atomic.Int64
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		runs.Add(1)
		var rej []Rejected
		out := make([]any, 0, len(rows))
		for i, r := range rows {
			id := r.(int)
			if id == 999 { // a conversion error, traceable to its row
				rej = append(rej, Rejected{Func: "Decode", Layer: 0, Index: i, Err: errors.New("bad JSON")})
				continue
			}
			if poison[id] {
				return nil, nil, fmt.Errorf("cannot handle %d", id)
			}
			out = append(out, id)
		}
		return out, rej, nil
	}
	sleeper := &noSleep{}
	src := newSource(1000, 0)
	sink, dlq := &memSink{}, &memSink{}
	r := run(t, Config{
		Name: "s", BatchSize: 100, Workers: 2, Sleep: sleeper.sleep,
		PolicyFor: func(fn string) Policy { return Policy{Retries: 2, Base: 10 * time.Millisecond} },
		FuncOf:    func(error) string { return "Calc" },
	}, Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: sink, DeadLetter: dlq})

	got := sink.ints()
	slices.Sort(got)
	var want []int
	for _, id := range seq(1000) {
		if !poison[id] {
			want = append(want, id)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sink: %d rows, want %d (all but the poison ones)", len(got), len(want))
	}
	dead := map[int]*stream.DeadLetter{}
	for _, row := range dlq.rows {
		dl := row.(*stream.DeadLetter)
		dead[dl.Payload.(int)] = dl
	}
	if len(dead) != 4 {
		t.Fatalf("dead letters: %v", dlq.ints())
	}
	for id := range poison {
		// A rejected row is deterministic: dead-lettered at its first
		// attempt. A run error is retried by the function's policy.
		attempts := 3
		if id == 999 {
			attempts = 1
		}
		dl := dead[id]
		if dl == nil || dl.Flow != "s" || dl.Attempts != attempts || dl.Error == "" || dl.Position != strconv.Itoa(id) {
			t.Errorf("dead letter of %d: %+v", id, dl)
		}
	}
	if dead[999].Func != "Decode" || dead[999].Error != "bad JSON" || dead[7].Func != "Calc" || dead[7].Error != "cannot handle 7" {
		t.Errorf("reasons: %+v %+v", dead[999], dead[7])
	}
	if !slices.Equal(src.acked, seq(1000)) {
		t.Fatal("not every message was acknowledged")
	}
	if s := r.Stats(); s.DeadLettered != 4 {
		t.Fatalf("stats %+v", s)
	}
	// Bisection finds each poison row in O(log n) runs, not one run per row.
	if n := runs.Load(); n > 250 {
		t.Errorf("%d flow runs for 10 batches with 4 poison rows", n)
	}
	for _, w := range sleeper.waits {
		if w < 5*time.Millisecond || w > 40*time.Millisecond {
			t.Errorf("backoff %v outside [base/2, 4×base] for 2 retries", w)
		}
	}
}

func TestFailingEveryNthBatchLosesNothing(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		if calls.Add(1)%3 == 0 {
			return nil, nil, errors.New("transient")
		}
		return slices.Clone(rows), nil, nil
	}
	sleeper := &noSleep{}
	src := newSource(5000, 0)
	sink, dlq := &memSink{}, &memSink{}
	run(t, Config{Name: "s", BatchSize: 100, Workers: 3, Sleep: sleeper.sleep,
		PolicyFor: func(string) Policy { return Policy{Retries: 3, Base: time.Millisecond} }},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: sink, DeadLetter: dlq})
	got := sink.ints()
	slices.Sort(got)
	if got = slices.Compact(got); !slices.Equal(got, seq(5000)) || len(dlq.rows) != 0 {
		t.Fatalf("sink has %d distinct ids, dead letters %d", len(got), len(dlq.rows))
	}
}

func TestPerKeyOrderWithFourWorkers(t *testing.T) {
	t.Parallel()
	const keys = 13
	var mu sync.Mutex
	busy := map[int]bool{}
	lastSeen := map[int]int{}
	var violations []string
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		mu.Lock()
		mine := map[int]bool{}
		for _, r := range rows {
			id := r.(int)
			k := id % keys
			if busy[k] && !mine[k] {
				violations = append(violations, fmt.Sprintf("key %d processed concurrently", k))
			}
			busy[k], mine[k] = true, true
			if id < lastSeen[k] {
				violations = append(violations, fmt.Sprintf("key %d: %d after %d", k, id, lastSeen[k]))
			}
			lastSeen[k] = id
		}
		mu.Unlock()
		time.Sleep(50 * time.Microsecond) // let workers overlap
		mu.Lock()
		for _, r := range rows {
			busy[r.(int)%keys] = false
		}
		mu.Unlock()
		return slices.Clone(rows), nil, nil
	}
	src := newSource(20000, keys)
	sink := &memSink{}
	run(t, Config{Name: "s", BatchSize: 64, Workers: 4, Key: "k"},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: sink, DeadLetter: &memSink{}})
	if len(violations) > 0 {
		t.Fatalf("%d violations, first: %s", len(violations), violations[0])
	}
	if len(sink.ints()) != 20000 {
		t.Fatalf("sink holds %d rows", len(sink.ints()))
	}
	// Within each key, the sink saw ids in increasing order too.
	last := map[int]int{}
	for _, id := range sink.ints() {
		if id < last[id%keys] {
			t.Fatalf("sink order broken for key %d", id%keys)
		}
		last[id%keys] = id
	}
}

func TestInFlightStaysBoundedWhileTheSinkIsSlow(t *testing.T) {
	t.Parallel()
	src := newSource(3000, 0)
	gate := make(chan struct{})
	sink := &memSink{gate: gate}
	r, err := New(Config{Name: "s", BatchSize: 50, Workers: 2, MaxInFlight: 3},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: sink, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	// Release writes one at a time; the source must never run more than
	// MaxInFlight batches ahead of the sink.
	for released := 0; ; released++ {
		select {
		case gate <- struct{}{}:
			if s := r.Stats(); s.InFlight > 3*50 {
				t.Fatalf("in flight %d > bound %d", s.InFlight, 3*50)
			}
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if s := r.Stats(); s.MaxInFlight > 3*50 || s.Committed != 3000 {
				t.Fatalf("stats %+v", s)
			}
			return
		}
	}
}

func TestAtMostOnceAcksBeforeProcessing(t *testing.T) {
	t.Parallel()
	src := newSource(300, 0)
	var ackedBeforeRun atomic.Bool
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		src.mu.Lock()
		if slices.Contains(src.acked, rows[0].(int)) {
			ackedBeforeRun.Store(true)
		}
		src.mu.Unlock()
		return slices.Clone(rows), nil, nil
	}
	ck := &memCheckpoints{}
	run(t, Config{Name: "s", BatchSize: 100, Delivery: AtMostOnce},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: &memSink{}, DeadLetter: &memSink{}, Checkpoints: ck})
	if !ackedBeforeRun.Load() || ck.pos["s"] != "300" {
		t.Fatalf("acked before run: %v, position %q", ackedBeforeRun.Load(), ck.pos["s"])
	}
}

// txSink is an exactly-once sink in memory: rows and position change
// together under one lock.
type txSink struct {
	mu   sync.Mutex
	rows []any
	pos  string
	ids  map[string]bool
}

func (s *txSink) Write(context.Context, []any) error {
	return errors.New("exactly-once must not call Write")
}
func (s *txSink) CommitBatch(_ context.Context, _ string, pos string, ids []string, rows []any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, rows...)
	s.pos = pos
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	for _, id := range ids {
		s.ids[id] = true
	}
	return nil
}
func (s *txSink) Position(context.Context, string) (string, error) { return s.pos, nil }
func (s *txSink) Seen(_ context.Context, _ string, ids []string) (map[string]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, id := range ids {
		if s.ids[id] {
			seen[id] = true
		}
	}
	return seen, nil
}

func TestExactlyOnceCommitsRowsWithPosition(t *testing.T) {
	t.Parallel()
	src := newSource(1000, 7)
	tx := &txSink{}
	run(t, Config{Name: "s", BatchSize: 64, Workers: 3, Key: "k", Delivery: ExactlyOnce},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: tx, TxSink: tx, DeadLetter: &memSink{}})
	got := (&memSink{rows: tx.rows}).ints()
	slices.Sort(got)
	if !slices.Equal(got, seq(1000)) || tx.pos != "1000" {
		t.Fatalf("%d rows, position %q", len(got), tx.pos)
	}
	if _, err := New(Config{Delivery: ExactlyOnce}, Parts{Source: src, NewFlow: func(int) Flow { return nil }, DeadLetter: &memSink{}}); err == nil {
		t.Fatal("exactly-once without a transactional sink: no error")
	}
}

// lostAnswerSink commits every batch and then, for the first and every
// other one, reports a lost connection, as a database does that goes away
// after committing.
type lostAnswerSink struct {
	txSink
	calls int
}

func (s *lostAnswerSink) CommitBatch(ctx context.Context, name, pos string, ids []string, rows []any) error {
	if err := s.txSink.CommitBatch(ctx, name, pos, ids, rows); err != nil {
		return err
	}
	s.calls++
	if s.calls%2 == 1 {
		return errors.New("commit: invalid connection")
	}
	return nil
}

func TestACommitWhoseAnswerWasLostIsNotMadeTwice(t *testing.T) {
	t.Parallel()
	src := newSource(1000, 7)
	tx := &lostAnswerSink{}
	run(t, Config{Name: "s", BatchSize: 64, Workers: 2, Delivery: ExactlyOnce},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: tx, TxSink: tx, DeadLetter: &memSink{}})
	got := (&memSink{rows: tx.rows}).ints()
	slices.Sort(got)
	if !slices.Equal(got, seq(1000)) || tx.pos != "1000" || tx.calls < 1 {
		t.Fatalf("%d rows for 1000 ids (each once wanted), position %q, %d commits", len(got), tx.pos, tx.calls)
	}
}

func TestShutdownDrainsAndCommitsWhatWasRead(t *testing.T) {
	t.Parallel()
	src := newSource(100000, 0)
	src.unbounded = true
	sink := &memSink{}
	ck := &memCheckpoints{}
	r, err := New(Config{Name: "s", BatchSize: 100, Workers: 2},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: sink, DeadLetter: &memSink{}, Checkpoints: ck})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for r.Stats().Committed < 5000 {
		goruntime.Gosched()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("a requested stop is not an error: %v", err)
	}
	s := r.Stats()
	if s.Read != s.Committed || s.InFlight != 0 {
		t.Fatalf("read %d, committed %d after drain", s.Read, s.Committed)
	}
	pos, _ := strconv.Atoi(ck.pos["s"])
	if int64(pos) != s.Committed || len(sink.ints()) != pos {
		t.Fatalf("position %d, committed %d, sink %d", pos, s.Committed, len(sink.ints()))
	}
}

func TestPositionNeverPassesAnUnfinishedBatch(t *testing.T) {
	t.Parallel()
	src := newSource(300, 0)
	src.unbounded = true
	later := make(chan struct{})
	flow := func(ctx context.Context, rows []any) ([]any, []Rejected, error) {
		switch rows[0].(int) {
		case 101: // stuck until the drain timeout cancels it
			<-later
			<-ctx.Done()
			return nil, nil, ctx.Err()
		case 201:
			defer close(later) // finishes while 101 is stuck
		}
		return slices.Clone(rows), nil, nil
	}
	ck := &memCheckpoints{}
	r, err := New(Config{Name: "s", BatchSize: 100, Workers: 2, DrainTimeout: 50 * time.Millisecond, Sleep: (&noSleep{}).sleep},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: &memSink{}, DeadLetter: &memSink{}, Checkpoints: ck})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-later
	for r.Stats().Read < 300 {
		goruntime.Gosched()
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrNotDrained) {
		t.Fatalf("run: %v, want ErrNotDrained", err)
	}
	if ck.pos["s"] != "100" || !slices.Equal(src.acked, seq(100)) {
		t.Fatalf("position %q, %d acked; want position 100 and ids 1..100 acked", ck.pos["s"], len(src.acked))
	}
	if len(src.nacked) != 200 {
		t.Fatalf("%d messages returned to the source, want 200 (101..300)", len(src.nacked))
	}
}

// failingSource marks every tenth message Failed, as a broker that gave up
// redelivering it would.
type failingSource struct{ *memSource }

func (s failingSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	msgs, err := s.memSource.Read(ctx, max)
	for _, m := range msgs {
		if m.Payload.(int)%10 == 0 {
			m.Failed = errors.New("broker gave up")
		}
	}
	return msgs, err
}

func TestFailedMessagesGoStraightToDeadLetters(t *testing.T) {
	t.Parallel()
	src := newSource(100, 0)
	var ran atomic.Int64
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		for _, r := range rows {
			if r.(int)%10 == 0 {
				return nil, nil, errors.New("a failed message reached the flow")
			}
		}
		ran.Add(int64(len(rows)))
		return slices.Clone(rows), nil, nil
	}
	dlq := &memSink{}
	run(t, Config{Name: "s", BatchSize: 25}, Parts{Source: failingSource{src}, NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: &memSink{}, DeadLetter: dlq})
	if got := dlq.ints(); len(got) != 10 || ran.Load() != 90 || !slices.Equal(src.acked, seq(100)) {
		t.Fatalf("dead letters %v, %d rows ran, %d acked", got, ran.Load(), len(src.acked))
	}
	if dl := dlq.rows[0].(*stream.DeadLetter); dl.Error != "broker gave up" || dl.Attempts != 0 {
		t.Fatalf("dead letter %+v", dl)
	}
}

// idSource delivers rows 1..n with message IDs and no positions, as a
// broker does.
type idSource struct{ *memSource }

func (s idSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	msgs, err := s.memSource.Read(ctx, max)
	for _, m := range msgs {
		m.ID, m.Position = strconv.Itoa(m.Payload.(int)), ""
	}
	return msgs, err
}

// racingTxSink fails the first commit holding id 55, as if another
// consumer had committed that message in between.
type racingTxSink struct {
	txSink
	raced atomic.Bool
}

func (s *racingTxSink) CommitBatch(ctx context.Context, name, pos string, ids []string, rows []any) error {
	if slices.Contains(ids, "55") && s.raced.CompareAndSwap(false, true) {
		return fmt.Errorf("inbox: %w", stream.ErrAlreadyCommitted)
	}
	return s.txSink.CommitBatch(ctx, name, pos, ids, rows)
}

func TestAConcurrentCommitReturnsTheBatchInsteadOfStalling(t *testing.T) {
	t.Parallel()
	src := newSource(200, 0)
	tx := &racingTxSink{}
	run(t, Config{Name: "s", BatchSize: 10, Delivery: ExactlyOnce},
		Parts{Source: idSource{src}, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: tx, TxSink: tx, DeadLetter: &memSink{}})
	if !tx.raced.Load() {
		t.Fatal("the conflict never happened")
	}
	// The commit holding 55 went back to the source whole; every other
	// batch, before and after it, committed.
	if !slices.Contains(src.nacked, 55) || len(src.acked)+len(src.nacked) != 200 || len(tx.rows) != len(src.acked) {
		t.Fatalf("returned %v; acked %d, committed %d rows", src.nacked, len(src.acked), len(tx.rows))
	}
	if !slices.Contains(src.acked, 200) {
		t.Fatal("commits stopped after the conflict")
	}
}

// dupSource delivers rows 1..n with IDs, each twice in the same read (a
// broker redelivering a message that still waits in the client's buffer)
// and once more in the next read.
type dupSource struct {
	memSource
}

func (s *dupSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= len(s.rows) {
		return nil, io.EOF
	}
	var out []*stream.Message
	if s.next > 0 {
		prev := s.rows[s.next-1]
		out = append(out, &stream.Message{Payload: prev, ID: strconv.Itoa(prev)})
	}
	for len(out) < max && s.next < len(s.rows) {
		id := s.rows[s.next]
		out = append(out, &stream.Message{Payload: id, ID: strconv.Itoa(id)}, &stream.Message{Payload: id, ID: strconv.Itoa(id)})
		s.next++
	}
	return out, nil
}

func TestExactlyOnceProcessesOneCopyOfAMessageDeliveredTwiceInARead(t *testing.T) {
	t.Parallel()
	src := &dupSource{memSource: *newSource(500, 0)}
	tx := &txSink{}
	run(t, Config{Name: "s", BatchSize: 16, Workers: 2, Delivery: ExactlyOnce},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: tx, TxSink: tx, DeadLetter: &memSink{}})
	got := (&memSink{rows: tx.rows}).ints()
	slices.Sort(got)
	if !slices.Equal(got, seq(500)) {
		t.Fatalf("%d rows for 500 ids, each once wanted: %v", len(got), got[:min(len(got), 20)])
	}
}
