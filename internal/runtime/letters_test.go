package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

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
				if s := r.Stats(); s.Committed != 200 {
					t.Fatalf("stats %+v", s)
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
