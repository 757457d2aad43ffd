package sql

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

func TestParseLoadQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		q, field, err string
	}{
		{"SELECT id AS uid FROM u WHERE id IN (:uid)", "uid", ""},
		{"select id as uid from u where id in(  :uid  ) order by 1", "uid", ""},
		{"SELECT id::text AS uid, ':x' AS s, \"a:b\" FROM u WHERE id IN (:uid)", "uid", ""},
		{"SELECT 1 FROM u WHERE id = :uid", "", "write the placeholder as IN (:uid)"},
		{"SELECT 1 FROM u WHERE id IN (:a) AND b IN (:b)", "", "has 2 placeholders"},
		{"SELECT 1 FROM u", "", "no :field placeholder"},
		{"SELECT 'x FROM u WHERE id IN (:uid)", "", "unterminated"},
	}
	for _, tt := range tests {
		l, err := parseLoadQuery(tt.q)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want %q", tt.q, err, tt.err)
		case tt.err == "" && (err != nil || l.field != tt.field):
			t.Errorf("%q: %v %+v, want field %q", tt.q, err, l, tt.field)
		}
	}
}

// TestLoadLookup looks up 2501 keys (one has no row) in each dialect: more
// than one query's worth of binds, rows matched to their keys whatever
// the number type of the key.
func TestLoadLookup(t *testing.T) {
	t.Parallel()
	const n = 2500
	for _, typ := range dialects {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			d := openDB(t, typ, "users", map[string]string{"create": "true"})
			rows := make([]any, n)
			for i := range rows {
				rows[i] = map[string]any{"id": int64(i + 1), "name": fmt.Sprint("u", i+1)}
			}
			if err := d.Write(ctx, rows); err != nil {
				t.Fatal(err)
			}
			query := "SELECT id AS uid, name FROM users WHERE id IN (:uid)"
			if typ == TypePostgres {
				// A sequence drawn once per query counts them.
				if _, err := d.SQL().ExecContext(ctx, "CREATE SEQUENCE q"); err != nil {
					t.Fatal(err)
				}
				query = "WITH n AS (SELECT nextval('q')) SELECT id AS uid, name FROM users, n WHERE id IN (:uid)"
			}
			lk, err := d.LoadLookup(map[string]string{"load_query": query})
			if err != nil {
				t.Fatal(err)
			}
			keys := make([]any, 0, n+1)
			for i := 1; i <= n+1; i++ {
				var v any = int64(i)
				if i%2 == 0 {
					v = float64(i) // as JSON decodes it
				}
				k, err := lk.Key(map[string]any{"uid": v})
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			recs, err := lk.Fetch(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			for i, rec := range recs {
				id := i + 1
				if id == n+1 {
					if rec != nil {
						t.Fatalf("key %d has no row, got %v", id, rec)
					}
					continue
				}
				if rec == nil || rec["name"] != fmt.Sprint("u", id) || len(rec) != 1 {
					t.Fatalf("key %d: %v", id, rec)
				}
			}
			if typ == TypePostgres {
				var queries int64
				if err := d.SQL().QueryRowContext(ctx, "SELECT last_value FROM q").Scan(&queries); err != nil {
					t.Fatal(err)
				}
				if want := int64((n + maxLoadKeys) / maxLoadKeys); queries != want {
					t.Fatalf("%d queries for %d keys, want %d", queries, n+1, want)
				}
			}
			if _, err := lk.Key(map[string]any{"id": 1}); err == nil {
				t.Fatal("a row without the key's field has a key")
			}

			// A result without the key column, or a missing table, is a
			// configuration error: it ends the job.
			for _, q := range []string{"SELECT name FROM users WHERE id IN (:uid)", "SELECT id AS uid FROM nosuch WHERE id IN (:uid)"} {
				lk, err := d.LoadLookup(map[string]string{"load_query": q})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := lk.Fetch(ctx, []any{int64(1)}); !stream.IsFatal(err) {
					t.Fatalf("%q: %v, want a fatal error", q, err)
				}
				// dry-run finds it without a key.
				if err := lk.(kisflow.LookupChecker).CheckLookup(ctx); !stream.IsFatal(err) {
					t.Fatalf("%q: check: %v, want a fatal error", q, err)
				}
			}
			if err := lk.(kisflow.LookupChecker).CheckLookup(ctx); err != nil {
				t.Fatalf("check of %q: %v", query, err)
			}
		})
	}
}

// TestLoadQueryExampleWorks runs the load_query example each SQL spec
// prints (kisflow list, the README's params tables) as a Load would.
func TestLoadQueryExampleWorks(t *testing.T) {
	t.Parallel()
	for _, spec := range []*driver.Spec{SQLiteSpec, MySQLSpec, PostgresSpec} {
		p, ok := spec.Param("load_query")
		if !ok || p.Example == "" {
			t.Fatalf("%s: no load_query example", spec.Type)
		}
		t.Run(spec.Type, func(t *testing.T) {
			t.Parallel()
			d := openDB(t, spec.Type, "users", map[string]string{"create": "true"})
			ctx := context.Background()
			if err := d.Write(ctx, []any{map[string]any{"id": int64(7), "name": "ann"}}); err != nil {
				t.Fatal(err)
			}
			lk, err := d.LoadLookup(map[string]string{"load_query": p.Example})
			if err != nil {
				t.Fatalf("%q: %v", p.Example, err)
			}
			k, err := lk.Key(map[string]any{"user_id": float64(7)})
			if err != nil {
				t.Fatal(err)
			}
			recs, err := lk.Fetch(ctx, []any{k})
			if err != nil {
				t.Fatalf("%q: %v", p.Example, err)
			}
			if len(recs) != 1 || recs[0]["name"] != "ann" {
				t.Fatalf("%q: %v, want user 7's name", p.Example, recs)
			}
		})
	}
}
