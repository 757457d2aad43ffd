package kisflow

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/window"
)

// TestWindowGroupEntryNames checks that a window-group's entry is named as
// earlier versions named it (the group_by values through json.Marshal),
// whatever the values, so that a run goes on from the entries an earlier
// version saved; and that the name cached in the group's slot is the one
// derived afresh.
func TestWindowGroupEntryNames(t *testing.T) {
	spec := window.Spec{Type: window.Tumbling, Size: time.Minute, TimeField: "ts", GroupBy: []string{"k", "v"},
		Aggregates: []window.Aggregate{{Name: "n", Func: window.Count}}}
	values := []any{int64(42), int64(-7), "plain", `quo"te`, `back\slash`, "<tag", "a>b", "&amp", "tab\there", "é", "", nil, true, false, 1.5, 1e21}
	ents := windowEntries{name: "kisflow.window/0/F", keyAt: 0}
	for _, k := range values {
		for _, v := range []any{int64(1), "x", 2.25} {
			op, err := window.New(spec)
			if err != nil {
				t.Fatal(err)
			}
			op.Track(true)
			ts := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC).UnixMilli()
			if _, rej := op.Process([]map[string]any{{"ts": ts, "k": k, "v": v}}); len(rej) > 0 {
				t.Fatalf("%v, %v: rejected: %v", k, v, rej[0].Err)
			}
			n := 0
			if err := op.ChangesTagged(func(g window.Group, tag *any, _ []byte) error {
				n++
				vals := g.Values()
				js, err := json.Marshal(vals)
				if err != nil {
					t.Fatal(err)
				}
				want := state.ID{Name: ents.name, Key: window.KeyString(vals[0]),
					Field: "window " + time.UnixMilli(g.End).UTC().Format(time.RFC3339Nano) + " " + string(js)}
				if got := ents.group(g); got != want {
					t.Errorf("%#v, %#v: entry %q, want %q", k, v, got, want)
				}
				first := ents.groupTagged(g, tag)
				if again := ents.groupTagged(g, tag); first != want || again != want {
					t.Errorf("%#v, %#v: tagged entry %q then %q, want %q", k, v, first, again, want)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%v, %v: %d changes, want 1", k, v, n)
			}
		}
	}
}
