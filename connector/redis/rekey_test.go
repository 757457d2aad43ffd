package redis

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// The position (with its commit time) and inbox an earlier version committed under the flow name
// move to the new key once, atomically; of racing processes one moves
// them, and nothing moves over state the new key already has.
func TestRekeyMovesLegacyStateOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list", map[string]string{"mode": "list", "state_prefix": prefix + ":state:"}) // removes prefix* at the end
	if err := r.CommitBatch(ctx, "Flow", "7", []string{"a", "b"}, []any{map[string]any{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	before, err := r.PositionTime(ctx, "Flow")
	if err != nil || before.IsZero() || time.Since(before) > time.Minute {
		t.Fatalf("commit time %v %v", before, err)
	}
	var wg sync.WaitGroup
	moved := make([]bool, 4)
	for i := range moved {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if moved[i], err = r.Rekey(ctx, "Flow", "Flow@x"); err != nil {
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
		t.Fatalf("%d of 4 racing Rekeys moved the state, want 1", n)
	}
	if pos, _ := r.Position(ctx, "Flow@x"); pos != "7" {
		t.Fatalf("position under the new key %q", pos)
	}
	if at, _ := r.PositionTime(ctx, "Flow@x"); !at.Equal(before) {
		t.Fatalf("commit time under the new key %v, want %v", at, before)
	}
	if seen, _ := r.Seen(ctx, "Flow@x", []string{"a", "b", "c"}); !seen["a"] || !seen["b"] || seen["c"] {
		t.Fatalf("inbox under the new key: %v", seen)
	}
	if pos, _ := r.Position(ctx, "Flow"); pos != "" {
		t.Fatalf("the old key still holds %q", pos)
	}
	// An old process commits under the flow name again: nothing moves
	// over the new key's state.
	if err := r.CommitBatch(ctx, "Flow", "9", []string{"c"}, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Rekey(ctx, "Flow", "Flow@x"); m || err != nil {
		t.Fatalf("moved over existing state: %v %v", m, err)
	}
	if pos, _ := r.Position(ctx, "Flow@x"); pos != "7" {
		t.Fatalf("the new key's position became %q", pos)
	}
}
