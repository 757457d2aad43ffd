package pgcdc

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

func TestParamsRefused(t *testing.T) {
	t.Parallel()
	base := func(params map[string]string) *config.Conn {
		return &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1:5432/db", Key: "orders", Params: params}
	}
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "s", "publication": "p", "snapshots": "true"}), "snapshots", "snapshot")
	testenv.RefusesParams(t, New, base(map[string]string{"publication": "p"}), "slot")
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "s", "publication": "p", "snapshot": "maybe"}), "snapshot")
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "Bad-Name", "publication": "p"}), "slot")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1/db", Params: map[string]string{"slot": "s", "publication": "p"}}, "key")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1/db", Key: "a.b.c", Params: map[string]string{"slot": "s", "publication": "p"}}, "a.b.c")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Key: "t", Params: map[string]string{"slot": "s", "publication": "p"}}, "addrs")
	d, err := New(base(map[string]string{"slot": "s", "publication": "p", "create_slot": "false"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := d.(*CDC); c.p.CreateSlot || !c.p.Snapshot || !c.p.CreatePublication || c.tables[0].String() != "public.orders" {
		t.Fatalf("decoded %+v, tables %v", c.p, c.tables)
	}
	if id := d.(*CDC).Identity(); id != "127.0.0.1:5432/db/s" {
		t.Errorf("identity %q, want server, database and slot", id)
	}
}

func TestPositions(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "0/16B3748", "0/16B3700:5", "snapshot:0/16B3700:12", "1A/FF000000"} {
		p, err := parsePosition(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := p.String(); s != "" && got != s {
			t.Errorf("%q reads back as %q", s, got)
		}
	}
	for _, s := range []string{"x", "0/1:y", "0/1:-2", "snapshot:"} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestAppendLSN(t *testing.T) {
	t.Parallel()
	for _, lsn := range []pglogrepl.LSN{0, 1, 0x16B3748, 0x1A_FF000000, 0xFFFFFFFF_FFFFFFFF, 0x10_00000010} {
		if got, want := string(appendLSN(nil, lsn)), lsn.String(); got != want {
			t.Errorf("appendLSN(%d) = %q, want %q", uint64(lsn), got, want)
		}
	}
	if got := (position{snapshot: true}).String(); got != "snapshot:0/0:0" {
		t.Errorf("a new snapshot's position reads %q", got)
	}
}

func TestPositionWithRanges(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`snapshot:0/16B3700:12 {"tables":["public.a","public.b"],"lsn":"0/16B3700","t":0,"k":["42"]}`,
		`snapshot:0/16B3700:12 {"tables":["public.a","public.b"],"spans":[{"lsn":"0/16B3700","t":0,"k":["42"]}],"lsn":"0/17000000","t":1,"k":["a \"quoted\" key, with spaces"]}`,
		`snapshot:0/16B3700:0 {"tables":["public.a"],"lsn":"0/16B3700","t":0}`,
		`0/16B3800:3 {"tables":["public.a"],"spans":[{"lsn":"0/16B3700","t":0,"k":["42"]}],"lsn":"0/17000000"}`,
		`0/16B3900 {"tables":["public.a"],"spans":[{"lsn":"0/16B3700","t":1}],"lsn":"0/17000000"}`,
	} {
		p, err := parsePosition(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := p.String(); got != s {
			t.Errorf("%q reads back as %q", s, got)
		}
	}
	for _, s := range []string{`0/1 {`, `0/1 {"tables":[],"lsn":"x"}`, `snapshot:0/1:2 {"tables":["a"],"lsn":"0/1","t":5}`, `0/1 {"tables":["a"],"lsn":"0/1","extra":1}`} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// TestRangesResumed follows a snapshot of two tables (a keyed by an
// integer, b by text) stopped three times: each range's changes count
// from its own LSN.
func TestRangesResumed(t *testing.T) {
	t.Parallel()
	keys := map[string][]keyCol{"public.a": {{name: "id", kind: kindInt}}, "public.b": {{name: "name", kind: kindText}}, "public.c": nil}
	tables := []string{"public.a", "public.b", "public.c"}
	cols := [][]keyCol{keys["public.a"], keys["public.b"], nil}
	r0 := newRanges(tables, nil, 100, cols)
	// Stopped after a's row 50: the rest from a snapshot at 200.
	r1, after, ok := r0.resumed(0, []string{"50"}, 200)
	if !ok || len(after) != 1 || after[0] != "50" || len(r1.spans) != 1 || r1.max != 200 {
		t.Fatalf("resumed: %+v %v %v", r1, after, ok)
	}
	// Stopped before any row of b: the range of a's rest ends before b.
	r2, after, ok := r1.resumed(1, nil, 300)
	if !ok || after != nil || len(r2.spans) != 2 {
		t.Fatalf("resumed at b's start: %+v %v %v", r2.spans, after, ok)
	}
	// Stopped in c (no key): c is read again whole, its changes counting
	// from 300 still.
	r3, after, ok := r2.resumed(2, nil, 400)
	if !ok || after != nil || len(r3.spans) != 3 {
		t.Fatalf("resumed in c: %+v %v %v", r3.spans, after, ok)
	}
	for _, c := range []struct {
		table string
		k     rowKey
		want  pglogrepl.LSN
	}{
		{"public.a", rowKey{{i: -5}}, 100}, {"public.a", rowKey{{i: 50}}, 100}, {"public.a", rowKey{{i: 51}}, 200},
		{"public.a", rowKey{{i: 1 << 40}}, 200}, {"public.b", rowKey{{s: ""}}, 300}, {"public.b", rowKey{{s: "zz"}}, 300},
		{"public.c", nil, 300},
	} {
		if got, ok := r3.from(c.table, c.k); !ok || got != c.want {
			t.Errorf("%s %v: from %v (%t), want %v", c.table, c.k, got, ok, c.want)
		}
	}
	if _, ok := r3.from("public.a", nil); ok {
		t.Error("a change of a keyed table without its key was placed")
	}
	// Through the position's text and back.
	p := position{lsn: 100, n: 7, snapshot: true, rs: r3, t: 2}
	q, err := parsePosition(p.String())
	if err != nil {
		t.Fatal(err)
	}
	b, ok := q.rs.bound(keys)
	if !ok {
		t.Fatal("bound: a key did not decode")
	}
	if got, _ := b.from("public.a", rowKey{{i: 51}}); got != 200 {
		t.Errorf("after the round trip, a's 51 counts from %v", got)
	}
	for table, want := range map[string]pglogrepl.LSN{"public.a": 100, "public.b": 300, "public.c": 300} {
		if got := b.tableFrom(table); got != want {
			t.Errorf("tableFrom(%s) = %v, want %v", table, got, want)
		}
	}
	// The same table stopped again at the same key merges nothing new in:
	// the span is empty.
	r4, _, _ := r1.resumed(0, []string{"50"}, 250)
	if len(r4.spans) != 1 || r4.lsn != 250 {
		t.Errorf("resumed twice at the same key: spans %+v, open %v", r4.spans, r4.lsn)
	}
}

func TestSnapshotQuery(t *testing.T) {
	t.Parallel()
	tb := table{schema: "public", name: "t"}
	cols := []keyCol{{name: "a", kind: kindInt}, {name: "b", kind: kindText}}
	q, args := snapshotQuery(tb, cols, rowKey{{i: 3}, {s: "x"}})
	if want := `SELECT * FROM "public"."t" WHERE ("a", "b" COLLATE "C") > ($1, $2) ORDER BY "a", "b" COLLATE "C"`; q != want || len(args) != 2 || args[0] != int64(3) || args[1] != "x" {
		t.Errorf("query %s %v", q, args)
	}
	if q, args := snapshotQuery(tb, nil, nil); q != `SELECT * FROM "public"."t"` || args != nil {
		t.Errorf("keyless query %s %v", q, args)
	}
	u := keyCol{name: "u", kind: kindUUID}
	k, ok := keyOf([]keyCol{u}, map[string]any{"u": [16]byte{1, 2}})
	if !ok {
		t.Fatal("uuid key not read")
	}
	enc := encodeKey([]keyCol{u}, k)
	back, err := decodeKey([]keyCol{u}, enc)
	if err != nil || compareKeys([]keyCol{u}, k, back) != 0 {
		t.Errorf("uuid key %v reads back as %v (%v)", enc, back, err)
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
