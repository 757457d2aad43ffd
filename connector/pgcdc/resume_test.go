package pgcdc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// TestSnapshotResumesAfterLastKey stops a source twice during its snapshot
// of a table with a composite key (integer, text: read in COLLATE "C"
// order) and of a table without a key, changing both tables while it is
// stopped. The first resume reads the keyed table after the last key
// delivered and the keyless one whole, from a new snapshot: a change of a
// key at or before that key is delivered, one after it is in the new
// snapshot's image and is not; an update moving a key from before it to
// after it is delivered as its delete. The second stop lands in the
// keyless table: it is read again whole (its rows delivered twice), its
// changes counting from the snapshot it was first read from.
func TestSnapshotResumesAfterLastKey(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivatePostgres(t, "wal_level=logical", "max_replication_slots=10", "max_wal_senders=10")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := db.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	// Names whose byte order ("B" < "Z" < "_x" < "a" < "é") is not a
	// linguistic collation's.
	exec("CREATE TABLE a (g INT, name TEXT, v INT, PRIMARY KEY (g, name))",
		"INSERT INTO a SELECT g, n, 0 FROM generate_series(1, 3) g, unnest(ARRAY['a', 'é', 'B', '_x', 'Z']) n",
		"CREATE TABLE b (x INT, v INT)", "ALTER TABLE b REPLICA IDENTITY FULL",
		"INSERT INTO b SELECT x, 0 FROM generate_series(1, 5) x")
	d, err := New(&config.Conn{CName: "cdc", Addrs: url, Key: "a,b", Params: map[string]string{"slot": "s", "publication": "p", "status_interval": "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	open := func(resume string) stream.Source {
		t.Helper()
		src, err := d.(*CDC).OpenSource(ctx, stream.SourceOptions{Resume: resume, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	read := func(src stream.Source, n int) []*stream.Message {
		t.Helper()
		var out []*stream.Message
		for len(out) < n {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			msgs, err := src.Read(rctx, n-len(out))
			rcancel()
			if err != nil && ctx.Err() != nil {
				t.Fatalf("read: %v (%d of %d rows)\n%s", err, len(out), n, logs.String())
			}
			out = append(out, msgs...)
		}
		return out
	}
	row := func(m *stream.Message) string {
		p := m.Payload.(map[string]any)
		if p["_table"] == "public.a" {
			return fmt.Sprintf("%s a %v/%v=%v", p["_op"], p["g"], p["name"], p["v"])
		}
		return fmt.Sprintf("%s b %v=%v", p["_op"], p["x"], p["v"])
	}
	rows := func(msgs []*stream.Message) string {
		s := make([]string, len(msgs))
		for i, m := range msgs {
			s[i] = row(m)
		}
		return strings.Join(s, "; ")
	}
	expect := func(what string, got []*stream.Message, want string) {
		t.Helper()
		if g := rows(got); g != want {
			t.Errorf("%s:\n got %s\nwant %s", what, g, want)
		}
	}

	src := open("")
	first := read(src, 7)
	expect("the first run's rows, in key order", first, "insert a 1/B=0; insert a 1/Z=0; insert a 1/_x=0; insert a 1/a=0; insert a 1/é=0; insert a 2/B=0; insert a 2/Z=0")
	pos := first[len(first)-1].Position
	_ = src.Close(ctx)
	exec("UPDATE a SET v = 100 WHERE g = 1 AND name = 'a'", // at or before the last key: delivered
		"UPDATE a SET v = 200 WHERE g = 3 AND name = 'a'", // after it: in the next snapshot
		"DELETE FROM a WHERE g = 2 AND name = 'B'",
		"DELETE FROM a WHERE g = 2 AND name = 'é'",
		"INSERT INTO a VALUES (0, 'new', 1)",
		"INSERT INTO a VALUES (9, 'new', 1)",
		"UPDATE a SET g = 5 WHERE g = 1 AND name = 'B'", // the key moves after the last key: only its delete counts
		"UPDATE b SET v = 7 WHERE x = 1")                // b is read from the next snapshot

	src = open(pos)
	second := read(src, 11)
	expect("the second run's rows: a after 2/Z, then b", second[:9], "insert a 2/_x=0; insert a 2/a=0; insert a 3/B=0; insert a 3/Z=0; insert a 3/_x=0; insert a 3/a=200; insert a 3/é=0; insert a 5/B=0; insert a 9/new=1")
	if !strings.Contains(logs.String(), "resumes its snapshot after the last row delivered") {
		t.Errorf("the second run did not say it resumes:\n%s", logs.String())
	}
	pos = second[len(second)-1].Position
	_ = src.Close(ctx)
	exec("UPDATE b SET v = 8 WHERE x = 2", // b is read again whole: its changes count as before
		"UPDATE a SET v = 300 WHERE g = 3 AND name = 'B'",
		"INSERT INTO a VALUES (10, 'end', 0)")

	src = open(pos)
	defer src.Close(ctx)
	third := read(src, 12)
	t.Logf("third run: %s", rows(third))
	var snap []*stream.Message
	for _, m := range third[:5] {
		if p := m.Payload.(map[string]any); p["_table"] == "public.b" && p["_op"] == "insert" {
			snap = append(snap, m)
		}
	}
	if got := rows(snap); !strings.Contains(got, "insert b 1=7") || !strings.Contains(got, "insert b 2=8") || len(snap) != 5 {
		t.Errorf("b read again whole from the third run's snapshot: %s", got)
	}
	expect("the changes", third[5:], "update a 1/a=100; delete a 2/B=<nil>; insert a 0/new=1; delete a 1/B=<nil>; update b 2=8; update a 3/B=300; insert a 10/end=0")
}
