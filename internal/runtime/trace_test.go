package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// notifySource is a memSource that records which messages it was told
// were dead-lettered, and by which function.
type notifySource struct {
	*memSource
	mu   sync.Mutex
	dead map[int][]string // payload -> func of each letter
}

func (s *notifySource) DeadLettered(_ context.Context, msgs []*stream.Message, letters []*stream.DeadLetter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead == nil {
		s.dead = map[int][]string{}
	}
	for i, m := range msgs {
		s.dead[m.Payload.(int)] = append(s.dead[m.Payload.(int)], letters[i].Func)
	}
}

// twoRowsFlow makes two rows of each message v, 10v and 10v+1, in its
// first function; its second rejects both rows of a v ending in 3. It
// counts its runs.
func twoRowsFlow(runs *atomic.Int64) Flow {
	return funcFlow(func(_ context.Context, rows []any) ([]any, []Rejected, error) {
		runs.Add(1)
		var mid []any
		for _, r := range rows {
			mid = append(mid, 10*r.(int), 10*r.(int)+1)
		}
		var out []any
		var rej []Rejected
		for i, r := range mid {
			if r.(int)/10%10 == 3 {
				rej = append(rej, Rejected{Func: "Second", Layer: 1, Index: i, Row: r, Err: errors.New("not a number")})
				continue
			}
			out = append(out, r)
		}
		return out, rej, nil
	})
}

// refuses is the sink's rule: it refuses row 10v+1 of a v ending in 7.
func refuses(row any) bool { return row.(int)%10 == 1 && row.(int)/10%10 == 7 }

// refusingSink writes a batch whole, or refuses it whole with a permanent
// error when it holds a row refuses refuses.
type refusingSink struct{ memSink }

func (s *refusingSink) Write(ctx context.Context, rows []any) error {
	if slices.ContainsFunc(rows, refuses) {
		return stream.Permanent(fmt.Errorf("refused"))
	}
	return s.memSink.Write(ctx, rows)
}

// refusingTxSink is a txSink that refuses a batch as refusingSink does.
type refusingTxSink struct{ txSink }

func (s *refusingTxSink) CommitBatch(ctx context.Context, name, pos string, ids []string, rows []any) error {
	if slices.ContainsFunc(rows, refuses) {
		return stream.Permanent(fmt.Errorf("refused"))
	}
	return s.txSink.CommitBatch(ctx, name, pos, ids, rows)
}

// A source that answers per message learns of every message dead-lettered
// past the first function or by the sink, in batches of many messages, in
// both delivery modes; every other row is written once. A source that does
// not ask costs no run beyond one a batch.
func TestEveryDeadRowIsTracedToItsMessage(t *testing.T) {
	t.Parallel()
	const n, batch = 500, 50
	want := map[int][]string{}
	for v := 1; v <= n; v++ {
		switch v % 10 {
		case 3:
			want[v] = []string{"Second", "Second"}
		case 7:
			want[v] = []string{"sink out"}
		}
	}
	for _, delivery := range []string{AtLeastOnce, ExactlyOnce} {
		for _, notify := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/notify=%v", delivery, notify), func(t *testing.T) {
				t.Parallel()
				ms := newSource(n, 0)
				var src stream.Source = ms
				ns := &notifySource{memSource: ms}
				if notify {
					src = ns
				}
				var runs atomic.Int64
				parts := Parts{Source: src, NewFlow: func(int) Flow { return twoRowsFlow(&runs) }, DeadLetter: &memSink{}}
				var written func() []any
				if delivery == ExactlyOnce {
					tx := &refusingTxSink{}
					parts.Sink, parts.TxSink = tx, tx
					written = func() []any { return tx.rows }
				} else {
					s := &refusingSink{}
					parts.Sink = s
					written = func() []any { return s.rows }
				}
				r := run(t, Config{Name: "s", BatchSize: batch, Workers: 2, Delivery: delivery, SinkName: "out"}, parts)
				var got []int
				for _, row := range written() {
					got = append(got, row.(int))
				}
				slices.Sort(got)
				var wantRows []int
				for v := 1; v <= n; v++ {
					for _, row := range []int{10 * v, 10*v + 1} {
						if v%10 != 3 && !refuses(row) {
							wantRows = append(wantRows, row)
						}
					}
				}
				if !slices.Equal(got, wantRows) {
					t.Fatalf("the sink holds %d rows, want %d", len(got), len(wantRows))
				}
				if st := r.Stats(); st.DeadLettered != int64(n/10*3) {
					t.Fatalf("%d dead letters, want %d", st.DeadLettered, n/10*3)
				}
				if !notify {
					if runs.Load() != n/batch {
						t.Fatalf("%d runs, want one a batch (%d)", runs.Load(), n/batch)
					}
					return
				}
				if runs.Load() <= n/batch {
					t.Fatalf("%d runs: the messages were not run again to trace them", runs.Load())
				}
				if !maps.EqualFunc(ns.dead, want, slices.Equal) {
					t.Fatalf("the source was told of %d messages, want %d: %v", len(ns.dead), len(want), ns.dead)
				}
			})
		}
	}
}

// A message that fails when run again alone to trace a row the sink
// refused leaves the refused rows of its batch (also those of messages that
// ran alone) dead-lettered but unnamed, with a warning; the other rows are
// written.
func TestRefusedRowOfAMessageFailingAloneIsDeadLetteredUnnamed(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{AtLeastOnce, ExactlyOnce} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			src := &notifySource{memSource: newSource(20, 0)}
			flow := funcFlow(func(_ context.Context, rows []any) ([]any, []Rejected, error) {
				if len(rows) == 1 && rows[0] == 17 {
					return nil, nil, errors.New("flaky alone")
				}
				var out []any
				for _, r := range rows {
					out = append(out, 10*r.(int)+1) // 71 and 171 are refused
				}
				return out, nil, nil
			})
			var log bytes.Buffer
			dlq := &memSink{}
			parts := Parts{Source: src, NewFlow: func(int) Flow { return flow }, DeadLetter: dlq}
			var written func() []any
			if delivery == ExactlyOnce {
				tx := &refusingTxSink{}
				parts.Sink, parts.TxSink = tx, tx
				written = func() []any { return tx.rows }
			} else {
				s := &refusingSink{}
				parts.Sink = s
				written = func() []any { return s.rows }
			}
			run(t, Config{Name: "s", BatchSize: 20, Delivery: delivery, SinkName: "out",
				Logger: slog.New(slog.NewTextHandler(&log, nil))}, parts)
			if len(written()) != 18 {
				t.Fatalf("%d rows written, want 18", len(written()))
			}
			if len(dlq.rows) != 2 {
				t.Fatalf("dead letters %v, want the two refused rows", dlq.rows)
			}
			if !maps.EqualFunc(src.dead, map[int][]string{}, slices.Equal) {
				t.Fatalf("the source was told %v, want nothing", src.dead)
			}
			if !strings.Contains(log.String(), "flaky alone") {
				t.Fatalf("no warning in the log:\n%s", log.String())
			}
		})
	}
}
