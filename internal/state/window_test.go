package state

import (
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// TestWindowEntriesAreNotIndexed checks that the entries of a window's
// state (WindowPrefix) are kept, read back and enumerated like any, but
// left out of the index of map-state fields: Fields and View do not list
// them, while a map state of the same key still is.
func TestWindowEntriesAreNotIndexed(t *testing.T) {
	tb := New(1, func(v any) ([]byte, error) { return []byte(`"` + v.(string) + `"`), nil })
	win := ID{Name: WindowPrefix + "0/PerUser", Key: "alice", Field: "window 2026-05-01T12:01:00Z [\"alice\"]"}
	page := ID{Name: "pages", Key: "alice", Field: `"home"`}
	x := tb.Begin(0)
	if err := x.Put(win, "w1", 0); err != nil {
		t.Fatal(err)
	}
	if err := x.Put(page, "p1", 0); err != nil {
		t.Fatal(err)
	}
	check := func(x *Txn, when string) {
		t.Helper()
		if e, ok, err := x.Get(win); err != nil || !ok || e.Val != "w1" {
			t.Fatalf("%s: Get of the window entry: %v, %v, %v", when, e, ok, err)
		}
		var got []ID
		if err := x.Entries(win.Name, func(id ID, _ Entry) error { got = append(got, id); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != win {
			t.Fatalf("%s: Entries of the window: %v, want %v", when, got, win)
		}
		if fs, err := x.Fields(win.Name, win.Key); err != nil || len(fs) != 0 {
			t.Fatalf("%s: Fields of the window: %v, %v; want none", when, fs, err)
		}
		if fs, err := x.Fields(page.Name, page.Key); err != nil || len(fs) != 1 || fs[0] != page.Field {
			t.Fatalf("%s: Fields of the map state: %v, %v; want [%s]", when, fs, err, page.Field)
		}
	}
	check(x, "in the batch")
	changes, err := tb.Changes([]*Txn{x})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 {
		t.Fatalf("changes %v, want the window entry and the map entry", changes)
	}
	tb.Apply([]*Txn{x})
	check(tb.Begin(0), "committed")
	v, err := tb.View("alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || string(v["pages"]) != `{"home":"p1"}` {
		t.Fatalf("View: %s, want only the map state pages", v)
	}

	// Loaded from a store, and deleted.
	tb = New(1, nil)
	for _, c := range []stream.StateChange{
		{Name: win.Name, Key: win.Key, Field: win.Field, Value: []byte(`"w1"`)},
		{Name: page.Name, Key: page.Key, Field: page.Field, Value: []byte(`"p1"`)},
	} {
		if err := tb.Load(c); err != nil {
			t.Fatal(err)
		}
	}
	x = tb.Begin(0)
	if err := x.Delete(win); err != nil {
		t.Fatal(err)
	}
	tb.Apply([]*Txn{x})
	if _, ok := tb.Committed(win); ok || tb.Len() != 1 {
		t.Fatalf("after the delete: the window entry is there (%v) or %d entries, want 1", ok, tb.Len())
	}
}
