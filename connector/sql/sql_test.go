package sql

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

type order struct {
	ID    int     `json:"order_id"`
	Total float64 `json:"total"`
	Note  string  `json:"-"`
}

var dialects = []string{TypeSQLite, TypePostgres, TypeMySQL}

// newDatabase makes a database of its own for one test and returns the
// connector params that reach it.
func newDatabase(t testing.TB, typ string) map[string]string {
	t.Helper()
	switch typ {
	case TypeSQLite:
		return map[string]string{"path": filepath.Join(t.TempDir(), "t.db")}
	case TypePostgres:
		return map[string]string{"dsn": testenv.PostgresDatabase(t)}
	case TypeMySQL:
		return map[string]string{"dsn": testenv.MySQLDatabase(t)}
	}
	t.Fatalf("unknown type %s", typ)
	return nil
}

func openDB(t *testing.T, typ, table string, params map[string]string) *DB {
	t.Helper()
	return openDBWith(t, typ, table, newDatabase(t, typ), params)
}

// openDBWith starts a connector on the database of base (its path or dsn)
// with params added.
func openDBWith(t testing.TB, typ, table string, base, params map[string]string) *DB {
	t.Helper()
	p := map[string]string{}
	for k, v := range base {
		p[k] = v
	}
	for k, v := range params {
		p[k] = v
	}
	cfg := &config.Conn{CName: "db", Type: typ, Key: table, Params: p}
	var d *DB
	switch typ {
	case TypeSQLite:
		drv, err := NewSQLite(cfg)
		if err != nil {
			t.Fatal(err)
		}
		d = drv.(*DB)
	case TypePostgres:
		drv, err := NewPostgres(cfg)
		if err != nil {
			t.Fatal(err)
		}
		d = drv.(*DB)
	case TypeMySQL:
		drv, err := NewMySQL(cfg)
		if err != nil {
			t.Fatal(err)
		}
		d = drv.(*DB)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func count(t *testing.T, d *DB, q string) int {
	t.Helper()
	var n int
	if err := d.SQL().QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// each runs a case on every dialect.
func each(t *testing.T, fn func(t *testing.T, typ string)) {
	for _, typ := range dialects {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			fn(t, typ)
		})
	}
}

func TestWriteCreatesTableFromRows(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", map[string]string{"create": "true"})
		ctx := context.Background()
		rows := []any{&order{ID: 1, Total: 9.5}, map[string]any{"order_id": 2, "total": 3.0}, `{"order_id":3,"total":1.25}`}
		if err := d.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
		if n := count(t, d, "SELECT count(*) FROM orders WHERE total > 1"); n != 3 {
			t.Fatalf("rows: %d", n)
		}
		many := make([]any, 1234)
		for i := range many {
			many[i] = &order{ID: 100 + i, Total: 1}
		}
		if err := d.Write(ctx, many); err != nil {
			t.Fatal(err)
		}
		if n := count(t, d, "SELECT count(DISTINCT order_id) FROM orders"); n != 1237 {
			t.Fatalf("distinct ids: %d", n)
		}
	})
}

