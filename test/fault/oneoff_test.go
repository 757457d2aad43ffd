package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 14 (adversarial review), item 1: a one-off run (kisflow run
// --from/--until) into an exactly-once sink leaves the flow's committed
// position as it is. It commits in the sink's transactions under a key of
// its own; it moved the flow's position there, and the next run wrote
// again what the flow had already written. A file of 1000 ids is read to
// its end, ids 1..300 once more by a one-off run, then 100 ids are
// appended: the next run reads exactly those 100. With an SQLite sink and
// a Redis list.
func TestOneOffRunLeavesExactlyOncePositionAsItIs(t *testing.T) {
	t.Parallel()
	// The offset after line 300: ids 1-9 take 9 bytes a line, 10-99 10,
	// 100-999 11.
	until := fmt.Sprint(9*9 + 90*10 + 201*11)
	for _, c := range []struct {
		name string
		// sink is the YAML of the sink connector "db" and a count of
		// the ids it holds; nil for the SQLite table of idsConfig.
		sink func(t *testing.T) (string, func() map[int64]int)
	}{
		{"sqlite", nil},
		{"redis list", func(t *testing.T) (string, func() map[int64]int) {
			return listOut(t, fmt.Sprintf("kf:test:oneoff:%d", os.Getpid()))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			files := idsConfig("f", fileSource, "exactly-once")
			var count func() map[int64]int
			if c.sink != nil {
				var yaml string
				yaml, count = c.sink(t)
				files["f/conns.yml"] = fileSource + "\n---\n" + strings.Replace(yaml, "cname: out", "cname: db", 1)
			}
			files["f/ids.jsonl"] = idLines(1, 1000)
			root := Dir(t, files)
			dir := filepath.Join(root, "f")
			if count == nil {
				count = func() map[int64]int { return SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out") }
			}
			positions := func() string {
				res := Run(t, root, time.Minute, "positions", "f")
				if res.Code != 0 {
					t.Fatalf("kisflow positions: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
				}
				return res.Stdout
			}

			wantLines(t, runOK(t, root, "f"), "flow Ids: 1000 rows read, 1000 committed, 1000 written")
			before := positions()
			out := runOK(t, root, "f", "--from", "earliest", "--until", until)
			wantLines(t, out, "flow Ids: 300 rows read, 300 committed, 300 written")
			if after := positions(); after != before {
				t.Fatalf("the one-off run moved the committed position:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			f, err := os.OpenFile(filepath.Join(dir, "ids.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(idLines(1001, 1100)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			wantLines(t, runOK(t, root, "f"), "flow Ids: 100 rows read, 100 committed, 100 written")

			got := count()
			for id := int64(1); id <= 1100; id++ {
				want := 1
				if id <= 300 {
					want = 2 // once by the flow, once by the one-off run
				}
				if got[id] != want {
					t.Fatalf("id %d written %d times, want %d (%d distinct ids)", id, got[id], want, len(got))
				}
			}
			if len(got) != 1100 {
				t.Fatalf("%d distinct ids, want 1100", len(got))
			}
		})
	}
}
