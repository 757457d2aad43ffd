package sql

import (
	"context"
	"testing"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// markOf names how an error is marked for the runtime.
func markOf(err error) string {
	switch {
	case err == nil:
		return "nil"
	case stream.IsPermanent(err):
		return "permanent"
	case stream.IsFatal(err):
		return "fatal"
	}
	return "transient"
}

// A row the database refuses is Permanent, a configuration error Fatal,
// on every real server.
func TestWriteErrorsAreMarked(t *testing.T) {
	t.Parallel()
	ddl := map[string]string{
		TypeSQLite:   "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, s TEXT CHECK (length(s) <= 5)) STRICT",
		TypePostgres: "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, s VARCHAR(5))",
		TypeMySQL:    "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, s VARCHAR(5))",
	}
	cases := []struct {
		name    string
		columns string
		table   string
		rows    []any
		want    string
	}{
		{"text into a number", "", "t", []any{map[string]any{"id": 1, "n": "abc", "s": "x"}}, "permanent"},
		{"null into not null", "", "t", []any{map[string]any{"id": 2, "s": "x"}}, "permanent"},
		{"duplicate key", "", "t", []any{map[string]any{"id": 3, "n": 1}, map[string]any{"id": 3, "n": 2}}, "permanent"},
		{"value too long", "", "t", []any{map[string]any{"id": 4, "n": 1, "s": "much too long"}}, "permanent"},
		{"not a row", "", "t", []any{17}, "permanent"},
		{"a value no driver takes", "", "t", []any{map[string]any{"id": 8, "n": 1, "s": make(chan int)}}, "permanent"},
		// The same in a batch of several rows (PostgreSQL: as arrays).
		{"text into a number, in a batch", "", "t", []any{map[string]any{"id": 10, "n": 1, "s": "x"}, map[string]any{"id": 11, "n": "abc", "s": "x"}, map[string]any{"id": 12, "n": 1, "s": "x"}}, "permanent"},
		{"null into not null, in a batch", "", "t", []any{map[string]any{"id": 13, "n": 1, "s": "x"}, map[string]any{"id": 14, "n": nil, "s": "x"}}, "permanent"},
		{"value too long, in a batch", "", "t", []any{map[string]any{"id": 15, "n": 1, "s": "x"}, map[string]any{"id": 16, "n": 1, "s": "much too long"}}, "permanent"},
		{"a value no driver takes, in a batch", "", "t", []any{map[string]any{"id": 17, "n": 1, "s": "x"}, map[string]any{"id": 18, "n": 1, "s": make(chan int)}}, "permanent"},
		{"missing table", "", "nosuch", []any{map[string]any{"id": 5}}, "fatal"},
		{"missing table, columns given", "id", "nosuch", []any{map[string]any{"id": 5}}, "fatal"},
		{"unknown column", "id, n, nosuch", "t", []any{map[string]any{"id": 6, "n": 1}}, "fatal"},
		{"good row", "", "t", []any{map[string]any{"id": 7, "n": 1, "s": "ok"}}, "nil"},
	}
	each(t, func(t *testing.T, typ string) {
		base := newDatabase(t, typ)
		setup := openDBWith(t, typ, "t", base, nil)
		if _, err := setup.SQL().Exec(ddl[typ]); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			d := openDBWith(t, typ, c.table, base, map[string]string{"columns": c.columns})
			for _, commit := range []bool{false, true} {
				var err error
				if commit {
					err = d.CommitBatch(context.Background(), "s", "", nil, c.rows)
				} else {
					err = d.Write(context.Background(), c.rows)
				}
				want := c.want
				if commit && want == "nil" {
					want = "permanent" // written once already: a duplicate key
				}
				if got := markOf(err); got != want {
					t.Errorf("%s (commit %v): %s error %v, want %s", c.name, commit, got, err, want)
				}
			}
		}
	})
}

// Refused credentials end a job; a server that does not answer is
// weather.
func TestStartErrorsAreMarked(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, typ, dsn, want string
	}{
		{"postgres unknown role", TypePostgres, "postgres://nosuchrole@127.0.0.1:5432/test?sslmode=disable", "fatal"},
		{"postgres unknown database", TypePostgres, "postgres://postgres@127.0.0.1:5432/nosuchdb_kisflow?sslmode=disable", "fatal"},
		{"postgres nobody listening", TypePostgres, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2", "transient"},
		{"mysql wrong password", TypeMySQL, "root:wrong@tcp(127.0.0.1:3306)/test", "fatal"},
		{"mysql unknown database", TypeMySQL, "root@tcp(127.0.0.1:3306)/nosuchdb_kisflow", "fatal"},
		{"mysql nobody listening", TypeMySQL, "root@tcp(127.0.0.1:1)/test?timeout=2s", "transient"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := &config.Conn{CName: "db", Type: c.typ, Key: "t", Params: map[string]string{"dsn": c.dsn}}
			newDriver := NewPostgres
			if c.typ == TypeMySQL {
				newDriver = NewMySQL
			}
			drv, err := newDriver(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = drv.(*DB).Start(context.Background())
			if got := markOf(err); got != c.want {
				t.Fatalf("%s error %v, want %s", got, err, c.want)
			}
		})
	}
}
