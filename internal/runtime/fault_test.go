package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// flakySource fails reads number fail..fail+outage-1 (counted from 1) with
// err, as a source whose server restarts.
type flakySource struct {
	*memSource
	mu           sync.Mutex
	reads        int
	fail, outage int
	err          error
	duringOutage func() // called at the last failing read
}

func (s *flakySource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	s.mu.Lock()
	s.reads++
	n := s.reads
	s.mu.Unlock()
	if n >= s.fail && n < s.fail+s.outage {
		if n == s.fail+s.outage-1 && s.duringOutage != nil {
			s.duringOutage()
		}
		return nil, s.err
	}
	return s.memSource.Read(ctx, max)
}

func TestSourceOutageIsRetriedUntilItEnds(t *testing.T) {
	t.Parallel()
	src := &flakySource{memSource: newSource(1000, 0), fail: 3, outage: 5, err: errors.New("connection refused")}
	var r *Runner
	var downMid error
	src.duringOutage = func() { downMid = r.Down() }
	sleeper := &noSleep{}
	sink := &memSink{}
	r, err := New(Config{Name: "s", BatchSize: 100, SourceName: "redis", Sleep: sleeper.sleep},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: sink, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatalf("an outage of the source ended the run: %v", err)
	}
	got := sink.ints()
	slices.Sort(got)
	if !slices.Equal(got, seq(1000)) {
		t.Fatalf("sink holds %d rows, want 1..1000", len(got))
	}
	if s := r.Stats(); s.SourceErrors != 5 {
		t.Fatalf("source errors %d, want 5", s.SourceErrors)
	}
	if downMid == nil || !strings.Contains(downMid.Error(), "source redis unavailable") {
		t.Fatalf("during the outage Down() = %v", downMid)
	}
	if err := r.Down(); err != nil {
		t.Fatalf("after the outage Down() = %v", err)
	}
	if len(sleeper.waits) != 5 {
		t.Fatalf("%d backoff waits, want one per failed read (5)", len(sleeper.waits))
	}
}

func TestFatalSourceErrorEndsTheRun(t *testing.T) {
	t.Parallel()
	src := &flakySource{memSource: newSource(1000, 0), fail: 2, outage: 1000, err: stream.Fatal(errors.New("no such stream"))}
	r, err := New(Config{Name: "s", BatchSize: 100, SourceName: "redis", Sleep: (&noSleep{}).sleep},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: &memSink{}, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if !stream.IsFatal(err) || !strings.Contains(err.Error(), "source redis: no such stream") {
		t.Fatalf("run: %v, want the fatal source error", err)
	}
	if s := r.Stats(); s.Committed != 100 {
		t.Fatalf("committed %d, want the first batch (100)", s.Committed)
	}
}

// pickySink refuses rows for which bad is true (the whole write fails, as
// a SQL insert does), and fails every write while down.
type pickySink struct {
	memSink
	bad     func(row any) bool
	refuse  func(error) error // marks the refusal (stream.Permanent, or not)
	down    bool
	onSleep func()
}

// sleep brings the sink back: it is down until the runner's first wait.
func (s *pickySink) sleep(ctx context.Context, _ time.Duration) error {
	s.mu.Lock()
	s.down = false
	s.mu.Unlock()
	if s.onSleep != nil {
		s.onSleep()
	}
	return ctx.Err()
}

func (s *pickySink) Write(ctx context.Context, rows []any) error {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return errors.New("connection reset by peer")
	}
	if i := slices.IndexFunc(rows, s.bad); i >= 0 {
		return s.refuse(errors.New("invalid input syntax for type bigint"))
	}
	return s.memSink.Write(ctx, rows)
}

func TestSinkRejectionIsSplitDownToTheRow(t *testing.T) {
	t.Parallel()
	// A refusal marked permanent is the row's fault: dead-lettered. An
	// unmarked one is the sink's state (a full disk): retried for ever.
	marks := map[string]func(error) error{"permanent": stream.Permanent, "unmarked": func(err error) error { return err }}
	for name, mark := range marks {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sink := &pickySink{bad: func(row any) bool { return row.(int) == 2001 }, refuse: mark, down: true}
			if name == "unmarked" {
				// The row is refused until the runner has waited 5 times.
				var waited atomic.Int32
				bad := sink.bad
				sink.bad = func(row any) bool { return bad(row) && waited.Load() < 5 }
				sink.onSleep = func() { waited.Add(1) }
			}
			dlq := &memSink{}
			var waits atomic.Int32
			sleep := func(ctx context.Context, d time.Duration) error {
				waits.Add(1)
				return sink.sleep(ctx, d)
			}
			r := run(t, Config{Name: "s", BatchSize: 1000, SinkName: "pg", Sleep: sleep},
				Parts{Source: newSource(4999, 0), NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: sink, DeadLetter: dlq})
			got := sink.ints()
			slices.Sort(got)
			if name == "unmarked" {
				if !slices.Equal(got, seq(4999)) || len(dlq.rows) != 0 || waits.Load() != 5 {
					t.Fatalf("sink holds %d rows, %d dead letters, %d waits; want every row written after 5 waits, none dead-lettered", len(got), len(dlq.rows), waits.Load())
				}
				return
			}
			want := slices.DeleteFunc(seq(4999), func(id int) bool { return id == 2001 })
			if !slices.Equal(got, want) {
				t.Fatalf("sink holds %d rows, want every row but 2001 (%d)", len(got), len(want))
			}
			if len(dlq.rows) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dlq.rows))
			}
			dl := dlq.rows[0].(*stream.DeadLetter)
			if dl.Func != "sink pg" || !strings.Contains(dl.Error, "bigint") || string(dl.Payload.(json.RawMessage)) != "2001" {
				t.Fatalf("dead letter %+v", dl)
			}
			if s := r.Stats(); s.SinkErrors != 1 || s.DeadLettered != 1 {
				t.Fatalf("stats %+v: want the outage counted once, 1 dead letter", s)
			}
			if waits.Load() != 1 {
				t.Fatalf("%d waits, want only the outage's", waits.Load())
			}
		})
	}
}

