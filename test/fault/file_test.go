package fault

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAReplacedFileIsReadFromItsBeginning runs a file -> SQLite flow
// exactly once over 1,000 rows, moves a file of 2,000 other rows over the
// input (`mv new.jsonl ids.jsonl`) and runs it again: the second run must
// see that the committed position belongs to another file, say so naming
// the file, and read the new file from its start, so that every id of both
// files is in the sink once (before, it resumed at the old file's offset,
// skipped most new rows and dead-lettered half a line).
func TestAReplacedFileIsReadFromItsBeginning(t *testing.T) {
	t.Parallel()
	const first, second = 1000, 2000
	dir := fileToSQLite(t, first, "exactly-once")
	run := func(want int) string {
		t.Helper()
		res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
		out := res.Stdout + res.Stderr
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s", res.Code, out)
		}
		if !strings.Contains(out, fmt.Sprintf(" %d rows read", want)) || !strings.Contains(out, ", 0 dead-lettered") {
			t.Fatalf("the summary does not say %d rows read and none dead-lettered:\n%s", want, out)
		}
		return out
	}
	run(first)
	next := filepath.Join(dir, "new.jsonl")
	var rows strings.Builder
	for i := first + 1; i <= first+second; i++ {
		fmt.Fprintf(&rows, "{\"id\":%d,\"qty\":%d}\n", i, i%5)
	}
	if err := os.WriteFile(next, []byte(rows.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, filepath.Join(dir, "ids.jsonl")); err != nil {
		t.Fatal(err)
	}
	out := run(second)
	if want := "ids.jsonl is not the file the position was committed for"; !strings.Contains(out, want) {
		t.Errorf("no warning %q:\n%s", want, out)
	}
	if bad := Check(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"), first+second, true); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
}

// appendTo appends data to the file at p.
func appendTo(t *testing.T, p, data string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// onceEach reports every id of the ranges (from, to included) that is not
// in counts exactly once, and every id in counts outside them.
func onceEach(counts map[int64]int, ranges ...[2]int64) []string {
	var bad []string
	want := map[int64]bool{}
	for _, r := range ranges {
		for id := r[0]; id <= r[1]; id++ {
			want[id] = true
			if counts[id] != 1 {
				bad = append(bad, fmt.Sprintf("id %d: %d times", id, counts[id]))
			}
		}
	}
	for id, n := range counts {
		if !want[id] {
			bad = append(bad, fmt.Sprintf("unexpected id %d: %d times", id, n))
		}
	}
	if len(bad) > 20 {
		bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
	}
	return bad
}

// A file emptied in place (`: > ids.jsonl`, the same inode) and then
// written again past the committed offset loses nothing, in both delivery
// modes: the run on the empty file reads nothing and says the file is
// shorter than the position; the run after rows 1001-1300 are appended
// sees that the content before the committed offset is not the one it was
// committed after, says so, and reads the file from its beginning (before,
// it resumed at the old offset: rows 1001-1175 were lost and half a line
// was dead-lettered).
func TestATruncatedFileRefilledLosesNothing(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			root := Dir(t, merge(idsConfig("c", fileSource, delivery), map[string]string{"c/ids.jsonl": idLines(1, 200)}))
			conf, in, out := filepath.Join(root, "c"), filepath.Join(root, "c", "ids.jsonl"), filepath.Join(root, "c", "out.db")
			wantLines(t, runOK(t, root, "c"), "flow Ids: 200 rows read, 200 committed, 200 written, 0 dead-lettered")
			if err := os.Truncate(in, 0); err != nil {
				t.Fatal(err)
			}
			res := Run(t, root, 2*time.Minute, "run", "c", "--progress", "never")
			if res.Code != 0 || !strings.Contains(res.Stdout+res.Stderr, "ids.jsonl is shorter than the committed position") {
				t.Fatalf("run on the emptied file: exit %d, no warning\n%s%s", res.Code, res.Stdout, res.Stderr)
			}
			appendTo(t, in, idLines(1001, 1300))
			res = Run(t, root, 2*time.Minute, "run", "c", "--progress", "never")
			all := res.Stdout + res.Stderr
			if res.Code != 0 {
				t.Fatalf("run after the append: exit %d\n%s", res.Code, all)
			}
			wantLines(t, all, "ids.jsonl changed before the committed position",
				"flow Ids: 300 rows read, 300 committed, 300 written, 0 dead-lettered")
			if bad := onceEach(SQLiteCounts(t, out, "SELECT id FROM out"), [2]int64{1, 200}, [2]int64{1001, 1300}); len(bad) > 0 {
				t.Fatalf("sink: %v", bad)
			}
			if letters := JSONLines(t, filepath.Join(conf, ".kisflow", "dead-letter", "Ids.jsonl")); len(letters) > 0 {
				t.Fatalf("dead letters: %v", letters)
			}
			// And the position now belongs to the new content.
			wantLines(t, runOK(t, root, "c"), "flow Ids: nothing new in ids since position ")
		})
	}
}

