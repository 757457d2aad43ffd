package state

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// View shows the committed, live state of one key: value states, map
// states as objects (loaded from the store or set by a function), never
// the changes of a batch in flight nor expired entries nor other keys.
func TestViewShowsTheCommittedStateOfAKey(t *testing.T) {
	t.Parallel()
	tb := New(1, json.Marshal)
	_ = tb.Load(stream.StateChange{Name: "pages", Key: "u1", Field: `"home"`, Value: []byte("4")})
	_ = tb.Load(stream.StateChange{Name: "pages", Key: "u1", Field: `"gone"`, Value: []byte("1"), ExpiresAt: time.Now().Add(-time.Second).UnixMilli()})
	_ = tb.Load(stream.StateChange{Name: "visits", Key: "u2", Value: []byte("9")})
	x := tb.Begin(0)
	_ = x.Put(ID{Name: "visits", Key: "u1"}, 5, 0)
	_ = x.Put(ID{Name: "byHour", Key: "u1", Field: "13"}, []string{"a"}, 0)
	tb.Apply([]*Txn{x})
	y := tb.Begin(0) // in flight: not in the view
	_ = y.Put(ID{Name: "visits", Key: "u1"}, 6, 0)
	_ = y.Put(ID{Name: "late", Key: "u1"}, true, 0)

	view := func(key string) string {
		t.Helper()
		v, err := tb.View(key)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) == 0 {
			return ""
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := view("u1"), `{"byHour":{"13":["a"]},"pages":{"home":4},"visits":5}`; got != want {
		t.Errorf("u1: %s, want %s", got, want)
	}
	if got, want := view("u2"), `{"visits":9}`; got != want {
		t.Errorf("u2: %s, want %s", got, want)
	}
	if got := view("nobody"); got != "" {
		t.Errorf("nobody: %s, want no state", got)
	}
	tb.Apply([]*Txn{y})
	if got, want := view("u1"), `{"byHour":{"13":["a"]},"late":true,"pages":{"home":4},"visits":6}`; got != want {
		t.Errorf("u1 once committed: %s, want %s", got, want)
	}
}