func TestDeterministicFailuresAreDeadLetteredWithoutBackoff(t *testing.T) {
	t.Parallel()
	// Every 100th row is rejected by the second function (a row that
	// cannot be traced to its message), every 100th+50 fails the run with
	// an error marked permanent.
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		var rej []Rejected
		out := make([]any, 0, len(rows))
		for i, r := range rows {
			switch id := r.(int); {
			case id%100 == 50:
				return nil, nil, stream.Permanent(errors.New("cannot convert"))
			case id%100 == 0:
				rej = append(rej, Rejected{Func: "Calc", Layer: 1, Index: i, Err: errors.New("division by zero")})
			default:
				out = append(out, id)
			}
		}
		return out, rej, nil
	}
	sleeper := &noSleep{}
	sink, dlq := &memSink{}, &memSink{}
	r := run(t, Config{Name: "s", BatchSize: 1000, Sleep: sleeper.sleep},
		Parts{Source: newSource(10000, 0), NewFlow: func(int) Flow { return funcFlow(flow) }, Sink: sink, DeadLetter: dlq})
	if len(sleeper.waits) != 0 {
		t.Fatalf("%d backoff waits for deterministic failures, want none", len(sleeper.waits))
	}
	if got := len(sink.rows); got != 9800 {
		t.Fatalf("sink holds %d rows, want 9800", got)
	}
	if s := r.Stats(); s.DeadLettered != 200 || s.Retries != 0 {
		t.Fatalf("stats %+v: want 200 dead letters and no retries", s)
	}
	for _, row := range dlq.rows {
		if dl := row.(*stream.DeadLetter); dl.Attempts != 1 {
			t.Fatalf("dead letter after %d attempts, want 1: %+v", dl.Attempts, dl)
		}
	}
}

func TestEveryRowFailingTheSameWayStopsTheRun(t *testing.T) {
	t.Parallel()
	// A typo among malformed lines: every row fails, in two ways.
	typo := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		rej := make([]Rejected, len(rows))
		for i := range rows {
			rej[i] = Rejected{Func: "Total", Index: i, Err: errors.New("unknown name prcie")}
			if i%7 == 3 {
				rej[i] = Rejected{Func: "Parse", Index: i, Err: errors.New("not JSON")}
			}
		}
		return nil, rej, nil
	}
	// A source that answers per request (stream.DeadLetterNotifier, such
	// as http) has no limit unless the stream sets one.
	cases := []struct {
		name     string
		limit    int
		notifies bool
		fails    bool
	}{{"default", 0, false, true}, {"off", -1, false, false},
		{"notifier default", 0, true, false}, {"notifier set", 100, true, true}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var src stream.Source = newSource(5000, 0)
			if c.notifies {
				src = &notifySource{memSource: newSource(5000, 0)}
			}
			r, err := New(Config{Name: "s", BatchSize: 50, MaxConsecutiveFailures: c.limit, Sleep: (&noSleep{}).sleep},
				Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(typo) }, DeadLetter: &memSink{}})
			if err != nil {
				t.Fatal(err)
			}
			err = r.Run(context.Background())
			s := r.Stats()
			if !c.fails {
				if err != nil || s.DeadLettered != 5000 {
					t.Fatalf("run: %v, %d dead letters; want all 5000 dead-lettered", err, s.DeadLettered)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), `100 messages in a row failed and none succeeded, the last in function`) {
				t.Fatalf("run: %v", err)
			}
			if s.DeadLettered < 100 || s.Read > 100+50*int64(2*1+1+1) {
				t.Fatalf("stats %+v: want the run stopped soon after 100 dead letters", s)
			}
		})
	}
}

// TestFatalFlowErrorEndsTheRun: a flow run failing with an error marked
// fatal (a Load's missing table) ends the run at once, with no retry, no
// dead letter and nothing committed.
func TestFatalFlowErrorEndsTheRun(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	missing := func(context.Context, []any) ([]any, []Rejected, error) {
		runs.Add(1)
		return nil, nil, fmt.Errorf("load: %w", stream.Fatal(errors.New("no such table: users")))
	}
	dlq := &memSink{}
	r, err := New(Config{Name: "s", BatchSize: 100, Sleep: (&noSleep{}).sleep},
		Parts{Source: newSource(1000, 0), NewFlow: func(int) Flow { return funcFlow(missing) }, Sink: &memSink{}, DeadLetter: dlq})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if !stream.IsFatal(err) || !strings.Contains(err.Error(), "no such table: users") {
		t.Fatalf("run: %v, want the fatal flow error", err)
	}
	s := r.Stats()
	if s.Committed != 0 || s.Retries != 0 || s.DeadLettered != 0 || len(dlq.ints()) != 0 {
		t.Fatalf("stats %+v, dead letters %d: want nothing committed, retried or dead-lettered", s, len(dlq.ints()))
	}
	if n := runs.Load(); n > 10 {
		t.Fatalf("%d flow runs: the fatal error was retried", n)
	}
}
