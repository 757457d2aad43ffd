package sql

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/config"
)

type order struct {
	ID    int     `json:"order_id"`
	Total float64 `json:"total"`
	Note  string  `json:"-"`
}

func openDB(t *testing.T, params map[string]string) *DB {
	t.Helper()
	if params["path"] == "" {
		params["path"] = filepath.Join(t.TempDir(), "t.db")
	}
	d, err := NewSQLite(&config.Conn{CName: "db", Type: TypeSQLite, Key: "orders", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d.(*DB)
}

func count(t *testing.T, d *DB, q string) int {
	t.Helper()
	var n int
	if err := d.SQL().QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWriteCreatesTableFromRows(t *testing.T) {
	t.Parallel()
	d := openDB(t, map[string]string{"create": "true"})
	ctx := context.Background()
	rows := []any{&order{ID: 1, Total: 9.5}, map[string]any{"order_id": 2, "total": 3}, `{"order_id":3,"total":1.25}`}
	if err := d.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if n := count(t, d, "SELECT count(*) FROM orders WHERE total > 1"); n != 3 {
		t.Fatalf("rows: %d", n)
	}
	// Many rows span several INSERT statements.
	many := make([]any, 1234)
	for i := range many {
		many[i] = &order{ID: 100 + i}
	}
	if err := d.Write(ctx, many); err != nil {
		t.Fatal(err)
	}
	if n := count(t, d, "SELECT count(DISTINCT order_id) FROM orders"); n != 1237 {
		t.Fatalf("distinct ids: %d", n)
	}
}

func TestWriteWithoutTableIsAClearError(t *testing.T) {
	t.Parallel()
	d := openDB(t, map[string]string{})
	err := d.Write(context.Background(), []any{map[string]any{"a": 1}})
	if err == nil || !strings.Contains(err.Error(), "table orders does not exist") {
		t.Fatalf("got %v", err)
	}
}

func TestCommitBatchIsAtomicWithPosition(t *testing.T) {
	t.Parallel()
	d := openDB(t, map[string]string{"create": "true", "columns": "order_id, total"})
	ctx := context.Background()
	if err := d.CommitBatch(ctx, "s", "42", []any{&order{ID: 1}}); err != nil {
		t.Fatal(err)
	}
	if pos, _ := d.Position(ctx, "s"); pos != "42" {
		t.Fatalf("position %q", pos)
	}
	// A row that cannot be written rolls the position back too.
	if err := d.CommitBatch(ctx, "s", "43", []any{&order{ID: 2}, 17}); err == nil {
		t.Fatal("bad row: no error")
	}
	if pos, _ := d.Position(ctx, "s"); pos != "42" || count(t, d, "SELECT count(*) FROM orders") != 1 {
		t.Fatalf("after a failed commit: position %q, rows %d", pos, count(t, d, "SELECT count(*) FROM orders"))
	}
}

func TestLoadQuery(t *testing.T) {
	t.Parallel()
	d := openDB(t, map[string]string{"create": "true", "load_query": "SELECT total FROM orders WHERE order_id = :order_id"})
	ctx := context.Background()
	_ = d.Write(ctx, []any{&order{ID: 7, Total: 70}})
	got, err := d.Load(ctx, map[string]any{"order_id": 7})
	if err != nil || len(got) != 1 || got[0]["total"] != 70.0 {
		t.Fatalf("load: %v %v", got, err)
	}
	if _, err := d.Load(ctx, map[string]any{"other": 1}); err == nil || !strings.Contains(err.Error(), `needs field "order_id"`) {
		t.Fatalf("missing field: %v", err)
	}
}

func TestBadIdentifiersAreRejected(t *testing.T) {
	t.Parallel()
	if _, err := NewSQLite(&config.Conn{CName: "db", Key: "orders; DROP TABLE x", Params: map[string]string{"path": "x.db"}}); err == nil {
		t.Fatal("table name with SQL in it: no error")
	}
	if _, err := NewSQLite(&config.Conn{CName: "db", Key: "t"}); err == nil {
		t.Fatal("no path: no error")
	}
}