func TestWriteWithoutTableIsAClearError(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", nil)
		err := d.Write(context.Background(), []any{map[string]any{"a": 1}})
		if err == nil || !strings.Contains(err.Error(), "table orders does not exist") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestCommitBatchIsAtomic(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "orders", map[string]string{"create": "true", "columns": "order_id, total"})
		ctx := context.Background()
		if err := d.CommitBatch(ctx, "s", "42", []string{"m1", "m2"}, []any{&order{ID: 1, Total: 2}}); err != nil {
			t.Fatal(err)
		}
		if pos, _ := d.Position(ctx, "s"); pos != "42" {
			t.Fatalf("position %q", pos)
		}
		seen, err := d.Seen(ctx, "s", []string{"m1", "m3", "m2"})
		if err != nil || len(seen) != 2 || !seen["m1"] || !seen["m2"] {
			t.Fatalf("seen %v %v", seen, err)
		}
		if other, _ := d.Seen(ctx, "other", []string{"m1"}); len(other) != 0 {
			t.Fatal("IDs leak across streams")
		}
		// A row that cannot be written rolls back the position and the IDs.
		if err := d.CommitBatch(ctx, "s", "43", []string{"m3"}, []any{&order{ID: 2}, 17}); err == nil {
			t.Fatal("bad row: no error")
		}
		if pos, _ := d.Position(ctx, "s"); pos != "42" || count(t, d, "SELECT count(*) FROM orders") != 1 {
			t.Fatalf("after a failed commit: position %q", pos)
		}
		if seen, _ := d.Seen(ctx, "s", []string{"m3"}); seen["m3"] {
			t.Fatal("a failed commit recorded its message IDs")
		}
		// A batch written in several statements whose last row the
		// database refuses leaves nothing behind: MySQL would commit the
		// first statements if the table's DDL ran inside the transaction.
		big := make([]any, 0, 601)
		for i := range 600 {
			big = append(big, map[string]any{"order_id": 100 + i, "total": 1})
		}
		big = append(big, map[string]any{"order_id": 700, "total": "not a number"})
		if err := d.CommitBatch(ctx, "s", "44", []string{"m4"}, big); err == nil && typ != TypeSQLite {
			t.Fatal("a row the database refuses: no error")
		}
		if typ != TypeSQLite { // SQLite stores the text in a column without a type
			if pos, _ := d.Position(ctx, "s"); pos != "42" || count(t, d, "SELECT count(*) FROM orders") != 1 {
				t.Fatalf("after a refused multi-statement batch: position %q, %d rows", pos, count(t, d, "SELECT count(*) FROM orders"))
			}
		}
	})
}

func TestLoadQuery(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		q := "SELECT total FROM orders WHERE order_id = :order_id"
		d := openDB(t, typ, "orders", map[string]string{"create": "true", "load_query": q})
		ctx := context.Background()
		if err := d.Write(ctx, []any{&order{ID: 7, Total: 70}}); err != nil {
			t.Fatal(err)
		}
		got, err := d.Load(ctx, map[string]any{"order_id": 7})
		if err != nil || len(got) != 1 || fmt.Sprint(got[0]["total"]) != "70" {
			t.Fatalf("load: %v %v", got, err)
		}
		if _, err := d.Load(ctx, map[string]any{"other": 1}); err == nil || !strings.Contains(err.Error(), `needs field "order_id"`) {
			t.Fatalf("missing field: %v", err)
		}
	})
}

// pollFixture writes to d's table and polls it.
func pollFixture(d *DB) conformance.Fixture {
	return conformance.Fixture{Sink: d, Open: func(ctx context.Context, group string) (stream.Source, error) {
		return d.OpenSource(ctx, stream.SourceOptions{Name: group})
	}}
}

// TestConformance runs the suite on every dialect; on the servers the
// interruption cuts every connection the test's database has (the
// embedded SQLite has none to cut).
func TestConformance(t *testing.T) {
	for _, typ := range dialects {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			conformance.Run(t, conformance.Harness{
				Features: conformance.Features{OrderPerKey: true},
				New: func(t *testing.T) conformance.Fixture {
					d := openDB(t, typ, "events", map[string]string{"create": "true", "poll_column": "id", "poll_interval": "20ms", "poll_lag": "300ms"})
					f := pollFixture(d)
					if typ != TypeSQLite {
						f.Interrupt = func(t *testing.T) { cutConnections(t, d) }
					}
					return f
				},
			})
		})
	}
}

