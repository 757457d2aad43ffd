package sql

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// Keyed state commits with rows and position in one transaction, is
// loaded back without expired or deleted entries, and a failed commit
// writes none of it.
func TestCommitStateRoundTrip(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "counts", map[string]string{"create": "true"})
		ctx := context.Background()
		long := strings.Repeat("k", 300) // longer than any index column
		past := time.Now().Add(-time.Hour).UnixMilli()
		var changes []stream.StateChange
		for i := range 900 { // more than one statement's worth
			changes = append(changes, stream.StateChange{Name: "n", Key: fmt.Sprint(i), Value: []byte(fmt.Sprint(i))})
		}
		changes = append(changes,
			stream.StateChange{Name: "m", Key: long, Field: `"a"`, Value: []byte(`{"x":1}`)},
			stream.StateChange{Name: "m", Key: long, Field: `"b"`, Value: []byte(`2`)},
			stream.StateChange{Name: "old", Key: "k", Value: []byte(`1`), ExpiresAt: past})
		if err := d.CommitState(ctx, "S", "p1", []string{"i1"}, []any{map[string]any{"id": 1}}, changes); err != nil {
			t.Fatal(err)
		}
		// Update one, delete one.
		if err := d.CommitState(ctx, "S", "p2", nil, nil, []stream.StateChange{
			{Name: "n", Key: "5", Value: []byte("50")},
			{Name: "m", Key: long, Field: `"b"`, Deleted: true},
		}); err != nil {
			t.Fatal(err)
		}
		// A commit whose rows fail leaves no state.
		if err := d.CommitState(ctx, "S", "p3", nil, []any{"not a row"}, []stream.StateChange{
			{Name: "n", Key: "6", Value: []byte("60")},
		}); err == nil {
			t.Fatal("a commit with a row that cannot be written succeeded")
		}
		got := map[string]string{}
		if err := d.LoadState(ctx, "S", func(c stream.StateChange) error {
			got[c.Name+"/"+c.Key+"/"+c.Field] = string(c.Value)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != 901 || got["n/5/"] != "50" || got["n/6/"] != "6" || got["m/"+long+`/"a"`] != `{"x":1}` {
			t.Fatalf("loaded %d entries: n/5=%q n/6=%q m/a=%q", len(got), got["n/5/"], got["n/6/"], got["m/"+long+`/"a"`])
		}
		if pos, _ := d.Position(ctx, "S"); pos != "p2" {
			t.Fatalf("position %q, want p2", pos)
		}
		var other int
		if err := d.LoadState(ctx, "T", func(stream.StateChange) error { other++; return nil }); err != nil || other != 0 {
			t.Fatalf("another stream sees %d entries (%v)", other, err)
		}
	})
}

// Each entry keeps its source partition: loaded back with it, and loaded
// by partition ("" naming the entries without one); a write of the entry
// from another partition moves it there.
func TestStatePartitions(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "parted", map[string]string{"create": "true"})
		ctx := context.Background()
		if err := d.CommitState(ctx, "S", "", []string{"t/0/1"}, nil, []stream.StateChange{
			{Name: "n", Key: "a", Value: []byte("1"), Partition: "t/0"},
			{Name: "n", Key: "b", Value: []byte("2"), Partition: "t/1"},
			{Name: "n", Key: "c", Value: []byte("3"), Partition: "t/2"},
			{Name: "n", Key: "z", Value: []byte("9")},
		}); err != nil {
			t.Fatal(err)
		}
		load := func(parts []string) string {
			var got []string
			if err := d.LoadPartitionState(ctx, "S", parts, func(c stream.StateChange) error {
				got = append(got, c.Key+"="+string(c.Value)+"@"+c.Partition)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			return strings.Join(got, " ")
		}
		if got := load([]string{"t/0", "t/2"}); got != "a=1@t/0 c=3@t/2" {
			t.Fatalf("partitions t/0, t/2: %s", got)
		}
		if got := load([]string{""}); got != "z=9@" {
			t.Fatalf("no partition: %s", got)
		}
		if got := load([]string{}); got != "" {
			t.Fatalf("no partitions asked: %s", got)
		}
		if err := d.CommitState(ctx, "S", "", nil, nil, []stream.StateChange{{Name: "n", Key: "a", Value: []byte("4"), Partition: "t/3"}}); err != nil {
			t.Fatal(err)
		}
		if got := load(nil); got != "a=4@t/3 b=2@t/1 c=3@t/2 z=9@" {
			t.Fatalf("all: %s", got)
		}
	})
}
