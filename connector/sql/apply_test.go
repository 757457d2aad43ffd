package sql

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// TestApplyMode applies changes by the table's primary key, in each
// dialect: upserts, deletes, a key change and a truncate, folded per batch
// in order (a key inserted, updated and deleted in one batch, or deleted
// and inserted again).
func TestApplyMode(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{TypeSQLite, TypePostgres, TypeMySQL} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			var drv driver.Driver
			var err error
			switch dialect {
			case TypeSQLite:
				drv, err = NewSQLite(&config.Conn{CName: "replica", Type: TypeSQLite, Key: "replica",
					Params: map[string]string{"path": filepath.Join(t.TempDir(), "r.db"), "mode": "apply"}})
			case TypePostgres:
				drv, err = NewPostgres(&config.Conn{CName: "replica", Type: TypePostgres, Key: "replica",
					Params: map[string]string{"dsn": testenv.PostgresDatabase(t), "mode": "apply"}})
			case TypeMySQL:
				drv, err = NewMySQL(&config.Conn{CName: "replica", Type: TypeMySQL, Key: "replica",
					Params: map[string]string{"dsn": testenv.MySQLDatabase(t), "mode": "apply"}})
			}
			if err != nil {
				t.Fatal(err)
			}
			testApply(t, drv.(*DB))
		})
	}
}

func testApply(t *testing.T, d *DB) {
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if _, err := d.SQL().Exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v VARCHAR(100))"); err != nil {
		t.Fatal(err)
	}
	row := func(op string, id int, v string) map[string]any {
		return map[string]any{"_op": op, "_table": "public.src", "_lsn": "0/1", "id": id, "v": v}
	}
	read := func() map[int]string {
		rows, err := d.SQL().Query("SELECT id, v FROM replica")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[int]string{}
		for rows.Next() {
			var id int
			var v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			out[id] = v
		}
		return out
	}
	moved := row("update", 9, "moved")
	moved["_before"] = map[string]any{"id": 3, "v": "c"}
	steps := []struct {
		rows []any
		want map[int]string
	}{
		{[]any{row("insert", 1, "a"), row("insert", 2, "b"), row("insert", 3, "c"), row("update", 1, "a2"), row("update", 1, "a3")},
			map[int]string{1: "a3", 2: "b", 3: "c"}},
		{[]any{row("delete", 2, ""), moved, row("insert", 2, "b2"), row("delete", 1, "")},
			map[int]string{2: "b2", 9: "moved"}},
		{[]any{row("insert", 5, "e"), row("truncate", 0, ""), row("insert", 6, "f")},
			map[int]string{6: "f"}},
		// One key inserted, updated and deleted; another deleted and
		// inserted again; a third updated then deleted: the last change
		// of each wins.
		{[]any{row("insert", 4, "d"), row("update", 4, "d2"), row("delete", 4, ""),
			row("insert", 8, "h"), row("delete", 8, ""), row("insert", 8, "h2"), row("update", 6, "f2"), row("delete", 6, "")},
			map[int]string{8: "h2"}},
	}
	for i, s := range steps {
		if err := d.Write(ctx, s.rows); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := read(); len(got) != len(s.want) || func() bool {
			for k, v := range s.want {
				if got[k] != v {
					return true
				}
			}
			return false
		}() {
			t.Fatalf("step %d: replica %v, want %v", i, got, s.want)
		}
	}
	// A key read as int64 and as a JSON number is one key.
	if err := d.Write(ctx, []any{row("insert", 7, "g"), map[string]any{"_op": "delete", "id": float64(7)}}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got[7] != "" {
		t.Fatalf("the delete of 7 as a JSON number did not win: %v", got)
	}
	// Inserts of keys the replica has (changes applied again after a
	// crash): PostgreSQL's plain INSERT of fresh keys fails, and the batch
	// upserts them instead, then so do the next ones; also within an
	// exactly-once transaction, whose position is saved with them.
	same := func(want map[int]string) {
		t.Helper()
		if got := read(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("replica %v, want %v", got, want)
		}
	}
	if err := d.Write(ctx, []any{row("insert", 8, "h3"), row("insert", 10, "j"), row("update", 8, "h4")}); err != nil {
		t.Fatal(err)
	}
	same(map[int]string{8: "h4", 10: "j"})
	if d.dialect == checkpoint.Postgres && d.upsertOnly != upsertOnlyBatches {
		t.Fatalf("after a fresh key met its row: %d writes of fresh keys left to upsert, want %d", d.upsertOnly, upsertOnlyBatches)
	}
	d.upsertOnly = 0
	if err := d.CommitBatchAfter(ctx, "s", "", "p1", nil, []any{row("insert", 11, "k"), row("insert", 10, "j2"), row("delete", 8, "")}); err != nil {
		t.Fatal(err)
	}
	same(map[int]string{10: "j2", 11: "k"})
	if pos, err := d.Position(ctx, "s"); err != nil || pos != "p1" {
		t.Fatalf("position %q (err %v), want p1", pos, err)
	}
	if err := d.Write(ctx, []any{row("insert", 12, "l")}); err != nil {
		t.Fatal(err)
	}
	same(map[int]string{10: "j2", 11: "k", 12: "l"})
	if err := d.Write(ctx, []any{map[string]any{"_op": "merge", "id": 1}}); err == nil {
		t.Fatal("an unknown _op was accepted")
	}
}