// TestConformanceAcrossARestart runs the suite against private PostgreSQL
// and MariaDB servers that the interruption restarts (a graceful stop, as
// a service manager does, and a start on the same data).
func TestConformanceAcrossARestart(t *testing.T) {
	for _, typ := range []string{TypePostgres, TypeMySQL} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			var srv *testenv.Server
			var dsn func(t *testing.T) string
			if typ == TypePostgres {
				srv = testenv.PrivatePostgres(t)
				dsn = func(t *testing.T) string {
					return testenv.PostgresDatabaseOn(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port()))
				}
			} else {
				srv = testenv.PrivateMariaDB(t)
				dsn = func(t *testing.T) string {
					return testenv.MySQLDatabaseOn(t, fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port()))
				}
			}
			conformance.Run(t, conformance.Harness{
				Features: conformance.Features{OrderPerKey: true, Interrupt: srv.Restart},
				New: func(t *testing.T) conformance.Fixture {
					return pollFixture(openDBWith(t, typ, "events", map[string]string{"dsn": dsn(t)},
						map[string]string{"create": "true", "poll_column": "id", "poll_interval": "20ms", "poll_lag": "300ms"}))
				},
			})
		})
	}
}

// cutConnections ends, from a connection of its own, every other
// connection to d's database, as a server restart or a network cut would:
// pg_terminate_backend on PostgreSQL, KILL CONNECTION on MySQL/MariaDB.
func cutConnections(t *testing.T, d *DB) {
	t.Helper()
	driver := map[checkpoint.Dialect]string{checkpoint.Postgres: "pgx", checkpoint.MySQL: "mysql"}[d.dialect]
	admin, err := stdsql.Open(driver, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var q string
	if d.dialect == checkpoint.Postgres {
		q = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
	} else {
		q = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
	}
	conn, err := admin.Conn(ctx) // one session: "other" means other than this
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		t.Fatal("no connection to cut")
	}
	t.Logf("cutting %d connection(s) of the database", len(ids))
	for _, id := range ids {
		if d.dialect == checkpoint.Postgres {
			_, err = conn.ExecContext(ctx, "SELECT pg_terminate_backend($1)", id)
		} else {
			_, err = conn.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id))
		}
		if err != nil && !strings.Contains(err.Error(), "Unknown thread") {
			t.Fatalf("cut connection %d: %v", id, err)
		}
	}
}

func TestPollSourceResumes(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "events", map[string]string{"create": "true", "poll_column": "id", "poll_interval": "10ms"})
		ctx := context.Background()
		if err := d.Write(ctx, []any{map[string]any{"id": 1, "v": "a"}, map[string]any{"id": 2, "v": "b"}, map[string]any{"id": 10, "v": "c"}}); err != nil {
			t.Fatal(err)
		}
		src, _ := d.OpenSource(ctx, stream.SourceOptions{Resume: "2"})
		msgs, err := src.Read(ctx, 10)
		if err != nil || len(msgs) != 1 || msgs[0].Payload.(map[string]any)["v"] != "c" || msgs[0].Position != "10" {
			t.Fatalf("after position 2: %v %v", msgs, err)
		}
	})
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := NewSQLite(&config.Conn{CName: "db", Key: "orders; DROP TABLE x", Params: map[string]string{"path": "x.db"}}); err == nil {
		t.Fatal("table name with SQL in it: no error")
	}
	if _, err := NewSQLite(&config.Conn{CName: "db", Key: "t"}); err == nil {
		t.Fatal("no path: no error")
	}
	if _, err := NewMySQL(&config.Conn{CName: "db", Key: "t", Params: map[string]string{"dsn": "::nonsense"}}); err == nil {
		t.Fatal("bad mysql dsn: no error")
	}
	if _, err := NewPostgres(&config.Conn{CName: "db", Key: "t", Params: map[string]string{"dsn": "postgres://%zz"}}); err == nil {
		t.Fatal("bad postgres dsn: no error")
	}
}

func TestUpsertAndColumnMapping(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "balances", map[string]string{
			"create": "true", "columns": "account, amount=total, note", "upsert_key": "account",
		})
		ctx := context.Background()
		if err := d.Write(ctx, []any{
			map[string]any{"account": "a", "total": 10.0, "note": "first"},
			map[string]any{"account": "b", "total": 5.0, "note": "first"},
		}); err != nil {
			t.Fatal(err)
		}
		// A replay and an update: no duplicate rows, the values replaced.
		if err := d.Write(ctx, []any{map[string]any{"account": "a", "total": 12.5, "note": "second"}}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, d, "SELECT count(*) FROM balances"); n != 2 {
			t.Fatalf("%d rows after an upsert, want 2", n)
		}
		var amount float64
		var note string
		if err := d.SQL().QueryRow("SELECT amount, note FROM balances WHERE account = 'a'").Scan(&amount, &note); err != nil || amount != 12.5 || note != "second" {
			t.Fatalf("account a: %v %q %v", amount, note, err)
		}
	})
}

