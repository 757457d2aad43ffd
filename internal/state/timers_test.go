package state

import (
	"encoding/json"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

// TestTimersFireAgainWhenTheirBatchIsDropped: a due timer fires in a Txn;
// when that Txn's batch is dropped the timer fires again in the next one;
// once its deletion is applied it is gone, from the state and the index.
// A timer loaded from the store is indexed; a moved timer fires at its new
// time only.
func TestTimersFireAgainWhenTheirBatchIsDropped(t *testing.T) {
	tb := New(1, json.Marshal)
	id := TimerID("F", "t", "k", true)
	x := tb.Begin(0)
	if err := x.SetTimer(id, 100); err != nil {
		t.Fatal(err)
	}
	if due := x.DueTimers(99, 0); len(due) != 0 {
		t.Fatalf("due before its time: %v", due)
	}
	tb.Apply([]*Txn{x})

	fire := func() *Txn {
		x := tb.Begin(0)
		due := x.DueTimers(150, 0)
		if len(due) != 1 || due[0] != (Timer{ID: id, At: 100}) || !due[0].Event() {
			t.Fatalf("due: %v", due)
		}
		if err := x.Delete(id); err != nil {
			t.Fatal(err)
		}
		return x
	}
	x = fire()
	tb.Drop([]*Txn{x})
	x = fire() // the dropped firing fires again
	tb.Apply([]*Txn{x})
	x = tb.Begin(0)
	if due := x.DueTimers(1000, 0); len(due) != 0 {
		t.Fatalf("fired again after its deletion committed: %v", due)
	}
	if n := len(tb.timers[0].event); n != 0 {
		t.Fatalf("index keeps %d candidates", n)
	}

	// Loaded from the store, then moved later: fires at the new time only.
	pid := TimerID("F", "t", "j", false)
	if err := tb.Load(stream.StateChange{Name: pid.Name, Key: pid.Key, Field: pid.Field, Value: []byte("200")}); err != nil {
		t.Fatal(err)
	}
	x = tb.Begin(0)
	if err := x.SetTimer(pid, 300); err != nil {
		t.Fatal(err)
	}
	if due := x.DueTimers(0, 250); len(due) != 0 {
		t.Fatalf("fired at its old time: %v", due)
	}
	if due := x.DueTimers(0, 300); len(due) != 1 || due[0].At != 300 || due[0].Event() {
		t.Fatalf("due: %v", due)
	}
	if fn, name, ok := TimerOf(pid); !ok || fn != "F" || name != "t" {
		t.Fatalf("TimerOf: %q %q %v", fn, name, ok)
	}
}
