package checkpoint

import (
	"context"
	"path/filepath"
	"testing"
)

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A position kept under the flow name alone moves to the flow's new key
// once, keeping its commit time.
func TestStoreRekey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "checkpoints.db"))
	if err := s.SavePosition(ctx, "Flow", "10"); err != nil {
		t.Fatal(err)
	}
	at, _ := s.PositionTime(ctx, "Flow")
	const key = "Flow@file:/data/a.jsonl"
	if m, err := s.Rekey(ctx, "Flow", key); !m || err != nil {
		t.Fatalf("moved %v %v", m, err)
	}
	if pos, _ := s.Position(ctx, key); pos != "10" {
		t.Fatalf("position %q under the new key", pos)
	}
	if got, _ := s.PositionTime(ctx, key); at.IsZero() || !got.Equal(at) {
		t.Fatalf("commit time %v, want %v", got, at)
	}
	if m, err := s.Rekey(ctx, "Flow", key); m || err != nil {
		t.Fatalf("moved twice: %v %v", m, err)
	}
	if m, err := s.Rekey(ctx, "Other", "Other@file:/x"); m || err != nil {
		t.Fatalf("moved a key that has no state: %v %v", m, err)
	}
}

// Adopt takes a position from an older store, once, and only when the
// new store has none of the flow's.
func TestStoreAdopt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	old := openStore(t, filepath.Join(dir, "old.db"))
	cur := openStore(t, filepath.Join(dir, "new.db"))
	for stream, pos := range map[string]string{"A": "1", "B": "2"} {
		if err := old.SavePosition(ctx, stream, pos); err != nil {
			t.Fatal(err)
		}
	}
	oldAt, _ := old.PositionTime(ctx, "A")
	if pos, err := cur.Adopt(ctx, old, "A"); pos != "1" || err != nil {
		t.Fatalf("adopted %q %v", pos, err)
	}
	if at, _ := cur.PositionTime(ctx, "A"); !at.Equal(oldAt) {
		t.Fatalf("commit time %v, want the old store's %v", at, oldAt)
	}
	if pos, _ := old.Position(ctx, "A"); pos != "" {
		t.Fatalf("the old store still holds %q", pos)
	}
	if pos, err := cur.Adopt(ctx, old, "A"); pos != "" || err != nil {
		t.Fatalf("adopted twice: %q %v", pos, err)
	}
	// B has a position of its own under its new key: the old one stays.
	if err := cur.SavePosition(ctx, "B@generator:/conf/gen", "5"); err != nil {
		t.Fatal(err)
	}
	if pos, err := cur.Adopt(ctx, old, "B"); pos != "" || err != nil {
		t.Fatalf("adopted over a position of the flow's: %q %v", pos, err)
	}
	if pos, _ := old.Position(ctx, "B"); pos != "2" {
		t.Fatalf("the old store lost B: %q", pos)
	}
}