// Connectors naming a pool plugin share one database/sql pool, which
// closes with the engine after them.
func TestConnectorsShareAPoolPlugin(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{TypePostgres, TypeMySQL} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			dsn := newDatabase(t, typ)["dsn"]
			conn := func(cname, table string) string {
				return "kistype: conn\ncname: " + cname + "\ntype: " + typ + "\nkey: " + table + "\nparams: {client: main, create: \"true\"}\n"
			}
			eng, a, b := testenv.SharedClients(t, Install, typ,
				"kistype: global\nplugins:\n  "+typ+":\n    main: {dsn: \""+dsn+"\", max_conns: 4}\n",
				conn("a", "ta")+"---\n"+conn("b", "tb")+"---\nkistype: conn\ncname: bad\ntype: "+typ+"\nkey: t\nparams: {client: nosuch}\n")
			ctx := context.Background()
			da, db := a.(*DB), b.(*DB)
			p, _ := eng.Plugin(typ, "main")
			pool := p.(*PoolPlugin).DB()
			if da.SQL() != pool || db.SQL() != pool {
				t.Fatal("the connectors do not use the plugin's pool")
			}
			for _, d := range []*DB{da, db} {
				if err := d.Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
					t.Fatal(err)
				}
			}
			if n := count(t, da, "SELECT COUNT(*) FROM ta") + count(t, db, "SELECT COUNT(*) FROM tb"); n != 2 {
				t.Fatalf("%d rows written through the shared pool, want 2", n)
			}
			if err := eng.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if err := pool.PingContext(ctx); err == nil {
				t.Fatal("the shared pool is still open after the engine closed")
			}
		})
	}
}

