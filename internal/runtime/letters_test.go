package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// ownPositions is a memSource that says each message carries its own
// position (it does).
type ownPositions struct{ *memSource }

func (ownPositions) PositionsPerMessage() bool { return true }

// tailSink is a dead-letter sink that reads back what it holds, as the
// default dead-letter file does.
type tailSink struct{ memSink }

func (s *tailSink) Tail(n int, fn func([]byte)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rows[max(0, len(s.rows)-n):] {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fn(b)
	}
	return nil
}

// A message processed again (a crash before its position was saved or it
// was acknowledged) has dead letters with the same identities, and they
// are not written again to a dead-letter sink that tells the last ones
// written. Without an identity of its messages (neither an ID nor a
// position of their own), a source's dead letters are told apart.
func TestDeadLettersOfMessagesProcessedAgainAreNotWrittenTwice(t *testing.T) {
	t.Parallel()
	flow := func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		var out []any
		var rej []Rejected
		for i, r := range rows {
			if r.(int)%10 == 0 {
				rej = append(rej, Rejected{Func: "Calc", Index: i, Err: errors.New("poison " + strconv.Itoa(r.(int)))})
				continue
			}
			out = append(out, r)
		}
		return out, rej, nil
	}
	for _, tc := range []struct {
		name   string
		source func() stream.Source
		want   int
	}{
		{"own positions", func() stream.Source { return ownPositions{newSource(200, 0)} }, 20},
		{"message IDs", func() stream.Source { return idSource{newSource(200, 0)} }, 20},
		{"no identity", func() stream.Source { return newSource(200, 0) }, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dlq := &tailSink{}
			ids := map[string]bool{}
			for range 2 { // the second run reads everything again
				r := run(t, Config{Name: "s", BatchSize: 30},
					Parts{Source: tc.source(), NewFlow: func(int) Flow { return funcFlow(flow) }, DeadLetter: dlq})
				// Dead letters left out as written already are counted:
				// their messages were dead-lettered all the same.
				if s := r.Stats(); s.Committed != 200 || s.DeadLettered != 20 {
					t.Fatalf("stats %+v, want 200 committed and 20 dead-lettered", s)
				}
			}
			for _, row := range dlq.rows {
				dl := row.(*stream.DeadLetter)
				if len(dl.LetterID) != 32 || ids[dl.LetterID] {
					t.Fatalf("letter ID %q empty or repeated", dl.LetterID)
				}
				ids[dl.LetterID] = true
			}
			if len(dlq.rows) != tc.want {
				t.Fatalf("%d dead letters after two runs over 20 poison rows, want %d", len(dlq.rows), tc.want)
			}
		})
	}
}

// The runner remembers at least the last 100,000 dead letters written,
// forgetting the oldest first.
func TestRecentLettersKeepTheLastOnes(t *testing.T) {
	t.Parallel()
	r, err := New(Config{Name: "s"}, Parts{Source: newSource(0, 0), NewFlow: func(int) Flow { return funcFlow(passAll) }, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	if w := r.recentWindow(); w < 100000 {
		t.Fatalf("window %d, want at least 100,000", w)
	}
	c := newRecentLetters(3)
	for _, id := range []string{"a", "b", "c", "a", "d"} {
		c.add(id)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": true} {
		if c.has(id) != want {
			t.Errorf("has(%q) = %v, want %v", id, !want, want)
		}
	}
}

// failingDLQ fails every write with err.
type failingDLQ struct {
	err    error
	writes atomic.Int64
}

func (s *failingDLQ) Write(context.Context, []any) error {
	s.writes.Add(1)
	return s.err
}

// poisonAll rejects every row.
func poisonAll(_ context.Context, rows []any) ([]any, []Rejected, error) {
	rej := make([]Rejected, len(rows))
	for i := range rows {
		rej[i] = Rejected{Func: "Calc", Index: i, Err: errors.New("poison")}
	}
	return nil, rej, nil
}

// A dead-letter sink that refuses the dead letters for good (an error
// marked stream.Permanent, or stream.Fatal) ends the run with that error,
// after one attempt, instead of stalling the stream for ever; nothing is
// acknowledged.
func TestADeadLetterSinkThatRefusesForGoodEndsTheRun(t *testing.T) {
	t.Parallel()
	for _, mark := range []func(error) error{stream.Permanent, stream.Fatal} {
		src := newSource(50, 0)
		dlq := &failingDLQ{err: mark(errors.New("unsupported type"))}
		r, err := New(Config{Name: "s", BatchSize: 10, DeadLetterName: "dl", Sleep: (&noSleep{}).sleep},
			Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(poisonAll) }, DeadLetter: dlq, Checkpoints: &memCheckpoints{}})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "dead-letter sink dl refused") || !strings.Contains(err.Error(), "unsupported type") {
			t.Fatalf("run: %v, want the dead-letter sink's refusal", err)
		}
		if s := r.Stats(); s.Committed != 0 || s.DeadLettered != 0 || len(src.acked) != 0 {
			t.Fatalf("stats %+v, acked %d: nothing may commit", s, len(src.acked))
		}
		if n := dlq.writes.Load(); n != 1 {
			t.Fatalf("%d writes, want 1 (no retry)", n)
		}
	}
}

// A dead-letter sink that is down (a transient error) is retried; when
// the drain times out meanwhile, Run says the batches were not drained,
// and why, instead of reporting a clean stop. The log names the sink once.
func TestBatchesStuckOnTheDeadLetterSinkAreNotDrained(t *testing.T) {
	t.Parallel()
	src := newSource(50, 0)
	src.unbounded = true
	dlq := &failingDLQ{err: errors.New("connection refused")}
	var log strings.Builder
	var logMu sync.Mutex
	r, err := New(Config{Name: "s", BatchSize: 10, DeadLetterName: "dl", DrainTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&lockedBuilder{b: &log, mu: &logMu}, nil))},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(poisonAll) }, DeadLetter: dlq, Checkpoints: &memCheckpoints{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for dlq.writes.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err = <-done
	if !errors.Is(err, ErrNotDrained) || !strings.Contains(err.Error(), "dead-letter sink dl unavailable") {
		t.Fatalf("run: %v, want ErrNotDrained naming the dead-letter sink", err)
	}
	if s := r.Stats(); s.Committed != 0 || len(src.acked) != 0 {
		t.Fatalf("stats %+v: nothing was committed", s)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if l := log.String(); !strings.Contains(l, "dead-letter sink dl unavailable") || strings.Contains(l, "dead-letter sink dead-letter sink") {
		t.Fatalf("log:\n%s", l)
	}
}

// lockedBuilder is a log destination written from several goroutines.
type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
