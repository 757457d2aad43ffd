package fault

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTwoRunsOnOneStreamExactlyOnce starts two `kisflow run` at once on one
// folder whose flow reads a file exactly-once into SQLite (an overlapping
// cron run): only one of them goes on committing. The other finds the
// position moved under it and exits non-zero saying so; what it committed
// before (when it started first, one batch ahead of the other) is where
// the other resumed. Every id is once in the sink.
func TestTwoRunsOnOneStreamExactlyOnce(t *testing.T) {
	t.Parallel()
	const n = 3000
	dir := fileToSQLite(t, n, "exactly-once")
	Throttle(t, dir, 1000) // about 3 s of work: the runs overlap
	state := filepath.Join(dir, "state")
	args := []string{"run", dir, "--state", state, "--progress", "never"}
	a, b := Start(t, dir, nil, args...), Start(t, dir, nil, args...)
	ca, cb := a.Wait(3*time.Minute), b.Wait(3*time.Minute)
	const msg = "another process committed stream Ids"
	const stop = "two runs on one stream; stop one"
	ok, fenced := a, b
	if ca != 0 {
		ok, fenced = b, a
		ca, cb = cb, ca
	}
	if ca != 0 || cb != 1 {
		t.Fatalf("exit codes %d and %d, want 0 and 1\n--- one:\n%s\n--- other:\n%s", ca, cb, a.Output(), b.Output())
	}
	if out := fenced.Output(); !strings.Contains(out, msg) || !strings.Contains(out, stop) {
		t.Fatalf("the run that failed does not say why:\n%s", out)
	}
	// The fenced run commits nothing after the other run's commit: it may
	// have committed first, and then the other resumed from its position.
	if out := fenced.Output(); !strings.Contains(out, " 0 committed, 0 written,") && !strings.Contains(ok.Output(), "resuming at position") {
		t.Fatalf("the run that failed committed rows the other did not resume after:\n%s\n--- the other:\n%s", out, ok.Output())
	}
	if strings.Contains(ok.Output(), msg) {
		t.Fatalf("the run that finished reports a second writer:\n%s", ok.Output())
	}
	if bad := Check(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"), n, true); len(bad) > 0 {
		t.Fatalf("sink: %d ids wrong, the first: %v", len(bad), bad[:min(len(bad), 5)])
	}
}

// TestTwoRunsOnOneStateFolderAtLeastOnce: the state folder's positions
// belong to one run of a flow at a time. A second `kisflow run` on the same
// folder fails at start, exit 1, naming the run that holds it; after that
// run ends the folder is free again. Another --state folder is not locked.
func TestTwoRunsOnOneStateFolderAtLeastOnce(t *testing.T) {
	t.Parallel()
	const n = 3000
	dir := fileToSQLite(t, n, "at-least-once")
	Throttle(t, dir, 1000)
	state := filepath.Join(dir, "state")
	first := Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never")
	first.WaitFor("flow Ids: no position: reading from the start", time.Minute) // it holds the folder
	second := Run(t, dir, 2*time.Minute, "run", dir, "--state", state, "--progress", "never")
	out := second.Stdout + second.Stderr
	if second.Code != 1 || !strings.Contains(out, fmt.Sprintf("locked by kisflow run of flow Ids (pid %d,", first.Pid())) {
		t.Fatalf("second run on the folder: exit %d, want 1 naming pid %d:\n%s", second.Code, first.Pid(), out)
	}
	if strings.Contains(out, "rows read") {
		t.Fatalf("the second run processed rows:\n%s", out)
	}
	other := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "other-state"), "--progress", "never")
	if other.Code != 0 {
		t.Fatalf("a run with another --state folder: exit %d\n%s%s", other.Code, other.Stdout, other.Stderr)
	}
	if code := first.Wait(3 * time.Minute); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, first.Output())
	}
	again := Run(t, dir, 2*time.Minute, "run", dir, "--state", state, "--progress", "never")
	if again.Code != 0 || !strings.Contains(again.Stdout+again.Stderr, "nothing new in ids") {
		t.Fatalf("a run after the first ended: exit %d\n%s%s", again.Code, again.Stdout, again.Stderr)
	}
}
