package kisflow

import (
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/window"
)

// TestWindowDeltaFormat checks that a delta's field and value read back as
// written: the lane, Seq and partition, and each record in order.
func TestWindowDeltaFormat(t *testing.T) {
	ents := windowEntries{name: "kisflow.window/0/F", keyAt: 0}
	for _, part := range []string{"", "orders/3", "a b"} {
		id := ents.delta(2, 4, 123456789, part)
		f, ok := parseDeltaField(id.Field)
		if !ok || f != (deltaField{lanes: 4, lane: 2, seq: 123456789, part: part}) {
			t.Errorf("%q read back as %+v (%v)", id.Field, f, ok)
		}
		if id.Key != laneKey(2, 4) {
			t.Errorf("delta key %q, want the lane's %q", id.Key, laneKey(2, 4))
		}
	}
	for _, bad := range []string{"clock", "delta ", "delta 4.2", "delta 4.x 1 p", "delta 4.2 -1 p"} {
		if _, ok := parseDeltaField(bad); ok {
			t.Errorf("%q read as a delta", bad)
		}
	}

	spec := window.Spec{Type: window.Tumbling, Size: time.Minute, TimeField: "ts", GroupBy: []string{"k"},
		Aggregates: []window.Aggregate{{Name: "n", Func: window.Count}}}
	op, err := window.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC).UnixMilli()
	op.Process([]map[string]any{{"ts": ts, "k": int64(1)}, {"ts": ts, "k": "two"}})
	var d deltaBuf
	var want []window.Group
	if err := op.Groups(func(g window.Group, data []byte) error {
		d.group("", g, data)
		want = append(want, g)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.sessionGone("", "gone")
	d.windowGone("", -5)
	d.windowGone("", -5) // once per delta
	if i := d.info; i.n != 4 || len(i.ends) != 1 || i.other != 2 || len(i.live) != 1 || i.live[0].n != 2 || i.idle() {
		t.Fatalf("delta counts %d records, ends %v, %d tombstones, live %v; want 4, one window, 2, the window's 2 groups", i.n, i.ends, i.other, i.live)
	}
	for _, g := range want {
		d.info.release(g)
	}
	if !d.info.idle() {
		t.Errorf("a delta whose groups all have a later record is not idle: %v", d.info.live)
	}
	var got []string
	if err := readDelta(d.b, func(kind byte, data []byte, end int64) error {
		switch kind {
		case recGroup:
			g, err := window.GroupOf(data)
			if err != nil {
				return err
			}
			if g != want[len(got)] {
				t.Errorf("group %d: %+v, want %+v", len(got), g, want[len(got)])
			}
			if sk := ents.streamKey(g); sk != "1" && sk != "two" {
				t.Errorf("stream key %q", sk)
			}
			got = append(got, "g")
		case recSession:
			got = append(got, "x "+string(data))
		case recWindow:
			got = append(got, "e "+time.UnixMilli(end).UTC().Format(time.RFC3339Nano))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[2] != "x gone" || got[3] != "e 1969-12-31T23:59:59.995Z" {
		t.Errorf("records %q", got)
	}
	if err := readDelta(d.b[:len(d.b)-1], func(byte, []byte, int64) error { return nil }); err == nil {
		t.Error("a truncated delta read without an error")
	}
}
