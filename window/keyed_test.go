package window

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestChangesRebuild keeps an operator's state as entries written from
// Changes only (Put, or Delete for a gone group), and after every batch
// builds a new operator from the Clock and those entries: it must hold
// exactly the uninterrupted operator's window-groups (compared by their
// encodings), and, fed the rest, emit what the uninterrupted one emits.
func TestChangesRebuild(t *testing.T) {
	t.Parallel()
	for _, spec := range []Spec{
		{Type: Tumbling, Size: time.Second, Lateness: 300 * time.Millisecond, Late: Update},
		{Type: Tumbling, Size: time.Second, Lateness: 300 * time.Millisecond, Late: DeadLetter},
		{Type: Sliding, Size: time.Second, Slide: 250 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: Update},
		{Type: Session, Gap: 300 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: Update},
		{Type: Session, Gap: 300 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: Drop},
	} {
		t.Run(string(spec.Type)+"/"+string(spec.Late), func(t *testing.T) {
			t.Parallel()
			seed := time.Now().UnixNano()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(uint64(seed), 11))
			evs := genEvents(rng, 3000, 30, 10, 500)
			var batches [][]map[string]any
			for i := 0; i < len(evs); i += 50 {
				var b []map[string]any
				for _, e := range evs[i:min(i+50, len(evs))] {
					b = append(b, e.row)
				}
				batches = append(batches, b)
			}
			o := newOp(t, spec)
			o.Track(true)
			entries := map[Group][]byte{}
			writes := 0
			apply := func() {
				if err := o.Changes(func(g Group, data []byte) error {
					writes++
					if data == nil {
						delete(entries, g)
					} else {
						entries[g] = slices.Clone(data)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			rebuild := func() *Operator {
				r := newOp(t, spec)
				if err := r.SetClock(o.Clock()); err != nil {
					t.Fatal(err)
				}
				for _, data := range entries {
					if err := r.LoadGroup(data); err != nil {
						t.Fatal(err)
					}
				}
				return r
			}
			all := func(x *Operator) map[Group]string {
				m := map[Group]string{}
				_ = x.Groups(func(g Group, data []byte) error { m[g] = string(data); return nil })
				return m
			}
			for i, b := range batches {
				o.Process(b)
				apply()
				r := rebuild()
				if got, want := all(r), all(o); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("batch %d: rebuilt operator holds %d window-groups, the operator %d; they differ", i, len(got), len(want))
				}
				if i == len(batches)/2 {
					// The rest through both: the same rows.
					var a, c []string
					for _, rest := range batches[i+1:] {
						x, _ := o.Process(rest)
						y, _ := r.Process(rest)
						for _, m := range x {
							a = append(a, fmt.Sprint(m))
						}
						for _, m := range y {
							c = append(c, fmt.Sprint(m))
						}
					}
					for _, m := range o.Flush() {
						a = append(a, fmt.Sprint(m))
					}
					for _, m := range r.Flush() {
						c = append(c, fmt.Sprint(m))
					}
					slices.Sort(a)
					slices.Sort(c)
					if !slices.Equal(a, c) || len(a) == 0 {
						t.Fatalf("rebuilt operator emitted %d rows, the operator %d; they differ", len(c), len(a))
					}
					apply()
					if len(entries) != 0 {
						t.Fatalf("%d entries left after Flush", len(entries))
					}
					break
				}
			}
			t.Logf("%d entry writes", writes)
		})
	}
}

// TestChangesOnlyTouched: a batch that adds to one group of many open ones
// reports that group only.
func TestChangesOnlyTouched(t *testing.T) {
	o := newOp(t, Spec{Type: Tumbling, Size: time.Minute})
	o.Track(true)
	var rows []map[string]any
	for u := range 1000 {
		rows = append(rows, map[string]any{"ts": int64(1_700_000_000_000), "user": u, "amount": 1.0})
	}
	o.Process(rows)
	n := 0
	_ = o.Changes(func(Group, []byte) error { n++; return nil })
	if n != 1000 {
		t.Fatalf("%d changes for 1000 new groups", n)
	}
	o.Process([]map[string]any{{"ts": int64(1_700_000_000_001), "user": 7, "amount": 2.0}})
	var got []Group
	_ = o.Changes(func(g Group, data []byte) error { got = append(got, g); return nil })
	if len(got) != 1 || fmt.Sprint(got[0].Values()) != "[7]" {
		t.Fatalf("changes %v, want user 7's group", got)
	}
}

// TestResumeAfterFlush: an operator restored from the clock of a flushed
// one (a bounded run that completed; its file is appended to and the job
// run again) takes rows again: a row of a window the flush emitted is
// late, a row of a later window is on time.
func TestResumeAfterFlush(t *testing.T) {
	t.Parallel()
	for _, spec := range []Spec{
		{Type: Tumbling, Size: time.Minute, Lateness: time.Second},
		{Type: Sliding, Size: time.Minute, Slide: 20 * time.Second, Lateness: time.Second},
		{Type: Session, Gap: time.Minute, Lateness: time.Second},
	} {
		t.Run(string(spec.Type), func(t *testing.T) {
			t.Parallel()
			o := newOp(t, spec)
			o.Process([]map[string]any{at("a", 100, 1), at("a", 130, 1)})
			if n := len(o.Flush()); n == 0 {
				t.Fatal("the flush emitted nothing")
			}
			r := newOp(t, spec)
			if err := r.SetClock(o.Clock()); err != nil {
				t.Fatal(err)
			}
			// 131s: its windows are among those the flush emitted (they
			// end by 180s), or it would have joined the session it
			// emitted.
			_, rej := r.Process([]map[string]any{at("a", 131, 1)})
			if len(rej) != 1 || !errors.Is(rej[0].Err, ErrLate) {
				t.Errorf("a row of a flushed window: rejected %v, want late", rej)
			}
			_, rej = r.Process([]map[string]any{at("a", 400, 1)})
			if len(rej) != 0 {
				t.Errorf("a row of a later window: rejected %v", rej)
			}
			out := r.Flush()
			if len(out) == 0 || out[len(out)-1]["n"] != nil && out[len(out)-1]["orders"] != int64(1) {
				t.Errorf("after the restart: %v", out)
			}
		})
	}
}
