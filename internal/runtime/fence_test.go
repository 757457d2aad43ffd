package runtime

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// fencedSink is txSink with a fenced commit. lose makes every other commit
// report a lost connection after committing, with Position failing just
// after (so that the runner cannot read the commit back and tries it
// again); refuse is a row value it refuses as permanent.
type fencedSink struct {
	txSink
	lose, refuse int
	calls        int
	posFails     bool
}

func (s *fencedSink) CommitBatchAfter(ctx context.Context, name, from, pos string, ids []string, rows []any) error {
	s.mu.Lock()
	if s.pos != from {
		s.mu.Unlock()
		return &stream.FenceError{Stream: name, Found: s.pos, Expected: from}
	}
	if s.refuse != 0 && slices.Contains(rows, any(s.refuse)) {
		s.mu.Unlock()
		return stream.Permanent(errors.New("refused"))
	}
	s.mu.Unlock()
	if pos == "" {
		pos = s.pos // a commit without a position keeps it
	}
	if err := s.txSink.CommitBatch(ctx, name, pos, ids, rows); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.lose > 0 && s.calls%s.lose == 1 {
		s.posFails = true
		return errors.New("commit: invalid connection")
	}
	return nil
}

func (s *fencedSink) Position(ctx context.Context, name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.posFails {
		s.posFails = false
		return "", errors.New("connection refused")
	}
	return s.pos, nil
}

func fencedRun(src *memSource, tx *fencedSink, resume string) (*Runner, error) {
	r, err := New(Config{Name: "s", BatchSize: 64, Workers: 2, Delivery: ExactlyOnce, Fence: true, Resume: resume, Sleep: (&noSleep{}).sleep},
		Parts{Source: src, NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: tx, TxSink: tx, DeadLetter: &memSink{}})
	if err != nil {
		return nil, err
	}
	return r, r.Run(context.Background())
}

// A runner whose stream another process committed since it started ends
// with the fence's error and commits nothing.
func TestFencedCommitStopsASecondWriter(t *testing.T) {
	t.Parallel()
	tx := &fencedSink{}
	tx.pos = "40" // committed by another process after this one read ""
	_, err := fencedRun(newSource(1000, 7), tx, "")
	var fe *stream.FenceError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "another process committed stream s (position 40, expected none): two runs on one stream; stop one") {
		t.Fatalf("run: %v", err)
	}
	if len(tx.rows) != 0 || tx.pos != "40" {
		t.Fatalf("%d rows committed, position %q", len(tx.rows), tx.pos)
	}
	// Resuming where the stream stands, it runs.
	src := newSource(1000, 7)
	src.next = 40
	if _, err := fencedRun(src, tx, "40"); err != nil || len(tx.rows) != 960 || tx.pos != "1000" {
		t.Fatalf("resumed run: %v, %d rows, position %q", err, len(tx.rows), tx.pos)
	}
}

// A fenced commit whose answer was lost, and that could not be read back,
// is tried again: the fence then finds the commit's own position, which is
// no second writer.
func TestFencedCommitWhoseAnswerWasLostIsNoSecondWriter(t *testing.T) {
	t.Parallel()
	tx := &fencedSink{lose: 2}
	if _, err := fencedRun(newSource(1000, 7), tx, ""); err != nil {
		t.Fatal(err)
	}
	got := (&memSink{rows: tx.rows}).ints()
	slices.Sort(got)
	if !slices.Equal(got, seq(1000)) || tx.pos != "1000" || tx.calls < 2 {
		t.Fatalf("%d rows for 1000 ids (each once wanted), position %q, %d commits", len(got), tx.pos, tx.calls)
	}
}

// A batch with a row the sink refuses is committed in parts, fenced too;
// the commits after it expect its position.
func TestFencedCommitAfterIsolatingARefusedRow(t *testing.T) {
	t.Parallel()
	tx := &fencedSink{refuse: 100}
	r, err := fencedRun(newSource(1000, 7), tx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := (&memSink{rows: tx.rows}).ints()
	slices.Sort(got)
	if want := slices.Delete(seq(1000), 99, 100); !slices.Equal(got, want) || tx.pos != "1000" || r.Stats().DeadLettered != 1 {
		t.Fatalf("%d rows, position %q, %d dead-lettered", len(got), tx.pos, r.Stats().DeadLettered)
	}
}
