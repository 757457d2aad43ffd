package state

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

func TestReadsSeeEarlierPartsOfTheLaneUntilSettled(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	id := ID{Name: "n", Key: "k"}
	a := tb.Begin(0)
	if err := a.Put(id, 1, 0); err != nil {
		t.Fatal(err)
	}
	b := tb.Begin(0)
	if e, ok, _ := b.Get(id); !ok || e.Val != 1 {
		t.Fatalf("a later part reads %v %v, want the earlier part's 1", e.Val, ok)
	}
	tb.Drop([]*Txn{a})
	if !tb.Stale([]*Txn{b}) {
		t.Fatal("a part that read before a drop must not commit")
	}
	tb.Drop([]*Txn{b})
	c := tb.Begin(0)
	if _, ok, _ := c.Get(id); ok {
		t.Fatal("dropped changes are still seen")
	}
	if tb.Stale([]*Txn{c}) {
		t.Fatal("a part begun after the drops is stale")
	}
	_ = c.Put(id, 7, 0)
	changes, err := tb.Changes([]*Txn{c})
	if err != nil || len(changes) != 1 || string(changes[0].Value) != "7" {
		t.Fatalf("changes %+v %v", changes, err)
	}
	tb.Apply([]*Txn{c})
	d := tb.Begin(0)
	if e, ok, _ := d.Get(id); !ok || e.Val != 7 {
		t.Fatalf("committed value %v %v, want 7", e.Val, ok)
	}
}

func TestRollbackUndoesToTheSavepoint(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	x := tb.Begin(0)
	a, b := ID{Name: "n", Key: "a"}, ID{Name: "n", Key: "b"}
	_ = x.Put(a, 1, 0)
	sp := x.Savepoint()
	_ = x.Put(a, 2, 0)
	_ = x.Put(b, 3, 0)
	_ = x.Delete(a)
	x.Rollback(sp)
	if e, ok, _ := x.Get(a); !ok || e.Val != 1 {
		t.Fatalf("a = %v %v after rollback, want 1", e.Val, ok)
	}
	if _, ok, _ := x.Get(b); ok {
		t.Fatal("b survived the rollback")
	}
	// Entries changed again after a rollback, then a second rollback to
	// a savepoint between them: the changes are those before it.
	c := ID{Name: "n", Key: "c"}
	_ = x.Put(c, 4, 0)
	sp2 := x.Savepoint()
	_ = x.Put(b, 5, 0)
	_ = x.Put(c, 6, 0)
	_ = x.Put(ID{Name: "n", Key: "d"}, 7, 0)
	x.Rollback(sp2)
	changes, err := tb.Changes([]*Txn{x})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ch := range changes {
		got[ch.Key] = string(ch.Value)
	}
	if want := map[string]string{"a": "1", "c": "4"}; !maps.Equal(got, want) {
		t.Fatalf("changes after rollbacks %v, want %v", got, want)
	}
}

