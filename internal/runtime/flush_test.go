package runtime

import (
	"context"
	"sync"
	"testing"
	"time"
)

// summingFlow keeps a sum across runs, as a window does: runs add their
// rows and output nothing; Flush(true) outputs the sum, Flush(false) the
// number of ticks so far as a negative row.
type summingFlow struct {
	mu    *sync.Mutex
	sum   *int
	ticks *int
}

func (f summingFlow) Run(_ context.Context, rows []any) ([]any, []Rejected, error) {
	time.Sleep(time.Millisecond) // let the other workers' parts overlap
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range rows {
		*f.sum += r.(int)
	}
	return nil, nil, nil
}

func (f summingFlow) Flush(_ context.Context, final bool) ([]any, []Rejected, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if final {
		return []any{*f.sum}, nil, nil
	}
	*f.ticks++
	return nil, nil, nil
}

// TestFlushAtEndSeesEveryRow runs 1..2000 on four workers, each keeping a
// sum of its own (as each keeps the windows of its own keys), with a final
// flush: it runs on every worker, after every epoch was processed, and
// their rows reach the sink before Run returns.
func TestFlushAtEndSeesEveryRow(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	sums, ticks := make([]int, 4), 0
	src, sink := newSource(2000, 0), &memSink{}
	r, err := New(Config{Name: "f", BatchSize: 50, Workers: 4, FlushAtEnd: true},
		Parts{Source: src, NewFlow: func(i int) Flow { return summingFlow{&mu, &sums[i%4], &ticks} }, Sink: sink, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, total := sink.ints(), 0
	for _, n := range got {
		total += n
	}
	if len(got) != 4 || total != 2000*2001/2 {
		t.Fatalf("sink %v, want one row per worker, summing to every row once", got)
	}
}

// TestTickWhileIdle: an unbounded source that gives nothing makes the
// runner call Flush(false) about every Tick.
func TestTickWhileIdle(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sum, ticks int
	src := newSource(10, 0)
	src.unbounded = true
	r, err := New(Config{Name: "f", Tick: 10 * time.Millisecond},
		Parts{Source: src, NewFlow: func(int) Flow { return summingFlow{&mu, &sum, &ticks} }, Sink: &memSink{}, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n, s := ticks, sum
		mu.Unlock()
		if n >= 3 && s == 55 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ticks, sum %d", n, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Committed != 10 || s.Batches != 1 {
		t.Errorf("idle ticks that closed nothing were committed as batches: %+v", s)
	}
}
