// Package cdcsnaptest runs the scenario of a CDC source's snapshot stopped
// twice and resumed, for the tests of each source (postgres_cdc,
// mysql_cdc) against its own database.
package cdcsnaptest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// Resume is a source's part of the scenario: a table A with a composite
// key (g integer, name text read in its bytes' order) and a column v, and
// a table B without a key (x, v).
type Resume struct {
	// Setup are the statements creating A (g 1 to 3 by name 'a', 'é',
	// 'B', '_x', 'Z', v 0) and B (x 1 to 5, v 0).
	Setup []string
	// Source is the connector, opened at each position to resume from.
	Source stream.SourceDriver
	// Exec runs a statement on the database.
	Exec func(ctx context.Context, q string) error
	// A and B are the tables' names in SQL; TableA and TableB as the
	// messages' _table gives them.
	A, B, TableA, TableB string
	// DeletedV is how a delete's v reads: "0" where a delete carries the
	// whole row, "<nil>" where it carries the key only.
	DeletedV string
}

// Run stops the source twice during its snapshot, changing both tables
// while it is stopped. The first resume reads A after the last key
// delivered and B whole, from a new snapshot: a change of a key at or
// before that key is delivered, one after it is in the new snapshot's
// image and is not; an update moving a key from before it to after it is
// delivered as its delete. The second stop lands in B: it is read again
// whole (its rows delivered twice), its changes counting from the
// snapshot it was first read from.
func (sc Resume) Run(ctx context.Context, t *testing.T) {
	t.Helper()
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if err := sc.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	var logs strings.Builder
	open := func(resume string) stream.Source {
		t.Helper()
		src, err := sc.Source.OpenSource(ctx, stream.SourceOptions{Resume: resume, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
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
	val := func(v any) string {
		if b, ok := v.([]byte); ok {
			return string(b)
		}
		return fmt.Sprint(v)
	}
	rows := func(msgs []*stream.Message) string {
		s := make([]string, len(msgs))
		for i, m := range msgs {
			p := m.Payload.(map[string]any)
			if p["_table"] == sc.TableA {
				s[i] = fmt.Sprintf("%s a %s/%s=%s", p["_op"], val(p["g"]), val(p["name"]), val(p["v"]))
			} else {
				s[i] = fmt.Sprintf("%s b %s=%s", p["_op"], val(p["x"]), val(p["v"]))
			}
		}
		return strings.Join(s, "; ")
	}
	expect := func(what string, got []*stream.Message, want string) {
		t.Helper()
		if g := rows(got); g != want {
			t.Errorf("%s:\n got %s\nwant %s", what, g, want)
		}
	}
	a, b := sc.A, sc.B

	exec(sc.Setup...)
	src := open("")
	first := read(src, 7)
	// Names in their bytes' order ("B" < "Z" < "_x" < "a" < "é"), which
	// is not a linguistic collation's.
	expect("the first run's rows, in key order", first, "insert a 1/B=0; insert a 1/Z=0; insert a 1/_x=0; insert a 1/a=0; insert a 1/é=0; insert a 2/B=0; insert a 2/Z=0")
	pos := first[len(first)-1].Position
	_ = src.Close(ctx)
	exec("UPDATE "+a+" SET v = 100 WHERE g = 1 AND name = 'a'", // at or before the last key: delivered
		"UPDATE "+a+" SET v = 200 WHERE g = 3 AND name = 'a'", // after it: in the next snapshot
		"DELETE FROM "+a+" WHERE g = 2 AND name = 'B'",
		"DELETE FROM "+a+" WHERE g = 2 AND name = 'é'",
		"INSERT INTO "+a+" VALUES (0, 'new', 1)",
		"INSERT INTO "+a+" VALUES (9, 'new', 1)",
		"UPDATE "+a+" SET g = 5 WHERE g = 1 AND name = 'B'", // the key moves after the last key: only its delete counts
		"UPDATE "+b+" SET v = 7 WHERE x = 1")                // b is read from the next snapshot

	src = open(pos)
	second := read(src, 11)
	expect("the second run's rows: a after 2/Z, then b", second[:9], "insert a 2/_x=0; insert a 2/a=0; insert a 3/B=0; insert a 3/Z=0; insert a 3/_x=0; insert a 3/a=200; insert a 3/é=0; insert a 5/B=0; insert a 9/new=1")
	if !strings.Contains(logs.String(), "resumes its snapshot after the last row delivered") {
		t.Errorf("the second run did not say it resumes:\n%s", logs.String())
	}
	pos = second[len(second)-1].Position
	_ = src.Close(ctx)
	exec("UPDATE "+b+" SET v = 8 WHERE x = 2", // b is read again whole: its changes count as before
		"UPDATE "+a+" SET v = 300 WHERE g = 3 AND name = 'B'",
		"INSERT INTO "+a+" VALUES (10, 'end', 0)")

	src = open(pos)
	defer src.Close(ctx)
	third := read(src, 12)
	t.Logf("third run: %s", rows(third))
	var snap []*stream.Message
	for _, m := range third[:5] {
		if p := m.Payload.(map[string]any); p["_table"] == sc.TableB && p["_op"] == "insert" {
			snap = append(snap, m)
		}
	}
	if got := rows(snap); !strings.Contains(got, "insert b 1=7") || !strings.Contains(got, "insert b 2=8") || len(snap) != 5 {
		t.Errorf("b read again whole from the third run's snapshot: %s", got)
	}
	deleted := sc.DeletedV
	expect("the changes", third[5:], "update a 1/a=100; delete a 2/B="+deleted+"; insert a 0/new=1; delete a 1/B="+deleted+"; update b 2=8; update a 3/B=300; insert a 10/end=0")
}
