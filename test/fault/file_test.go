package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