// An SQLite sink whose file is deleted or replaced while open fails the
// next commit with a Fatal error naming the file: its rows would go to
// the unlinked file and be lost.
func TestSQLiteSinkNoticesItsFileGone(t *testing.T) {
	t.Parallel()
	for _, replace := range []bool{false, true} {
		t.Run(fmt.Sprint("replace=", replace), func(t *testing.T) {
			t.Parallel()
			base := newDatabase(t, TypeSQLite)
			path := base["path"]
			d := openDBWith(t, TypeSQLite, "orders", base, map[string]string{"create": "true"})
			ctx := context.Background()
			if err := d.Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			if replace {
				if err := os.WriteFile(path, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for name, op := range map[string]func() error{
				"write":  func() error { return d.Write(ctx, []any{map[string]any{"id": 2}}) },
				"commit": func() error { return d.CommitBatch(ctx, "s", "2", []string{"m2"}, []any{map[string]any{"id": 2}}) },
				"save":   func() error { return d.SavePosition(ctx, "s", "2") },
			} {
				if err := op(); !stream.IsFatal(err) || !strings.Contains(err.Error(), path) {
					t.Errorf("%s after the file was removed (replaced %v): %v, want a fatal error naming %s", name, replace, err, path)
				}
			}
		})
	}
}

// Several PostgreSQL addrs make a multi-host DSN that reaches the server
// listening behind any of them; several MySQL addrs are refused at
// config time instead of silently using the first.
func TestSeveralAddrs(t *testing.T) {
	t.Parallel()
	// The first address has nobody listening: the connector must go on
	// to the second.
	pg := &config.Conn{CName: "db", Type: TypePostgres, Key: "t", Addrs: "127.0.0.1:1,127.0.0.1:5432",
		Params: map[string]string{"user": "postgres", "database": "test", "sslmode": "disable", "create": "true"}}
	drv, err := NewPostgres(pg)
	if err != nil {
		t.Fatal(err)
	}
	d := drv.(*DB)
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("start with the first of two hosts down: %v", err)
	}
	defer d.Close(context.Background())
	if err := d.SQL().PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	my := &config.Conn{CName: "db", Type: TypeMySQL, Key: "t", Addrs: "127.0.0.1:3306,127.0.0.1:3307", Params: map[string]string{"user": "root", "database": "test"}}
	if _, err := NewMySQL(my); err == nil || !strings.Contains(err.Error(), "names 2 servers") {
		t.Fatalf("mysql with two addrs: %v, want a config error", err)
	}
}

func TestAPostgresURLInAddrsIsTheDSN(t *testing.T) {
	t.Parallel()
	url := testenv.Postgres.Addr(t)
	drv, err := NewPostgres(&config.Conn{CName: "db", Type: TypePostgres, Key: "t", Addrs: url})
	if err != nil {
		t.Fatal(err)
	}
	d := drv.(*DB)
	if d.dsn != url {
		t.Fatalf("dsn %q, want the URL in addrs %q", d.dsn, url)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	if err := d.SQL().PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A row's maps, slices and structs are stored as their JSON text, a nil
// one as NULL, on every dialect, and a table created from such a row
// takes them: a dead-letter record (its Headers is a map[string]string)
// is written to a dead_letter table with create, once per letter_id.
func TestNestedValuesAreStoredAsJSONText(t *testing.T) {
	t.Parallel()
	type addr struct {
		City string `json:"city"`
	}
	each(t, func(t *testing.T, typ string) {
		ctx := context.Background()
		t.Run("dead letters", func(t *testing.T) {
			d := openDB(t, typ, "dlq", map[string]string{"create": "true", "upsert_key": "letter_id"})
			at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
			letters := []any{
				&stream.DeadLetter{LetterID: "a", Flow: "f", Error: "bad", Attempts: 1, Payload: "not json", Time: at},
				&stream.DeadLetter{LetterID: "b", Flow: "f", Error: "bad", Attempts: 1, Payload: json.RawMessage(`{"x":1}`),
					Headers: map[string]string{"traceparent": "00-1"}, Time: at},
			}
			for range 2 { // written again: stored once
				if err := d.Write(ctx, letters); err != nil {
					t.Fatal(err)
				}
			}
			if n := count(t, d, "SELECT count(*) FROM dlq"); n != 2 {
				t.Fatalf("%d dead letters, want 2", n)
			}
			var ha, hb stdsql.NullString
			var payload string
			if err := d.SQL().QueryRow("SELECT headers FROM dlq WHERE letter_id = 'a'").Scan(&ha); err != nil {
				t.Fatal(err)
			}
			if err := d.SQL().QueryRow("SELECT headers, payload FROM dlq WHERE letter_id = 'b'").Scan(&hb, &payload); err != nil {
				t.Fatal(err)
			}
			if ha.Valid || hb.String != `{"traceparent":"00-1"}` || payload != `{"x":1}` {
				t.Fatalf("headers %v and %v, payload %q; want NULL, the headers' JSON and the payload", ha, hb, payload)
			}
		})
		t.Run("nested fields", func(t *testing.T) {
			d := openDB(t, typ, "nested", map[string]string{"create": "true"})
			row := map[string]any{"id": 1, "tags": []string{"a", "b"}, "meta": map[string]int{"n": 1},
				"addr": addr{City: "X"}, "ptr": &addr{City: "Y"}, "none": []int(nil)}
			if err := d.Write(ctx, []any{row}); err != nil {
				t.Fatal(err)
			}
			var tags, meta, a, p string
			var none stdsql.NullString
			q := fmt.Sprintf("SELECT tags, meta, %s, ptr, %s FROM nested", d.quote("addr"), d.quote("none"))
			if err := d.SQL().QueryRow(q).Scan(&tags, &meta, &a, &p, &none); err != nil {
				t.Fatal(err)
			}
			if tags != `["a","b"]` || meta != `{"n":1}` || a != `{"city":"X"}` || p != `{"city":"Y"}` || none.Valid {
				t.Fatalf("stored %q %q %q %q %v", tags, meta, a, p, none)
			}
		})
	})
}
