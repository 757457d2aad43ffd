package checkpoint_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql" // the database/sql driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	. "github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/internal/testenv"
	kstream "github.com/kisflow-go/kisflow/stream"
)

// Seen's query looks up each ID through the primary key of the inbox,
// and reads only the index (MariaDB's primary key holds the rows,
// SQLite's is covering), even when the planner's statistics predate the
// stream looked up: a lookup of a batch is one descent per ID, never a
// read of all of the stream's IDs. So on an inbox made by an earlier
// version, once EnsureInbox migrated it, with its IDs kept.
func TestSeenLooksUpThroughThePrimaryKey(t *testing.T) {
	t.Parallel()
	type dialect struct {
		name string
		d    Dialect
		open func(t *testing.T) *sql.DB
		want func(t *testing.T, plan []string)
		old  []string // an inbox as an earlier version made it
	}
	dialects := []dialect{
		{"postgres", Postgres, func(t *testing.T) *sql.DB { return openDB(t, "pgx", testenv.PostgresDatabase(t)) },
			func(t *testing.T, plan []string) {
				all := strings.Join(plan, "\n")
				if strings.Contains(all, "Filter") || !strings.Contains(all, "Index Cond: ((id = ANY") || !strings.Contains(all, InboxTable+"_pkey") {
					t.Fatalf("plan:\n%s\nwant a lookup of each ID through %s_pkey", all, InboxTable)
				}
			},
			[]string{"CREATE TABLE " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
				"CREATE INDEX " + InboxTable + "_age ON " + InboxTable + " (stream, committed_at)"}},
		{"mysql", MySQL, func(t *testing.T) *sql.DB { return openDB(t, "mysql", testenv.MySQLDatabase(t)) },
			func(t *testing.T, plan []string) {
				// EXPLAIN's columns: id select_type table type possible_keys key ... Extra.
				if len(plan) != 1 || !strings.Contains(plan[0], " range ") || !strings.Contains(plan[0], " PRIMARY ") || !strings.Contains(plan[0], "Using index") {
					t.Fatalf("plan: %q, want a range of the PRIMARY key, using the index only", plan)
				}
			}, nil},
		{"sqlite", SQLite, func(t *testing.T) *sql.DB { return openDB(t, "sqlite", filepath.Join(t.TempDir(), "t.db")) },
			func(t *testing.T, plan []string) {
				want := "SEARCH " + InboxTable + " USING COVERING INDEX " + InboxPK + " (stream=? AND id=?)"
				if len(plan) != 1 || !strings.Contains(plan[0], want) {
					t.Fatalf("plan: %q, want %q", plan, want)
				}
			}, nil},
	}
	type variant struct {
		name string
		dialect
	}
	var cases []variant
	for _, c := range dialects {
		cases = append(cases, variant{c.name, c})
		if c.old != nil {
			cases = append(cases, variant{c.name + "/migrated", c})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := c.open(t)
			migrated := strings.HasSuffix(c.name, "/migrated")
			if migrated {
				for _, q := range c.old {
					if _, err := db.ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
			} else if err := EnsureInbox(ctx, db, c.d); err != nil {
				t.Fatal(err)
			}
			// Statistics taken when the inbox held another stream's IDs
			// only, then 5,000 IDs of the stream looked up.
			ids := make([]string, 5000)
			for i := range ids {
				ids[i] = fmt.Sprint(i + 1)
			}
			if err := SaveInbox(ctx, db, c.d, "other", ids); err != nil {
				t.Fatal(err)
			}
			analyze := map[Dialect]string{Postgres: "ANALYZE " + InboxTable, MySQL: "ANALYZE TABLE " + InboxTable, SQLite: "ANALYZE"}[c.d]
			if _, err := db.ExecContext(ctx, analyze); err != nil {
				t.Fatal(err)
			}
			if err := SaveInbox(ctx, db, c.d, "s", ids); err != nil {
				t.Fatal(err)
			}
			if migrated {
				if err := EnsureInbox(ctx, db, c.d); err != nil {
					t.Fatal(err)
				}
				if err := EnsureInbox(ctx, db, c.d); err != nil {
					t.Fatalf("a second start: %v", err)
				}
			}
			seen, err := Seen(ctx, db, c.d, "s", []string{"1", "5000", "5001"})
			if err != nil || len(seen) != 2 || !seen["1"] || !seen["5000"] {
				t.Fatalf("seen %v, %v; want 1 and 5000", seen, err)
			}
			if err := SaveInbox(ctx, db, c.d, "s", []string{"5000"}); !errors.Is(err, kstream.ErrAlreadyCommitted) {
				t.Fatalf("recording an ID again: %v, want ErrAlreadyCommitted", err)
			}
			q, done, err := LookupIn(ctx, db, c.d)
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			query, args := SeenQuery(c.d, "s", ids[len(ids)-500:])
			explain := map[Dialect]string{Postgres: "EXPLAIN ", MySQL: "EXPLAIN ", SQLite: "EXPLAIN QUERY PLAN "}[c.d]
			plan, err := explainRows(ctx, q, explain+query, args)
			if err != nil {
				t.Fatal(err)
			}
			c.want(t, plan)
			if c.d == Postgres { // pruning compares stream as its index does
				plan, err := explainRows(ctx, db, "EXPLAIN "+PruneQuery(c.d), []any{"s", 1, 10})
				if err != nil {
					t.Fatal(err)
				}
				if all := strings.Join(plan, "\n"); !strings.Contains(all, "Index Scan using "+InboxTable+"_prune ") || strings.Contains(all, "Filter") || strings.Contains(all, "Sort") {
					t.Fatalf("prune plan:\n%s\nwant the oldest IDs of the stream read in order from %s_prune", all, InboxTable)
				}
			}
		})
	}
}

func openDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// explainRows returns the rows of an EXPLAIN, each as its columns joined
// by spaces (NULL as an empty column).
func explainRows(ctx context.Context, q Querier, query string, args []any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		var b strings.Builder
		for _, v := range vals {
			b.WriteString(v.String + " ")
		}
		out = append(out, b.String())
	}
	return out, rows.Err()
}

// Processes that start at once on an inbox made by an earlier version all
// start: one migrates it, the others find it done.
func TestInboxMigratesOnceWhenStartedTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, "pgx", testenv.PostgresDatabase(t))
	for _, q := range []string{
		"CREATE TABLE " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
		"CREATE INDEX " + InboxTable + "_age ON " + InboxTable + " (stream, committed_at)",
		"INSERT INTO " + InboxTable + " (stream, id, committed_at) SELECT 's', g::text, 1 FROM generate_series(1, 100000) g",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() { errs <- EnsureInbox(ctx, db, Postgres) }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("a start: %v", err)
		}
	}
	var key string
	if err := db.QueryRowContext(ctx, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '"+InboxTable+"'::regclass AND contype = 'p'").Scan(&key); err != nil {
		t.Fatal(err)
	}
	var indexes int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_indexes WHERE tablename = '"+InboxTable+"'").Scan(&indexes); err != nil {
		t.Fatal(err)
	}
	if key != "PRIMARY KEY (id, stream)" || indexes != 2 {
		t.Fatalf("after the starts: %s and %d indexes, want PRIMARY KEY (id, stream) and the pruning index", key, indexes)
	}
	if seen, err := Seen(ctx, db, Postgres, "s", []string{"1", "100000", "100001"}); err != nil || len(seen) != 2 {
		t.Fatalf("seen %v, %v; want 1 and 100000", seen, err)
	}
}
