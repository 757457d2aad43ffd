package sql

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// readIDs reads from src until it has n rows or wait passes, and returns
// the values of column col in the order read.
func readIDs(t *testing.T, src stream.Source, col string, n, batch int, wait time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var got []string
	for len(got) < n {
		msgs, err := src.Read(ctx, batch)
		for _, m := range msgs {
			got = append(got, fmt.Sprint(m.Payload.(map[string]any)[col]))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// A transaction that took the first id (or the earliest timestamp)
// commits after ten others: the source reads none of the ten until it has
// committed, and then all eleven, the slow one first. PostgreSQL waits for
// the transaction; MySQL's default poll_lag (5s) outlasts it.
func TestPollSourceWaitsForOpenTransactions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		typ, col, ddl string
	}{
		{TypePostgres, "id", "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, v TEXT)"},
		{TypePostgres, "ts", "CREATE TABLE events (ts TIMESTAMPTZ NOT NULL DEFAULT now(), v TEXT)"},
		{TypeMySQL, "id", "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, v TEXT)"},
		{TypeMySQL, "ts", "CREATE TABLE events (ts DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), v TEXT)"},
	}
	for _, c := range cases {
		t.Run(c.typ+"/"+c.col, func(t *testing.T) {
			t.Parallel()
			d := openDB(t, c.typ, "events", map[string]string{"poll_column": c.col, "poll_interval": "10ms"})
			ctx := context.Background()
			if _, err := d.SQL().ExecContext(ctx, c.ddl); err != nil {
				t.Fatal(err)
			}
			slow, err := d.SQL().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = slow.Rollback() }()
			if _, err := slow.ExecContext(ctx, "INSERT INTO events (v) VALUES ('slow')"); err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if _, err := d.SQL().ExecContext(ctx, fmt.Sprintf("INSERT INTO events (v) VALUES ('fast%d')", i)); err != nil {
					t.Fatal(err)
				}
			}
			src, err := d.OpenSource(ctx, stream.SourceOptions{Name: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if got := readIDs(t, src, "v", 1, 100, 300*time.Millisecond); len(got) != 0 {
				t.Fatalf("read %v past a transaction still open", got)
			}
			if err := slow.Commit(); err != nil {
				t.Fatal(err)
			}
			got := readIDs(t, src, "v", 11, 100, 10*time.Second)
			if len(got) != 11 || got[0] != "slow" {
				t.Fatalf("after the commit: read %v, want slow and the 10 fast ones", got)
			}
		})
	}
}

// Rows sharing a value of a non-unique poll column are never split by
// LIMIT: batches end between groups, and a group larger than a batch is
// read whole.
func TestPollSourceReadsTiesWhole(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, typ string) {
		d := openDB(t, typ, "events", map[string]string{"create": "true", "poll_column": "g", "poll_interval": "10ms", "poll_lag": "300ms"})
		ctx := context.Background()
		var rows []any
		for i, g := range []int{1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4} {
			rows = append(rows, map[string]any{"g": g, "n": i})
		}
		if err := d.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
		src, err := d.OpenSource(ctx, stream.SourceOptions{Name: "s"})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		var sizes []int
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for len(seen) < len(rows) {
			msgs, err := src.Read(rctx, 4)
			if err != nil {
				t.Fatalf("after %d rows: %v", len(seen), err)
			}
			sizes = append(sizes, len(msgs))
			for _, m := range msgs {
				seen[fmt.Sprint(m.Payload.(map[string]any)["n"])] = true
			}
		}
		if fmt.Sprint(sizes) != "[3 3 6 1]" {
			t.Fatalf("batch sizes %v, want [3 3 6 1]", sizes)
		}
	})
}

// With poll_lag, a row is read only once the horizon that covers it is
// that old.
func TestPollSourceLag(t *testing.T) {
	t.Parallel()
	d := openDB(t, TypeSQLite, "events", map[string]string{"create": "true", "poll_column": "id", "poll_interval": "10ms", "poll_lag": "400ms"})
	ctx := context.Background()
	if err := d.Write(ctx, []any{map[string]any{"id": 1, "v": "a"}}); err != nil {
		t.Fatal(err)
	}
	src, err := d.OpenSource(ctx, stream.SourceOptions{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := readIDs(t, src, "v", 1, 10, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("read %v before poll_lag passed", got)
	}
	if got := readIDs(t, src, "v", 1, 10, 10*time.Second); len(got) != 1 || got[0] != "a" {
		t.Fatalf("after poll_lag: %v", got)
	}
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Fatalf("read after %v, before poll_lag", waited)
	}
}

// A position on a timestamp column resumes after the last row read, in
// every dialect's time type.
func TestPollSourceResumesOnATimestamp(t *testing.T) {
	t.Parallel()
	ddl := map[string]string{
		TypePostgres: "CREATE TABLE events (ts TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), v TEXT)",
		TypeMySQL:    "CREATE TABLE events (ts DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), v TEXT)",
	}
	for typ, q := range ddl {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			d := openDB(t, typ, "events", map[string]string{"poll_column": "ts", "poll_interval": "10ms", "poll_lag": "300ms"})
			ctx := context.Background()
			for _, s := range []string{q, "INSERT INTO events (v) VALUES ('a')", "INSERT INTO events (v) VALUES ('b')"} {
				if _, err := d.SQL().ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			src, err := d.OpenSource(ctx, stream.SourceOptions{Name: "s"})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			msgs, err := src.Read(rctx, 10)
			if err != nil || len(msgs) != 2 || msgs[1].Position == "" {
				t.Fatalf("first read: %d rows, %v", len(msgs), err)
			}
			if _, err := d.SQL().ExecContext(ctx, "INSERT INTO events (v) VALUES ('c')"); err != nil {
				t.Fatal(err)
			}
			again, err := d.OpenSource(ctx, stream.SourceOptions{Name: "s", Resume: msgs[1].Position})
			if err != nil {
				t.Fatal(err)
			}
			if got := readIDs(t, again, "v", 1, 10, 10*time.Second); len(got) != 1 || got[0] != "c" {
				t.Fatalf("resumed after %s: read %v, want [c]", msgs[1].Position, got)
			}
		})
	}
}
