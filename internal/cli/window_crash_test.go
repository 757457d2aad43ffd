package cli

import (
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// windowCrashDir writes a config folder: n orders of 17 users in a JSON
// lines file, two hours of event time a few seconds out of order (never
// later than the lateness), the flow Slow -> PerUser (a tumbling window of
// a minute) followed by the functions after, and an SQLite sink with the
// given delivery. It returns the folder and the windows an uninterrupted
// run emits, computed here.
func windowCrashDir(t *testing.T, n int, delivery string, after ...string) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	orders, want := windowOrders(n, time.Minute, nil)
	var more strings.Builder
	for _, f := range after {
		fmt.Fprintf(&more, "  - fname: %s\n", f)
	}
	files := map[string]string{
		"orders.jsonl": orders,
		"flow.yml": `kistype: flow
status: 1
flow_name: Revenue
flows:
  - fname: Slow
  - fname: PerUser
` + more.String() + `stream:
  source: orders
  sink: db
  delivery: ` + delivery + `
  batch_size: 10
`,
		"funcs.yml": `kistype: func
fname: Slow
fmode: Calculate
---
kistype: func
fname: PerUser
fmode: Calculate
window: {type: tumbling, size: 1m, time_field: ts, lateness: 20s,
         group_by: [user_id], aggregate: {orders: count(), revenue: sum(amount)}}
---
kistype: func
fname: Flaky
fmode: Calculate
`,
		"conns.yml": `kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: user_id, window_start, window_end, orders, revenue
`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, want
}

// windowOrders returns n orders as JSON lines, two hours of event time up
// to 9 s out of order (windowCrashDir's lateness is 20 s), and the windows
// of size that an uninterrupted run emits from them (user_id, start, end
// -> orders, revenue). The user of order i is user(i), or one of 17 users
// when user is nil.
func windowOrders(n int, size time.Duration, user func(i int) int64) (string, map[string]string) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	type agg struct{ n, sum int64 }
	ref := map[[2]int64]*agg{}
	var b strings.Builder
	for i := 1; i <= n; i++ {
		ts := base + int64(i)*2400 - int64(i%7)*1500
		u, amount := int64(i%17), int64(i%13)
		if user != nil {
			u = user(i)
		}
		fmt.Fprintf(&b, "{\"id\":%d,\"ts\":%d,\"user_id\":%d,\"amount\":%d}\n", i, ts, u, amount)
		k := [2]int64{u, ts - ts%size.Milliseconds()}
		if ref[k] == nil {
			ref[k] = &agg{}
		}
		ref[k].n++
		ref[k].sum += amount
	}
	want := map[string]string{}
	for k, a := range ref {
		start := time.UnixMilli(k[1]).UTC()
		want[fmt.Sprintf("%d %s %s", k[0], start.Format(time.RFC3339), start.Add(size).Format(time.RFC3339))] = fmt.Sprintf("%d %d", a.n, a.sum)
	}
	return b.String(), want
}

// windowRows returns the windows in the sink table, how many rows hold
// them (more than the windows when one was written twice), and the
// windows written twice with different values.
func windowRows(t *testing.T, dir string) (map[string]string, int, []string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT user_id, window_start, window_end, orders, revenue FROM out")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got, n := map[string]string{}, 0
	var differ []string
	for rows.Next() {
		var user, start, end string
		var orders int64
		var revenue float64
		if err := rows.Scan(&user, &start, &end, &orders, &revenue); err != nil {
			t.Fatal(err)
		}
		k, v := fmt.Sprintf("%s %s %s", user, start, end), fmt.Sprintf("%d %.0f", orders, revenue)
		if prev, ok := got[k]; ok && prev != v {
			differ = append(differ, fmt.Sprintf("%s: %q and %q", k, prev, v))
		}
		got[k] = v
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got, n, differ
}

// windowCount returns the rows in the sink table, 0 before it exists.
func windowCount(t *testing.T, dir string) (int, error) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM out").Scan(&n); err != nil {
		return 0, err
	}
	return n, nil
}

// checkWindows fails t unless the table holds exactly the windows want,
// each once, or with repeats, each with the same values every time. It
// returns the number of rows.
func checkWindows(t *testing.T, dir string, want map[string]string, how string, repeats bool) int {
	t.Helper()
	got, n, differ := windowRows(t, dir)
	if n != len(got) && !repeats {
		t.Errorf("%s: %d rows for %d windows: some window was written twice", how, n, len(got))
	}
	for _, d := range differ {
		t.Errorf("%s: window written twice with different values: %s", how, d)
	}
	bad := 0
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			if bad++; bad <= 5 {
				t.Errorf("%s: window %s: got %q (orders revenue), want %q", how, k, got[k], want[k])
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected window %s", how, k)
		}
	}
	if bad > 0 || len(got) != len(want) {
		t.Fatalf("%s: %d of %d windows wrong, %d in the table", how, bad, len(want), len(got))
	}
	return n
}