// Moving the whole configuration folder (its YAML, its data file, its
// SQLite sink and its .kisflow state) on the same machine keeps the flow's
// position: the run in the new place reads nothing new and writes nothing
// twice, in both delivery modes, and rows appended later are read once.
// (Before, the state key held the file's absolute path: the moved folder
// read everything again, and wrote it all twice even exactly-once.)
func TestMovingTheFolderKeepsThePosition(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			root := Dir(t, merge(idsConfig("before", fileSource, delivery), map[string]string{"before/ids.jsonl": idLines(1, 500)}))
			wantLines(t, runOK(t, root, "before"), "flow Ids: no position: reading from the start",
				"flow Ids: 500 rows read, 500 committed, 500 written, 0 dead-lettered")
			if err := os.Rename(filepath.Join(root, "before"), filepath.Join(root, "after")); err != nil {
				t.Fatal(err)
			}
			out := runOK(t, root, "after")
			wantLines(t, out, "flow Ids: resuming at position ", "flow Ids: nothing new in ids since position ")
			sink := filepath.Join(root, "after", "out.db")
			if bad := onceEach(SQLiteCounts(t, sink, "SELECT id FROM out"), [2]int64{1, 500}); len(bad) > 0 {
				t.Fatalf("sink after the move: %v", bad)
			}
			appendTo(t, filepath.Join(root, "after", "ids.jsonl"), idLines(501, 600))
			wantLines(t, runOK(t, root, "after"), "flow Ids: 100 rows read, 100 committed, 100 written, 0 dead-lettered")
			if bad := onceEach(SQLiteCounts(t, sink, "SELECT id FROM out"), [2]int64{1, 600}); len(bad) > 0 {
				t.Fatalf("sink after the append: %v", bad)
			}
		})
	}
}

// A followed file rotated during a run (renamed, a new file created at the
// path) and the run stopped: the next run resumes in the new file where
// the last one stopped, so that nothing is read twice, exactly-once and
// at-least-once. The state key names the file's folder and name, not the
// file's inode, which the rotation changed.
func TestAFollowedFileRotatedThenRestartedResumes(t *testing.T) {
	t.Parallel()
	follow := fileSource + "\n  follow: \"true\"\n  poll: 20ms"
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			root := Dir(t, merge(idsConfig("c", follow, delivery), map[string]string{"c/ids.jsonl": idLines(1, 100)}))
			in, sink := filepath.Join(root, "c", "ids.jsonl"), filepath.Join(root, "c", "out.db")
			rows := func() int { // while the job writes: a busy database is 0, asked again
				db, err := sql.Open("sqlite", sink+"?_pragma=busy_timeout(10000)")
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				var n int
				if err := db.QueryRow("SELECT count(*) FROM out").Scan(&n); err != nil {
					return 0
				}
				return n
			}
			stop := func(p *Proc) {
				t.Helper()
				p.Signal(syscall.SIGTERM)
				if code := p.Wait(2 * time.Minute); code != 0 {
					t.Fatalf("exit %d after SIGTERM\n%s", code, p.Output())
				}
			}
			p := Start(t, root, nil, "run", "c", "--progress", "never")
			Eventually(t, 2*time.Minute, "100 rows in the sink", func() bool { return rows() >= 100 })
			if err := os.Rename(in, in+".1"); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(in, []byte(idLines(101, 200)), 0o644); err != nil {
				t.Fatal(err)
			}
			Eventually(t, 2*time.Minute, "200 rows in the sink", func() bool { return rows() >= 200 })
			stop(p)
			wantLines(t, p.Output(), "ids.jsonl was rotated")

			p = Start(t, root, nil, "run", "c", "--progress", "never")
			p.WaitFor("flow Ids: resuming at position ", 2*time.Minute)
			appendTo(t, in, idLines(201, 250))
			Eventually(t, 2*time.Minute, "250 rows in the sink", func() bool { return rows() >= 250 })
			stop(p)
			if bad := onceEach(SQLiteCounts(t, sink, "SELECT id FROM out"), [2]int64{1, 250}); len(bad) > 0 {
				t.Fatalf("sink: %v\n%s", bad, p.Output())
			}
		})
	}
}

// A bounded run (a cron job) that meets a half-written last line leaves it
// for the next run: the writer appends `{"id":1`, a run reads rows 1-100
// and warns, the writer finishes the row and adds another, and the next
// run reads rows 101 and 102. Every row is in the sink once and nothing is
// dead-lettered (before, the row was split into two dead letters, the
// halves of {"id":101}).
func TestABoundedRunLeavesAHalfWrittenLastLine(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"exactly-once", "at-least-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			dir := fileToSQLite(t, 100, delivery)
			input := filepath.Join(dir, "ids.jsonl")
			run := func(want int) string {
				t.Helper()
				res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
				out := res.Stdout + res.Stderr
				if res.Code != 0 {
					t.Fatalf("exit %d\n%s", res.Code, out)
				}
				if !strings.Contains(out, fmt.Sprintf(" %d rows read", want)) || !strings.Contains(out, ", 0 dead-lettered") {
					t.Fatalf("the summary does not say %d rows read and none dead-lettered:\n%s", want, out)
				}
				return out
			}
			appendTo(t, input, `{"id":1`)
			out := run(100)
			if want := "the last line of " + input + " has no newline and does not parse: left for the next run"; !strings.Contains(out, want) {
				t.Errorf("no warning %q:\n%s", want, out)
			}
			appendTo(t, input, "01,\"qty\":1}\n{\"id\":102,\"qty\":2}\n")
			run(2)
			if bad := onceEach(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"), [2]int64{1, 102}); len(bad) > 0 {
				t.Fatalf("sink: %v", bad)
			}
			if letters := JSONLines(t, filepath.Join(dir, "state", "dead-letter", "Ids.jsonl")); len(letters) > 0 {
				t.Fatalf("dead letters: %v", letters)
			}
		})
	}
}