func TestTTLAndMapFields(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	if err := tb.Load(stream.StateChange{Name: "m", Key: "k", Field: `"x"`, Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	_ = tb.Load(stream.StateChange{Name: "m", Key: "k", Field: `"old"`, Value: []byte("1"), ExpiresAt: time.Now().Add(-time.Second).UnixMilli()})
	x := tb.Begin(0)
	_ = x.Put(ID{Name: "m", Key: "k", Field: `"y"`}, 2, time.Hour)
	_ = x.Put(ID{Name: "m", Key: "k", Field: `"z"`}, 3, time.Nanosecond)
	_ = x.Delete(ID{Name: "m", Key: "k", Field: `"x"`})
	time.Sleep(2 * time.Millisecond) // z expires
	fields, err := x.Fields("m", "k")
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, f := range fields {
		if _, ok, _ := x.Get(ID{Name: "m", Key: "k", Field: f}); ok {
			live = append(live, f)
		}
	}
	if !slices.Equal(live, []string{`"y"`}) {
		t.Fatalf("live fields %v, want only y (x deleted, z and old expired)", live)
	}
}

func TestSeveralLanesNeedTheStreamKey(t *testing.T) {
	t.Parallel()
	tb := New(4, json.Marshal)
	if err := tb.Begin(-1).Put(ID{Name: "n", Key: "a"}, 1, 0); !errors.Is(err, ErrUnkeyed) {
		t.Fatalf("unkeyed part: %v", err)
	}
	for i := range 20 {
		key := strconv.Itoa(i)
		own := Partition(key, 4)
		if err := tb.Begin(own).Put(ID{Name: "n", Key: key}, 1, 0); err != nil {
			t.Fatalf("key %s on its own lane: %v", key, err)
		}
		if err := tb.Begin((own+1)%4).Put(ID{Name: "n", Key: key}, 1, 0); !errors.Is(err, ErrNotOwned) {
			t.Fatalf("key %s on another lane: %v", key, err)
		}
	}
	if err := tb.Scratch().Put(ID{Name: "n", Key: "a"}, 1, 0); err != nil {
		t.Fatalf("scratch: %v", err)
	}
}

// A change records the partition of its key: the partition of the part's
// message with that stream key, else the one the entry had, else none.
// DropPartitions forgets the committed
// entries of partitions, and only those.
func TestEntriesFollowPartitions(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	if err := tb.Load(stream.StateChange{Name: "n", Key: "old", Value: []byte("1"), Partition: "t/3"}); err != nil {
		t.Fatal(err)
	}
	_ = tb.Load(stream.StateChange{Name: "n", Key: "none", Value: []byte("1")})
	x := tb.Begin(0)
	x.SetPartitions(func() map[string]string { return map[string]string{"a": "t/0", "b": "t/1"} })
	for _, k := range []string{"a", "b", "old", "other"} {
		if err := x.Put(ID{Name: "n", Key: k}, 2, 0); err != nil {
			t.Fatal(err)
		}
	}
	y := tb.Begin(0)
	y.SetPartitions(func() map[string]string { return map[string]string{"c": "t/2"} })
	_ = y.Put(ID{Name: "n", Key: "lone"}, 3, 0)
	changes, err := tb.Changes([]*Txn{x, y})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range changes {
		got[c.Key] = c.Partition
	}
	want := map[string]string{"a": "t/0", "b": "t/1", "old": "t/3", "other": "", "lone": ""}
	if len(got) != len(want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	for k, p := range want {
		if got[k] != p {
			t.Errorf("key %s: partition %q, want %q", k, got[k], p)
		}
	}
	tb.Apply([]*Txn{x, y})
	if n := tb.DropPartitions([]string{"t/0", "t/3", ""}); n != 2 {
		t.Fatalf("dropped %d entries, want 2 (a and old)", n)
	}
	z := tb.Begin(0)
	for k, live := range map[string]bool{"a": false, "old": false, "b": true, "none": true, "other": true, "lone": true} {
		if _, ok, _ := z.Get(ID{Name: "n", Key: k}); ok != live {
			t.Errorf("key %s: live %v after the drop, want %v", k, ok, live)
		}
	}
}

// TestPutInFollowsTheGivenPartition: an entry put with PutIn records the
// partition given, whatever its key's partition in the part, and is
// dropped with that partition; KeyPartition and Partitioned tell the
// partitions of the part's keys.
func TestPutInFollowsTheGivenPartition(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	x := tb.Begin(0)
	if x.Partitioned() {
		t.Error("a part without partitions says it has some")
	}
	if _, ok := x.KeyPartition("a"); ok {
		t.Error("a key of a part without partitions has one")
	}
	x.SetPartitions(func() map[string]string { return map[string]string{"a": "t/0"} })
	if !x.Partitioned() {
		t.Error("a part with partitions says it has none")
	}
	if p, ok := x.KeyPartition("a"); !ok || p != "t/0" {
		t.Errorf("key a: partition %q (%v), want t/0", p, ok)
	}
	if _, ok := x.KeyPartition("b"); ok {
		t.Error("key b, not in the part, has a partition")
	}
	if err := x.PutIn(ID{Name: "n", Key: "a", Field: "d1"}, []byte("x"), "t/5"); err != nil {
		t.Fatal(err)
	}
	if err := x.PutIn(ID{Name: "n", Key: "a", Field: "d2"}, []byte("y"), ""); err != nil {
		t.Fatal(err)
	}
	changes, err := tb.Changes([]*Txn{x})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range changes {
		got[c.Field] = c.Partition
	}
	if got["d1"] != "t/5" || got["d2"] != "" || len(got) != 2 {
		t.Fatalf("partitions %v, want d1 in t/5 and d2 in none", got)
	}
	tb.Apply([]*Txn{x})
	if n := tb.DropPartitions([]string{"t/5"}); n != 1 {
		t.Fatalf("dropped %d entries, want d1", n)
	}
	if _, ok := tb.Committed(ID{Name: "n", Key: "a", Field: "d2"}); !ok {
		t.Error("d2, of no partition, was dropped")
	}
}

// TestTakeUnsavedFoldsWhatTheStoreNeverHeld: an entry made and deleted
// between two saves is not written; one the store holds (committed before)
// keeps its delete, and so does one made again after it was deleted; an
// entry changed by many batches is written once, with its last value; one
// dropped from memory (its partition revoked) before the save is written.
func TestTakeUnsavedFoldsWhatTheStoreNeverHeld(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	held, fresh := ID{Name: "w", Key: "a"}, ID{Name: "w", Key: "b"}
	if err := tb.Load(stream.StateChange{Name: held.Name, Key: held.Key, Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	commit := func(f func(x *Txn)) {
		x := tb.Begin(0)
		f(x)
		tb.ApplyUnsaved([]*Txn{x})
	}
	take := func() map[ID]Entry { // a save
		unsaved := map[ID]Entry{}
		tb.TakeUnsaved(unsaved)
		if tb.HasUnsaved() {
			t.Fatal("unsaved changes left after TakeUnsaved")
		}
		return unsaved
	}
	commit(func(x *Txn) { _ = x.Put(held, 2, 0); _ = x.Put(fresh, 1, 0) })
	if !tb.HasUnsaved() {
		t.Fatal("no unsaved changes after a commit")
	}
	commit(func(x *Txn) { _ = x.Delete(held); _ = x.Delete(fresh) })
	if unsaved := take(); len(unsaved) != 1 || !unsaved[held].Deleted {
		t.Fatalf("unsaved %v, want the delete of the entry the store holds only", unsaved)
	}
	// Saved: the store now holds neither.
	commit(func(x *Txn) { _ = x.Put(fresh, 3, 0) })
	commit(func(x *Txn) { _ = x.Put(fresh, 4, 0) })
	if unsaved := take(); len(unsaved) != 1 || unsaved[fresh].Deleted || unsaved[fresh].Val != 4 {
		t.Fatalf("unsaved %v, want the last put", unsaved)
	}
	commit(func(x *Txn) { _ = x.Delete(fresh) })
	if unsaved := take(); len(unsaved) != 1 || !unsaved[fresh].Deleted {
		t.Fatalf("unsaved %v, want the delete of an entry the store holds", unsaved)
	}
	// Within one batch: made and deleted, nothing to write.
	other := ID{Name: "w", Key: "c"}
	commit(func(x *Txn) { _ = x.Put(other, 1, 0); _ = x.Delete(other) })
	if unsaved := take(); len(unsaved) != 0 {
		t.Fatalf("unsaved %v, want nothing", unsaved)
	}
	// Made, saved, then deleted and made again: the new value; deleted
	// and made again and deleted again: the delete.
	commit(func(x *Txn) { _ = x.Put(other, 1, 0) })
	take()
	commit(func(x *Txn) { _ = x.Delete(other) })
	commit(func(x *Txn) { _ = x.Put(other, 2, 0) })
	if unsaved := take(); len(unsaved) != 1 || unsaved[other].Deleted || unsaved[other].Val != 2 {
		t.Fatalf("unsaved %v, want the put made after the delete", unsaved)
	}
	commit(func(x *Txn) { _ = x.Delete(other) })
	commit(func(x *Txn) { _ = x.Put(other, 3, 0) })
	commit(func(x *Txn) { _ = x.Delete(other) })
	if unsaved := take(); len(unsaved) != 1 || !unsaved[other].Deleted {
		t.Fatalf("unsaved %v, want the delete", unsaved)
	}
	// Dropped from memory before the save: still written.
	moved := ID{Name: "w", Key: "d"}
	x := tb.Begin(0)
	x.SetPartitions(func() map[string]string { return map[string]string{"d": "t/1"} })
	_ = x.Put(moved, 5, 0)
	tb.ApplyUnsaved([]*Txn{x})
	if n := tb.DropPartitions([]string{"t/1"}); n != 1 {
		t.Fatalf("dropped %d entries, want 1", n)
	}
	if unsaved := take(); len(unsaved) != 1 || unsaved[moved].Val != 5 || unsaved[moved].Part != "t/1" {
		t.Fatalf("unsaved %v, want the dropped entry's value", unsaved)
	}
	// Apply (a change saved with its batch) leaves nothing to save.
	x = tb.Begin(0)
	_ = x.Put(moved, 6, 0)
	tb.Apply([]*Txn{x})
	if tb.HasUnsaved() {
		t.Fatal("Apply left unsaved changes")
	}
}
