package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// loadAll returns the stream's loaded state as name/key/field -> value.
func loadAll(t *testing.T, r *Redis, streamName string) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := r.LoadState(context.Background(), streamName, func(c stream.StateChange) error {
		got[c.Name+"/"+c.Key+"/"+c.Field] = string(c.Value)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// Keyed state commits with rows, position and IDs in one MULTI/EXEC, is
// loaded back without expired or deleted entries (expired ones are
// removed), keys and fields of any characters stay apart, and a commit
// that fails writes none of it.
func TestCommitStateRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list:{user_id}", map[string]string{"mode": "list", "state_prefix": prefix + "list:st:"})
	past := time.Now().Add(-time.Hour).UnixMilli()
	future := time.Now().Add(time.Hour).UnixMilli()
	var changes []stream.StateChange
	for i := range 1200 { // more than one HSET's worth
		changes = append(changes, stream.StateChange{Name: "n", Key: fmt.Sprint(i), Value: []byte(fmt.Sprint(i))})
	}
	odd := "a\"b c\x00/\"" // quotes, a space, a NUL, a slash
	changes = append(changes,
		stream.StateChange{Name: "m", Key: odd, Field: `"a"`, Value: []byte(`{"x": "1 2"}`)},
		stream.StateChange{Name: "m", Key: odd, Field: `"b"`, Value: []byte(`2`)},
		stream.StateChange{Name: "m/" + odd, Key: "", Field: `"a"`, Value: []byte(`3`)},
		stream.StateChange{Name: "ttl", Key: "k", Value: []byte(`4`), ExpiresAt: future},
		stream.StateChange{Name: "old", Key: "k", Value: []byte(`1`), ExpiresAt: past})
	if err := r.CommitState(ctx, "S", "p1", []string{"i1"}, []any{map[string]any{"user_id": 1}}, changes); err != nil {
		t.Fatal(err)
	}
	// Update one, delete one, put one back in the same batch after its
	// deletion: the changes apply in order.
	if err := r.CommitState(ctx, "S", "p2", nil, nil, []stream.StateChange{
		{Name: "n", Key: "5", Value: []byte("50")},
		{Name: "m", Key: odd, Field: `"b"`, Deleted: true},
		{Name: "n", Key: "7", Deleted: true},
		{Name: "n", Key: "7", Value: []byte("70")},
	}); err != nil {
		t.Fatal(err)
	}
	// A commit whose row cannot be written leaves no state.
	if err := r.CommitState(ctx, "S", "p3", nil, []any{map[string]any{"no_user": 1}}, []stream.StateChange{
		{Name: "n", Key: "6", Value: []byte("60")},
	}); err == nil {
		t.Fatal("a commit with a row the key template cannot place succeeded")
	}
	// Nor does one whose row key holds another type (WRONGTYPE would only
	// fail that command inside EXEC).
	r.client.Set(ctx, prefix+"list:9", "x", 0)
	if err := r.CommitState(ctx, "S", "p3", nil, []any{map[string]any{"user_id": 9}}, []stream.StateChange{
		{Name: "n", Key: "6", Value: []byte("60")},
	}); err == nil || !stream.IsPermanent(err) {
		t.Fatalf("a commit onto a key of another type: %v", err)
	}
	got := loadAll(t, r, "S")
	want := map[string]string{"n/5/": "50", "n/6/": "6", "n/7/": "70", "m/" + odd + `/"a"`: `{"x": "1 2"}`, "m/" + odd + `//"a"`: "3", "ttl/k/": "4"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("entry %q = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != 1203 {
		t.Errorf("loaded %d entries, want 1203", len(got))
	}
	if _, ok := got["old/k/"]; ok {
		t.Error("an expired entry was loaded")
	}
	if _, ok := got["m/"+odd+`/"b"`]; ok {
		t.Error("a deleted entry was loaded")
	}
	if r.client.HExists(ctx, r.stateHashKey("S"), stateField(stream.StateChange{Name: "old", Key: "k"})).Val() {
		t.Error("the expired entry is still in the hash after a load")
	}
	if pos, _ := r.Position(ctx, "S"); pos != "p2" {
		t.Fatalf("position %q, want p2", pos)
	}
	if seen, _ := r.Seen(ctx, "S", []string{"i1"}); !seen["i1"] {
		t.Fatal("the message IDs of the state commit were not recorded")
	}
	if other := loadAll(t, r, "T"); len(other) != 0 {
		t.Fatalf("another stream sees %d entries", len(other))
	}
}

// The fenced commit writes state only while the position is the one it
// expects; its state key of another type fails it before anything is
// written.
func TestCommitStateAfterIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list:{user_id}", map[string]string{"mode": "list", "state_prefix": prefix + "list:st:"})
	row := []any{map[string]any{"user_id": 1}}
	set := func(v string) []stream.StateChange {
		return []stream.StateChange{{Name: "w", Key: "k", Value: []byte(v)}}
	}
	if err := r.CommitStateAfter(ctx, "f", "", "10", []string{"a"}, row, set("1")); err != nil {
		t.Fatal(err)
	}
	err := r.CommitStateAfter(ctx, "f", "5", "20", []string{"b"}, row, set("2"))
	var fe *stream.FenceError
	if !errors.As(err, &fe) || fe.Found != "10" || !stream.IsFatal(err) {
		t.Fatalf("a commit expecting 5 over position 10: %v", err)
	}
	if got := loadAll(t, r, "f"); got["w/k/"] != "1" || len(got) != 1 {
		t.Fatalf("after a fenced-off commit the state is %v, want w/k/=1", got)
	}
	if n := r.client.LLen(ctx, prefix+"list:1").Val(); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
	if err := r.CommitStateAfter(ctx, "f", "10", "20", []string{"b"}, row, set("2")); err != nil {
		t.Fatal(err)
	}
	if got := loadAll(t, r, "f"); got["w/k/"] != "2" {
		t.Fatalf("state %v, want w/k/=2", got)
	}

	// A state key of another type: a fatal error, and nothing written.
	r.client.Set(ctx, r.stateHashKey("g"), "x", 0)
	err = r.CommitState(ctx, "g", "1", []string{"c"}, row, set("3"))
	if err == nil || !stream.IsFatal(err) || !strings.Contains(err.Error(), "not a hash") {
		t.Fatalf("a state key of another type: %v", err)
	}
	if n := r.client.LLen(ctx, prefix+"list:1").Val(); n != 2 {
		t.Fatalf("%d rows after a refused commit, want 2", n)
	}
	if pos, _ := r.Position(ctx, "g"); pos != "" {
		t.Fatalf("a refused commit moved the position to %q", pos)
	}
}

// Rekey moves the keyed state with the position.
func TestRekeyMovesKeyedState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list", map[string]string{"mode": "list", "state_prefix": prefix + ":st:"})
	if err := r.CommitState(ctx, "Flow", "7", nil, nil, []stream.StateChange{{Name: "n", Key: "k", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	if moved, err := r.Rekey(ctx, "Flow", "Flow@x"); !moved || err != nil {
		t.Fatalf("rekey: %v %v", moved, err)
	}
	if got := loadAll(t, r, "Flow@x"); got["n/k/"] != "1" {
		t.Fatalf("state under the new key: %v", got)
	}
	if got := loadAll(t, r, "Flow"); len(got) != 0 {
		t.Fatalf("state left under the old key: %v", got)
	}
}

// Each entry keeps its source partition, and LoadPartitionState gives back
// the entries of the partitions asked for ("" for those without one).
func TestLoadPartitionState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list", map[string]string{"mode": "list", "state_prefix": prefix + ":st:"})
	if err := r.CommitState(ctx, "S", "1", nil, nil, []stream.StateChange{
		{Name: "n", Key: "a", Value: []byte(`"x y"`), Partition: "t/1"},
		{Name: "n", Key: "b", Value: []byte(`2`), Partition: `odd "part" 2`},
		{Name: "w", Key: "", Value: []byte(`3`)},
	}); err != nil {
		t.Fatal(err)
	}
	load := func(parts []string) map[string]string {
		got := map[string]string{}
		if err := r.LoadPartitionState(ctx, "S", parts, func(c stream.StateChange) error {
			got[c.Name+"/"+c.Key+"@"+c.Partition] = string(c.Value)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := load([]string{"t/1", ""}); len(got) != 2 || got["n/a@t/1"] != `"x y"` || got["w/@"] != "3" {
		t.Fatalf("partitions t/1 and none: %v", got)
	}
	if got := load([]string{`odd "part" 2`}); len(got) != 1 || got[`n/b@odd "part" 2`] != "2" {
		t.Fatalf("partition odd: %v", got)
	}
	if got := load([]string{}); len(got) != 0 {
		t.Fatalf("no partitions: %v", got)
	}
	all := map[string]string{}
	if err := r.LoadState(ctx, "S", func(c stream.StateChange) error { all[c.Key+"@"+c.Partition] = string(c.Value); return nil }); err != nil || len(all) != 3 {
		t.Fatalf("all: %v %v", all, err)
	}
}
