package sql

import (
	"context"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
)

// IDs older than inbox_ttl are deleted at the next commit of their
// stream; younger ones and other streams' stay.
func TestInboxPrunedByAge(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", map[string]string{"create": "true", "inbox_ttl": "1h"})
		ctx := context.Background()
		for _, c := range []struct{ stream, id string }{{"s", "old1"}, {"s", "old2"}, {"other", "old3"}, {"s", "young"}} {
			if err := d.CommitBatch(ctx, c.stream, "", []string{c.id}, nil); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-2 * time.Hour).Unix()
		q := "UPDATE kisflow_inbox SET committed_at = ? WHERE id IN ('old1', 'old2', 'old3')"
		if typ == TypePostgres {
			q = "UPDATE kisflow_inbox SET committed_at = $1 WHERE id IN ('old1', 'old2', 'old3')"
		}
		if _, err := d.SQL().ExecContext(ctx, q, old); err != nil {
			t.Fatal(err)
		}
		// Not due yet: the first commit pruned, the next is an hour away.
		if err := d.CommitBatch(ctx, "s", "", []string{"new1"}, nil); err != nil {
			t.Fatal(err)
		}
		if n := count(t, d, "SELECT count(*) FROM kisflow_inbox"); n != 5 {
			t.Fatalf("%d IDs before the prune is due, want 5", n)
		}
		d.pruneMu.Lock()
		clear(d.nextPrune)
		d.pruneMu.Unlock()
		if err := d.CommitBatch(ctx, "s", "", []string{"new2"}, nil); err != nil {
			t.Fatal(err)
		}
		seen, err := d.Seen(ctx, "s", []string{"old1", "old2", "young", "new1", "new2"})
		if err != nil {
			t.Fatal(err)
		}
		if seen["old1"] || seen["old2"] || !seen["young"] || !seen["new1"] || !seen["new2"] {
			t.Fatalf("after the prune: %v, want young, new1 and new2 only", seen)
		}
		if other, _ := d.Seen(ctx, "other", []string{"old3"}); !other["old3"] {
			t.Fatal("a commit of stream s pruned stream other")
		}
	})
}

// An inbox made before committed_at existed gets the column, and keeps
// its IDs.
func TestInboxMigratesAnOldTable(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		base := newDatabase(t, typ)
		d := openDBWith(t, typ, "orders", base, nil)
		ctx := context.Background()
		old := "CREATE TABLE kisflow_inbox (stream TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (stream, id))"
		if typ == TypeMySQL {
			old = "CREATE TABLE kisflow_inbox (stream VARCHAR(255) NOT NULL, id VARCHAR(255) NOT NULL, PRIMARY KEY (stream, id))"
		}
		for _, q := range []string{"DROP TABLE kisflow_inbox", old, "INSERT INTO kisflow_inbox (stream, id) VALUES ('s', 'm1')"} {
			if _, err := d.SQL().ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		d2 := openDBWith(t, typ, "orders", base, nil)
		if err := d2.CommitBatch(ctx, "s", "", []string{"m2"}, nil); err != nil {
			t.Fatal(err)
		}
		seen, err := d2.Seen(ctx, "s", []string{"m1", "m2"})
		if err != nil || !seen["m1"] || !seen["m2"] {
			t.Fatalf("after the migration: %v %v", seen, err)
		}
		if n := count(t, d2, "SELECT count(*) FROM kisflow_inbox WHERE committed_at > 0"); n != 2 {
			t.Fatalf("%d dated IDs, want 2", n)
		}
		if err := checkpoint.EnsureInbox(ctx, d2.SQL(), d2.dialect); err != nil {
			t.Fatalf("a second start: %v", err)
		}
	})
}
