package checkpoint_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	. "github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/internal/testenv"
	kstream "github.com/kisflow-go/kisflow/stream"
)

// A state table made by an earlier version (no partition column) gains
// the column once, even when processes start on it at once; its entries,
// without a partition, load as such, and a write gives one its partition.
func TestStateTableMigrates(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		d    Dialect
		open func(t *testing.T) *sql.DB
		old  string
	}{
		{"postgres", Postgres, func(t *testing.T) *sql.DB { return openDB(t, "pgx", testenv.PostgresDatabase(t)) },
			"CREATE TABLE " + StateTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))"},
		{"mysql", MySQL, func(t *testing.T) *sql.DB { return openDB(t, "mysql", testenv.MySQLDatabase(t)) },
			"CREATE TABLE " + StateTable + " (stream VARCHAR(255) NOT NULL, id CHAR(32) NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value LONGTEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))"},
		{"sqlite", SQLite, func(t *testing.T) *sql.DB { return openDB(t, "sqlite", filepath.Join(t.TempDir(), "t.db")) },
			"CREATE TABLE " + StateTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id)) WITHOUT ROWID"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := c.open(t)
			if _, err := db.ExecContext(ctx, c.old); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "INSERT INTO "+StateTable+" (stream, id, name, skey, field, value, expires_at) VALUES ('s', 'x', 'n', 'old', '', '7', 0)"); err != nil {
				t.Fatal(err)
			}
			starts := 1
			if c.d != SQLite {
				starts = 4
			}
			errs := make(chan error, starts)
			for range starts {
				go func() { errs <- EnsureState(ctx, db, c.d) }()
			}
			for range starts {
				if err := <-errs; err != nil {
					t.Fatalf("a start: %v", err)
				}
			}
			if err := EnsureState(ctx, db, c.d); err != nil {
				t.Fatalf("a later start: %v", err)
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := SaveState(ctx, tx, c.d, "s", []kstream.StateChange{{Name: "n", Key: "new", Value: []byte("1"), Partition: "t/1"}}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			if err := LoadPartitionState(ctx, db, c.d, "s", []string{"", "t/1"}, func(ch kstream.StateChange) error {
				got[ch.Key] = string(ch.Value) + "@" + ch.Partition
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got["old"] != "7@" || got["new"] != "1@t/1" {
				t.Fatalf("loaded %v, want old=7 without a partition and new=1 at t/1", got)
			}
		})
	}
}