// TestWindowsExactlyOnceSurviveSIGKILL kills a run of a window flow into
// SQLite (exactly-once) several times at random points and lets the last
// run finish: the table must hold exactly the windows of an uninterrupted
// run, each once, although windows were open at every kill.
func TestWindowsExactlyOnceSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, want := windowCrashDir(t, 3000, "exactly-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 6)
	if kills < 3 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), false)
	t.Logf("%d SIGKILLs: all %d windows exactly once", kills, len(want))
}

// TestWindowsSurviveSIGTERM stops a run of a window flow (at-least-once,
// state in checkpoints.db) several times: each stop drains, and the run
// that resumes goes on with the open windows it saved.
func TestWindowsSurviveSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, want := windowCrashDir(t, 3000, "at-least-once")
	kills := killUntilDone(t, dir, syscall.SIGTERM, 3)
	if kills == 0 {
		t.Fatal("no SIGTERM landed before the job finished")
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGTERMs", kills), false)
	t.Logf("%d SIGTERMs: all %d windows exactly once", kills, len(want))
}

// TestWindowsFollowedByAFailingFunctionSurviveSIGKILL runs the window
// before Flaky, which fails every 7th call: each failed batch is run again
// from its first function, and the window must not count its rows twice
// (its change of the kept state is rolled back with the failed run), nor
// lose or repeat windows across SIGKILLs.
func TestWindowsFollowedByAFailingFunctionSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, want := windowCrashDir(t, 3000, "exactly-once", "Flaky")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 4)
	if kills < 2 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), false)
	t.Logf("%d SIGKILLs: all %d windows exactly once", kills, len(want))
}

// TestWindowsOnWorkersFollowedByAFailingFunctionSurviveSIGKILL is the
// test above on four workers (stream.key: user_id), each keeping the
// windows of its users: a failed run rolls back the window-groups it
// changed and its worker's window is rebuilt from the state its next run
// reads.
func TestWindowsOnWorkersFollowedByAFailingFunctionSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, want := windowCrashDir(t, 3000, "exactly-once", "Flaky")
	flow := filepath.Join(dir, "flow.yml")
	b, err := os.ReadFile(flow)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flow, []byte(strings.Replace(string(b), "  batch_size: 10\n", "  batch_size: 10\n  workers: 4\n  key: user_id\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	kills := killUntilDone(t, dir, syscall.SIGKILL, 4)
	if kills < 2 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), false)
	t.Logf("%d SIGKILLs: all %d windows exactly once", kills, len(want))
}

// TestWindowsAtLeastOnceSurviveSIGKILL kills a run of a window flow
// (at-least-once, state kept with the position in checkpoints.db) several
// times: every window of an uninterrupted run is in the table with its
// values; one may be written again (a batch replayed after a kill between
// the sink's write and the position's save), always with the same values.
func TestWindowsAtLeastOnceSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, want := windowCrashDir(t, 3000, "at-least-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 6)
	if kills < 3 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	n := checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), true)
	t.Logf("%d SIGKILLs: all %d windows, in %d rows", kills, len(want), n)
}

// TestWindowBlockChangedWithWindowsSaved changes the window block between
// runs: with windows open in the kept state the run stops with an error
// saying what to do; once they closed (the file was read to its end) a
// changed block starts afresh.
func TestWindowBlockChangedWithWindowsSaved(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	dir, _ := windowCrashDir(t, 3000, "exactly-once")
	cmd := child(t, dir)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, "out.db")); err == nil {
			if all, _ := windowCount(t, dir); all > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no window reached the sink within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	if err := <-done; err == nil {
		t.Skip("the run finished before the kill")
	}
	funcs := filepath.Join(dir, "funcs.yml")
	orig, err := os.ReadFile(funcs)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(orig), "size: 1m", "size: 2m", 1)
	if err := os.WriteFile(funcs, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = child(t, dir)
	err = cmd.Wait()
	out := cmd.Stdout.(*syncBuffer).String()
	if err == nil || !strings.Contains(out, `open windows saved by an earlier run cannot be restored`) || !strings.Contains(out, `delete state "kisflow.window/1/PerUser" of the flow (all its entries)`) {
		t.Fatalf("changed window block with open windows saved: want a failed run saying what to do, got %v:\n%s", err, out)
	}

	// The original block finishes the file; then a changed one starts afresh.
	if err := os.WriteFile(funcs, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := child(t, dir).Wait(); err != nil {
		t.Fatalf("run with the original block: %v", err)
	}
	if err := os.WriteFile(funcs, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := child(t, dir).Wait(); err != nil {
		t.Fatalf("changed block after every window closed: %v", err)
	}
}
