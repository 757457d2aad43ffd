package checkpoint_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/internal/testenv"
	kstream "github.com/kisflow-go/kisflow/stream"
)

// stateDBs opens, for the test given, a database of each dialect.
var stateDBs = []struct {
	name string
	d    Dialect
	open func(t *testing.T) *sql.DB
}{
	{"postgres", Postgres, func(t *testing.T) *sql.DB { return openDB(t, "pgx", testenv.PostgresDatabase(t)) }},
	{"mysql", MySQL, func(t *testing.T) *sql.DB { return openDB(t, "mysql", testenv.MySQLDatabase(t)) }},
	{"sqlite", SQLite, func(t *testing.T) *sql.DB { return openDB(t, "sqlite", filepath.Join(t.TempDir(), "t.db")) }},
}

// A state table made by an earlier version (no partition column) gains
// the column once, even when processes start on it at once; its entries,
// without a partition, load as such, and a write gives one its partition.
func TestStateTableMigrates(t *testing.T) {
	t.Parallel()
	old := map[Dialect]string{
		Postgres: "CREATE TABLE " + StateTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
		MySQL:    "CREATE TABLE " + StateTable + " (stream VARCHAR(255) NOT NULL, id CHAR(32) NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value LONGTEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
		SQLite:   "CREATE TABLE " + StateTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id)) WITHOUT ROWID",
	}
	for _, c := range stateDBs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := c.open(t)
			if _, err := db.ExecContext(ctx, old[c.d]); err != nil {
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

// Saves that insert, update in place, move to another partition, change
// the expiry of and delete entries leave each dialect's table holding
// what a reference map says, partition by partition.
func TestSaveStateWritesEveryChange(t *testing.T) {
	t.Parallel()
	for _, c := range stateDBs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := c.open(t)
			if err := EnsureState(ctx, db, c.d); err != nil {
				t.Fatal(err)
			}
			want := map[string]kstream.StateChange{}
			key := func(ch kstream.StateChange) string { return ch.Name + "/" + ch.Key + "/" + ch.Field }
			far := time.Now().Add(time.Hour).UnixMilli()
			for round := range 4 {
				var changes []kstream.StateChange
				for i := range 900 {
					ch := kstream.StateChange{Name: "n", Key: strconv.Itoa(i), Value: []byte(strconv.Itoa(round*1000 + i)),
						Partition: "p/" + strconv.Itoa(i%3)}
					if i%2 == 0 {
						ch.Name, ch.Field = "m", `"f`+strconv.Itoa(i%5)+`"`
					}
					switch {
					case round > 0 && i%7 == round:
						ch.Partition = "p/" + strconv.Itoa((i+round)%3) // moves
					case round > 0 && i%11 == round:
						ch.Deleted, ch.Value = true, nil
					case round > 0 && i%13 == round:
						ch.ExpiresAt = far + int64(round)
					case round > 0 && i%4 == 1:
						continue // unchanged this round
					}
					changes = append(changes, ch)
					if ch.Deleted {
						delete(want, key(ch))
					} else {
						want[key(ch)] = ch
					}
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := SaveState(ctx, tx, c.d, "s", changes); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				got := map[string]kstream.StateChange{}
				for _, p := range []string{"p/0", "p/1", "p/2"} {
					if err := LoadPartitionState(ctx, db, c.d, "s", []string{p}, func(ch kstream.StateChange) error {
						if ch.Partition != p {
							t.Errorf("%s loaded with partition %s", key(ch), p)
						}
						got[key(ch)] = ch
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
				if len(got) != len(want) {
					t.Fatalf("round %d: %d entries loaded, want %d", round, len(got), len(want))
				}
				for k, w := range want {
					g := got[k]
					if string(g.Value) != string(w.Value) || g.Partition != w.Partition || g.ExpiresAt != w.ExpiresAt {
						t.Fatalf("round %d: %s loaded as %s@%s exp %d, want %s@%s exp %d", round, k, g.Value, g.Partition, g.ExpiresAt, w.Value, w.Partition, w.ExpiresAt)
					}
				}
			}
		})
	}
}
