package cdcsnap

import (
	"encoding/json"
	"strconv"
	"testing"
)

// decimal writes points as decimal numbers.
var decimal = &Codec{
	Format: func(p Point) string { return strconv.FormatUint(uint64(p), 10) },
	Parse: func(s string) (Point, error) {
		n, err := strconv.ParseUint(s, 10, 64)
		return Point(n), err
	},
}

// TestResumed follows a snapshot of three tables (a keyed by an integer,
// b by text, c without a key) stopped three times: each range's changes
// count from its own point.
func TestResumed(t *testing.T) {
	t.Parallel()
	keys := map[string][]Col{"a": {{Name: "id", Kind: Int}}, "b": {{Name: "name", Kind: Text}}, "c": nil}
	tables := []string{"a", "b", "c"}
	cols := [][]Col{keys["a"], keys["b"], nil}
	r0 := New(decimal, tables, cols, 100)
	// Stopped after a's row 50: the rest from a snapshot at 200.
	r1, after, ok := r0.Resumed(0, []string{"50"}, 200)
	if !ok || len(after) != 1 || after[0] != "50" || len(r1.spans) != 1 || r1.Max() != 200 {
		t.Fatalf("resumed: %+v %v %v", r1, after, ok)
	}
	// Stopped before any row of b: the range of a's rest ends before b.
	r2, after, ok := r1.Resumed(1, nil, 300)
	if !ok || after != nil || len(r2.spans) != 2 {
		t.Fatalf("resumed at b's start: %+v %v %v", r2.spans, after, ok)
	}
	// Stopped in c (no key): c is read again whole, its changes counting
	// from 300 still.
	r3, after, ok := r2.Resumed(2, nil, 400)
	if !ok || after != nil || len(r3.spans) != 3 {
		t.Fatalf("resumed in c: %+v %v %v", r3.spans, after, ok)
	}
	for _, c := range []struct {
		table string
		k     Key
		want  Point
	}{
		{"a", Key{{I: -5}}, 100}, {"a", Key{{I: 50}}, 100}, {"a", Key{{I: 51}}, 200},
		{"a", Key{{I: 1 << 40}}, 200}, {"b", Key{{S: ""}}, 300}, {"b", Key{{S: "zz"}}, 300},
		{"c", nil, 300},
	} {
		if got, ok := r3.From(c.table, c.k); !ok || got != c.want {
			t.Errorf("%s %v: from %v (%t), want %v", c.table, c.k, got, ok, c.want)
		}
	}
	if _, ok := r3.From("a", nil); ok {
		t.Error("a change of a keyed table without its key was placed")
	}
	// Through the JSON and back.
	r, tb, k, err := Parse(decimal, string(r3.AppendJSON(nil, true, 2, nil)))
	if err != nil || tb != 2 || k != nil || r.Bound() {
		t.Fatalf("parse: %v %d %v %t", err, tb, k, r.Bound())
	}
	b, ok := r.Bind(keys)
	if !ok {
		t.Fatal("bind: a key did not decode")
	}
	if got, _ := b.From("a", Key{{I: 51}}); got != 200 {
		t.Errorf("after the round trip, a's 51 counts from %v", got)
	}
	for table, want := range map[string]Point{"a": 100, "b": 300, "c": 300} {
		if got := b.TableFrom(table); got != want {
			t.Errorf("TableFrom(%s) = %v, want %v", table, got, want)
		}
	}
	// The same table stopped again at the same key: the span is empty.
	r4, _, _ := r1.Resumed(0, []string{"50"}, 250)
	if len(r4.spans) != 1 || r4.open != 250 {
		t.Errorf("resumed twice at the same key: spans %+v, open %v", r4.spans, r4.open)
	}
	// A key that no longer reads as the table's: its changes all count.
	if bad, ok := r.Bind(map[string][]Col{"a": {{Name: "id", Kind: Int}, {Name: "x", Kind: Int}}, "b": keys["b"]}); ok {
		t.Error("a key of another shape was bound")
	} else if _, placed := bad.From("a", Key{{I: 1}, {I: 2}}); placed {
		t.Error("a row of a table whose span did not decode was placed")
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	cols := []Col{{Name: "a", Kind: Int}, {Name: "b", Kind: Uint}, {Name: "c", Kind: Text}, {Name: "d", Kind: Bytes}}
	k := Key{{I: -7}, {U: 1<<64 - 1}, {S: "é \"x\""}, {S: "\x00\xff"}}
	enc := Encode(cols, k)
	back, err := Decode(cols, enc)
	if err != nil || Compare(cols, k, back) != 0 {
		t.Fatalf("%v reads back as %v (%v)", enc, back, err)
	}
	if Compare(cols, Key{{I: -7}, {U: 1 << 63}, {S: "a"}, {S: ""}}, k) >= 0 {
		t.Error("an unsigned key of 2^63 sorts after 2^64-1")
	}
	if _, err := Decode(cols, []string{"1", "2"}); err == nil {
		t.Error("a key of two columns decoded for four")
	}
}

func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "42", "plain key", "quote \" and \\ back", "tab\there", "é ü 日本", "<&>", "\x7f"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, v), &got); err != nil || got != v {
			t.Errorf("%q: reads back as %q (%v)", v, got, err)
		}
	}
}

// TestDelivered decides changes of a snapshot resumed after a's key 50
// (rows up to 50 counting from 100, the rest from 200): a change before
// its row's point is not delivered, and an update moving a key across
// the ranges' boundary is delivered as the half that counts.
func TestDelivered(t *testing.T) {
	t.Parallel()
	keys := map[string][]Col{"a": {{Name: "id", Kind: Int}}}
	r, _, ok := New(decimal, []string{"a"}, [][]Col{keys["a"]}, 100).Resumed(0, []string{"50"}, 200)
	if !ok {
		t.Fatal("resumed: the key did not decode")
	}
	value := func(c Col, v any) (Val, bool) {
		n, ok := v.(int)
		return Val{I: int64(n)}, ok
	}
	row := func(id any) map[string]any { return map[string]any{"id": id} }
	moved := func(from, to int) map[string]any {
		m := row(to)
		m["_before"] = row(from)
		return m
	}
	for _, c := range []struct {
		name   string
		table  string
		op     string
		row    map[string]any
		at     Point
		wantOp string
		want   bool
		before bool // _before left in the row
	}{
		{"before the range's point", "a", "insert", row(10), 150, "insert", true, false},
		{"in the new snapshot's image", "a", "insert", row(60), 150, "insert", false, false},
		{"after the new snapshot", "a", "insert", row(60), 200, "insert", true, false},
		{"before the first snapshot", "a", "update", row(10), 99, "update", false, false},
		{"an unknown key counts", "a", "delete", row("x"), 150, "delete", true, false},
		{"a missing key counts", "a", "delete", map[string]any{}, 150, "delete", true, false},
		{"another table counts", "z", "insert", row(60), 0, "insert", true, false},
		{"moved into the image: its delete", "a", "update", moved(10, 60), 150, "delete", true, true},
		{"moved out of the image: the new key's", "a", "update", moved(60, 10), 150, "update", true, false},
		{"moved within the counted range", "a", "update", moved(10, 20), 150, "update", true, true},
		{"moved within the image", "a", "update", moved(60, 70), 150, "update", false, true},
	} {
		op, got := r.Delivered(c.table, c.op, c.row, c.at, value)
		_, before := c.row["_before"]
		if op != c.wantOp || got != c.want || before != c.before {
			t.Errorf("%s: %s %t (_before %t), want %s %t (_before %t)", c.name, op, got, before, c.wantOp, c.want, c.before)
		}
	}
}