// TestApplyOtherTables applies the changes of one captured table: without
// source_table a change of a second table ends the run (a fatal error)
// and nothing of its batch is written; with it, the other tables'
// changes, a truncate included, are left out.
func TestApplyOtherTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	row := func(table, op string, id int) map[string]any {
		return map[string]any{"_op": op, "_table": table, "id": id, "v": table}
	}
	for _, sourceTable := range []string{"", "a"} {
		drv, err := NewSQLite(&config.Conn{CName: "replica", Type: TypeSQLite, Key: "replica",
			Params: map[string]string{"path": filepath.Join(t.TempDir(), "r.db"), "mode": "apply", "source_table": sourceTable}})
		if err != nil {
			t.Fatal(err)
		}
		d := drv.(*DB)
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		if _, err := d.SQL().Exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v VARCHAR(100))"); err != nil {
			t.Fatal(err)
		}
		count := func() (n int) {
			if err := d.SQL().QueryRow("SELECT count(*) FROM replica WHERE v = 'public.a'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if err := d.Write(ctx, []any{row("public.a", "insert", 1), row("public.a", "insert", 2)}); err != nil {
			t.Fatal(err)
		}
		err = d.Write(ctx, []any{row("public.a", "insert", 3), row("public.b", "insert", 4), row("public.b", "truncate", 0)})
		switch {
		case sourceTable == "" && (!stream.IsFatal(err) || count() != 2):
			t.Errorf("a change of a second table: error %v and %d rows, want a fatal error and the 2 rows before", err, count())
		case sourceTable != "" && (err != nil || count() != 3):
			t.Errorf("source_table a: error %v and %d rows of a, want none and 3", err, count())
		}
	}
}

