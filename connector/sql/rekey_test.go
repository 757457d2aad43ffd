package sql

import (
	"context"
	"sync"
	"testing"
	"time"
)

// State an earlier version committed under the flow name alone (position
// and inbox) moves to the new key once, with its commit time; it is left
// alone when the new key has state, or when another key of the flow has
// (it may be that one's); of racing processes, one moves it.
func TestRekeyMovesLegacyStateOnce(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", map[string]string{"create": "true"})
		ctx := context.Background()
		if err := d.CommitBatch(ctx, "Flow", "42", []string{"m1", "m2"}, nil); err != nil {
			t.Fatal(err)
		}
		before, err := d.PositionTime(ctx, "Flow")
		if err != nil || before.IsZero() || time.Since(before) > time.Minute {
			t.Fatalf("commit time %v %v", before, err)
		}
		const key = "Flow@redis:127.0.0.1:6379/orders"
		// Racing processes: exactly one moves it.
		var wg sync.WaitGroup
		moved := make([]bool, 12)
		for i := range moved {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if moved[i], err = d.Rekey(ctx, "Flow", key); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		n := 0
		for _, m := range moved {
			if m {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d of 12 racing Rekeys moved the state, want 1", n)
		}
		if pos, _ := d.Position(ctx, key); pos != "42" {
			t.Fatalf("position under the new key: %q", pos)
		}
		if at, _ := d.PositionTime(ctx, key); !at.Equal(before) {
			t.Fatalf("commit time %v, want %v kept", at, before)
		}
		if seen, _ := d.Seen(ctx, key, []string{"m1", "m2", "m3"}); !seen["m1"] || !seen["m2"] || seen["m3"] {
			t.Fatalf("inbox under the new key: %v", seen)
		}
		if pos, _ := d.Position(ctx, "Flow"); pos != "" {
			t.Fatalf("the old key still holds %q", pos)
		}
		if seen, _ := d.Seen(ctx, "Flow", []string{"m1"}); seen["m1"] {
			t.Fatal("the old key still holds its inbox")
		}
		// An old process writes under the flow name again: the new key has
		// state, nothing moves.
		if err := d.CommitBatch(ctx, "Flow", "50", []string{"m9"}, nil); err != nil {
			t.Fatal(err)
		}
		if m, err := d.Rekey(ctx, "Flow", key); m || err != nil {
			t.Fatalf("moved over existing state: %v %v", m, err)
		}
		// Nor to a third key of the same flow: the old state may be the
		// second one's.
		if m, err := d.Rekey(ctx, "Flow", "Flow@file:/data/orders.jsonl"); m || err != nil {
			t.Fatalf("moved while another key of the flow has state: %v %v", m, err)
		}
		if pos, _ := d.Position(ctx, "Flow"); pos != "50" {
			t.Fatalf("the refused move changed the old key: %q", pos)
		}
		// A flow whose name has LIKE's wildcards is not mistaken for
		// another: "F_ow@..." is not a key of flow "F_ow".
		if err := d.CommitBatch(ctx, "F_ow", "7", nil, nil); err != nil {
			t.Fatal(err)
		}
		if m, err := d.Rekey(ctx, "F_ow", "F_ow@generator:/conf/gen"); !m || err != nil {
			t.Fatalf("flow F_ow: moved %v %v", m, err)
		}
	})
}
