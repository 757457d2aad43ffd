package sql

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestBatchWritesEqualRowByRow writes the same rows, of every common Go
// type (numbers from JSON as float64, times, nil, nested values), in one
// batch and one row at a time into two tables: both hold the same. A
// batch goes as prepared multi-row statements (PostgreSQL: one array per
// column), a single row as a one-row statement.
func TestBatchWritesEqualRowByRow(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 30, 12, 0, 0, 123456000, time.UTC)
	var rows []any
	for i := range 37 { // 32 + 4 + 1: three statement sizes
		var id any = int64(i)
		switch i % 3 {
		case 1:
			id = float64(i) // a JSON number
		case 2:
			id = i
		}
		var v any = fmt.Sprintf("row %d", i)
		if i%5 == 0 {
			v = nil
		}
		rows = append(rows, map[string]any{"id": id, "v": v, "f": float64(i) / 4, "b": i%2 == 0, "at": at.Add(time.Duration(i) * time.Second),
			"doc": map[string]any{"i": i, "tags": []any{"a", "b"}}})
	}
	each(t, func(t *testing.T, typ string) {
		base := newDatabase(t, typ)
		schema := "(id BIGINT PRIMARY KEY, v VARCHAR(40), f DOUBLE PRECISION, b BOOLEAN, at TIMESTAMP, doc TEXT)"
		if typ == TypePostgres {
			schema = "(id BIGINT PRIMARY KEY, v VARCHAR(40), f DOUBLE PRECISION, b BOOLEAN, at TIMESTAMPTZ, doc JSONB)"
		}
		if typ == TypeMySQL {
			schema = "(id BIGINT PRIMARY KEY, v VARCHAR(40), f DOUBLE, b BOOLEAN, at DATETIME(6), doc TEXT)"
		}
		read := map[string][]string{}
		for _, table := range []string{"batch", "single", "upsert"} {
			for _, mode := range []map[string]string{{}, {"mode": "apply"}} {
				name := table + mode["mode"]
				d := openDBWith(t, typ, name, base, map[string]string{"mode": mode["mode"], "upsert_key": map[bool]string{true: "id"}[table == "upsert" || mode["mode"] == "apply"]})
				if _, err := d.SQL().Exec("CREATE TABLE " + d.quote(name) + " " + schema); err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				switch table {
				case "batch":
					if err := d.Write(ctx, rows); err != nil {
						t.Fatal(err)
					}
				case "single":
					for _, r := range rows {
						if err := d.Write(ctx, []any{r}); err != nil {
							t.Fatal(err)
						}
					}
				case "upsert": // twice: the second batch updates every row
					for range 2 {
						if err := d.Write(ctx, rows); err != nil {
							t.Fatal(err)
						}
					}
				}
				read[name] = dump(t, d, name)
				if typ == TypePostgres && table != "single" {
					// The batch went as arrays, not as a VALUES list.
					for k := range d.stmts.m {
						if k.kind == 'i' && k.n > 1 {
							t.Errorf("%s: rows went as a VALUES list of %d, not as arrays", name, k.n)
						}
					}
				}
			}
		}
		for name, got := range read {
			if want := read["single"]; !reflect.DeepEqual(got, want) {
				t.Errorf("%s holds\n%v\nrow by row:\n%v", name, got, want)
			}
		}
		if len(read["single"]) != len(rows) {
			t.Errorf("%d rows, want %d", len(read["single"]), len(rows))
		}
	})
}

// dump is a table's rows as text, by id.
func dump(t *testing.T, d *DB, table string) []string {
	t.Helper()
	rs, err := d.SQL().Query("SELECT id, v, f, b, at, doc FROM " + d.quote(table) + " ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		vals := make([]any, 6)
		ptrs := make([]any, 6)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostgresArraysFollowATypeChange: a column's type changed under a
// running sink (text to jsonb, which takes no text without a cast) fails
// the batch sent with the old type at most once; the next attempt, as the
// runtime's retry, reads the types again and writes.
func TestPostgresArraysFollowATypeChange(t *testing.T) {
	t.Parallel()
	d := openDB(t, TypePostgres, "t", map[string]string{"upsert_key": "id"})
	ctx := context.Background()
	if _, err := d.SQL().Exec("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	batch := func(from int) []any {
		return []any{map[string]any{"id": from, "v": `{"a": 1}`}, map[string]any{"id": from + 1, "v": `{"b": 2}`}}
	}
	if err := d.Write(ctx, batch(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SQL().Exec("ALTER TABLE t ALTER v TYPE jsonb USING v::jsonb"); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, batch(3)); err != nil {
		t.Logf("the first batch after the change: %v", err)
		if err := d.Write(ctx, batch(3)); err != nil {
			t.Fatalf("the batch again: %v", err)
		}
	}
	if n := count(t, d, `SELECT count(*) FROM t WHERE v->>'a' = '1' OR v->>'b' = '2'`); n != 4 {
		t.Fatalf("%d rows hold their JSON, want 4", n)
	}
}