// TestApplyGroups checks the fold's pieces without a database: one key's
// identity whatever the type of its number (not a string's), the upserts
// grouped by the columns they have, and the arrays of a column typed when
// its values have one type (else []any, a NULL among them say).
func TestApplyGroups(t *testing.T) {
	id := func(k ...any) any {
		v, err := keyID(k)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if id(int64(5)) != id(5) || id(5) != id(float64(5)) || id(int32(5)) != id(int64(5)) {
		t.Fatal("5 as int64, int, int32 and a JSON number are not one key")
	}
	if id("5") == id(5) || id(`[1,2]`) == id(1, 2) || id(1, 2) == id(2, 1) || id(1, 2) != id(int64(1), float64(2)) {
		t.Fatal("distinct keys got one identity, or one key two")
	}
	d := &DB{cfg: &config.Conn{CName: "replica"}, table: "replica"}
	changes := []change{
		{key: []any{1}, row: map[string]any{"id": 1, "v": "a", "n": int64(1)}},
		{del: true, key: []any{2}},
		{key: []any{3}, row: map[string]any{"id": 3, "n": int64(3)}},
		{key: []any{4}, row: map[string]any{"id": 4, "v": nil, "n": int64(4)}},
	}
	dels, groups, err := d.applyGroups([]string{"id", "v", "n"}, changes)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dels) != "[[2]]" || len(groups) != 2 ||
		fmt.Sprint(groups[0].have, groups[0].args) != "[id v n] [1 a 1 4 <nil> 4]" ||
		fmt.Sprint(groups[1].have, groups[1].args) != "[id n] [3 3]" {
		t.Fatalf("dels %v, groups %v %v", dels, groups[0], groups[1:])
	}
	if _, _, err := d.applyGroups([]string{"id"}, []change{{key: []any{1}, row: map[string]any{"x": 1}}}); err == nil {
		t.Fatal("a row with none of the columns was accepted")
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	arrays := columnArrays([]any{int64(1), "a", at, nil, int64(2), "b", at, 1.5}, 4)
	if _, ok := arrays[0].([]int64); !ok {
		t.Fatalf("a column of int64 went as %T", arrays[0])
	}
	if _, ok := arrays[1].([]string); !ok {
		t.Fatalf("a column of strings went as %T", arrays[1])
	}
	if _, ok := arrays[2].([]time.Time); !ok {
		t.Fatalf("a column of times went as %T", arrays[2])
	}
	if got, ok := arrays[3].([]any); !ok || got[0] != nil || got[1] != 1.5 {
		t.Fatalf("a column with a NULL went as %T %v", arrays[3], arrays[3])
	}
}

// TestApplyFreshNeedsUniqueKey: on PostgreSQL, the keys a batch inserts go
// as a plain INSERT only when a unique index has the key's columns; on a
// table without one (upsert_key names columns of no such index) the rows
// are upserted, which fails, instead of inserting a key twice.
func TestApplyFreshNeedsUniqueKey(t *testing.T) {
	t.Parallel()
	d := openDB(t, TypePostgres, "nokey", map[string]string{"mode": "apply", "upsert_key": "id"})
	if _, err := d.SQL().Exec("CREATE TABLE nokey (id BIGINT NOT NULL, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err := d.Write(ctx, []any{map[string]any{"_op": "insert", "id": int64(1), "v": "a"}, map[string]any{"_op": "insert", "id": int64(2), "v": "b"}})
	var n int
	if qerr := d.SQL().QueryRow("SELECT count(*) FROM nokey").Scan(&n); qerr != nil {
		t.Fatal(qerr)
	}
	if err == nil || n != 0 {
		t.Fatalf("inserts into a table without a unique index of the key: err %v, %d rows, want the upsert's error and none", err, n)
	}
	if _, err := d.SQL().Exec("CREATE UNIQUE INDEX ON nokey (id)"); err != nil {
		t.Fatal(err)
	}
	d.keyChecked = false // a new index: looked for again
	if err := d.Write(ctx, []any{map[string]any{"_op": "insert", "id": int64(1), "v": "a"}, map[string]any{"_op": "insert", "id": int64(2), "v": "b"}}); err != nil {
		t.Fatal(err)
	}
	if !d.keyUnique {
		t.Fatal("the unique index of the key was not found")
	}
}

// TestApplyCreatedRowidKey checks the SQLite table mode apply creates:
// an integer key of one column is the table's rowid (declared INTEGER,
// no second index), and the changes apply through it; a text key, or a
// created table in the plain mode, keeps a key of no type.
func TestApplyCreatedRowidKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		mode     string
		id       any
		wantType string
	}{{"apply", int64(7), "INTEGER"}, {"apply", "seven", ""}, {"insert", int64(7), ""}} {
		d := openDBWith(t, TypeSQLite, "replica", newDatabase(t, TypeSQLite), map[string]string{"mode": c.mode, "upsert_key": "id", "create": "true"})
		row := func(op string, id any, v string) map[string]any {
			return map[string]any{"_op": op, "_table": "public.src", "id": id, "v": v}
		}
		if c.mode == "insert" {
			if err := d.Write(ctx, []any{map[string]any{"id": c.id, "v": "a"}}); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := d.Write(ctx, []any{row("insert", c.id, "a")}); err != nil {
				t.Fatal(err)
			}
			if err := d.Write(ctx, []any{row("update", c.id, "b")}); err != nil {
				t.Fatal(err)
			}
		}
		var typ string
		if err := d.SQL().QueryRow("SELECT type FROM pragma_table_info('replica') WHERE name = 'id'").Scan(&typ); err != nil {
			t.Fatal(err)
		}
		indexes := count(t, d, "SELECT count(*) FROM pragma_index_list('replica')")
		if typ != c.wantType || (typ == "INTEGER") != (indexes == 0) {
			t.Errorf("mode %s, key %v: the key column's type %q and %d indexes, want %q and an index unless INTEGER", c.mode, c.id, typ, indexes, c.wantType)
		}
		if c.mode == "apply" {
			var v string
			if err := d.SQL().QueryRow("SELECT v FROM replica WHERE id = ?", c.id).Scan(&v); err != nil || v != "b" {
				t.Errorf("key %v: v %q (err %v), want the update's b", c.id, v, err)
			}
			if err := d.Write(ctx, []any{row("delete", c.id, "")}); err != nil {
				t.Fatal(err)
			}
			if n := count(t, d, "SELECT count(*) FROM replica"); n != 0 {
				t.Errorf("key %v: %d rows after the delete, want 0", c.id, n)
			}
		}
	}
}
