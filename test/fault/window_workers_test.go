package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// windowFlow is the flow Win of a window folder (see windowFolder) with
// workers workers and the stream keys more.
func windowFlow(workers int, more string) string {
	return fmt.Sprintf("kistype: flow\nstatus: 1\nflow_name: Win\nflows:\n  - fname: Agg\nstream:\n  source: ev\n  sink: db\n  delivery: exactly-once\n%s  key: user_id\n  workers: %d\n", more, workers)
}

// windowFolder writes a folder whose flow (see windowFlow) reads rows,
// the followed file ev.jsonl, through Agg, a tumbling 1h window per user
// with late (its lateness and policy), into the table w of w.db.
func windowFolder(t *testing.T, rows, flow, late string) string {
	t.Helper()
	return Dir(t, map[string]string{
		"ev.jsonl":  rows,
		"flow.yml":  flow,
		"funcs.yml": "kistype: func\nfname: Agg\nfmode: Calculate\nwindow: {type: tumbling, size: 1h, time_field: ts, " + late + ", group_by: [user_id], aggregate: {n: count(), total: sum(amt)}}\n",
		"conns.yml": "kistype: conn\ncname: ev\ntype: file\nparams:\n  path: ev.jsonl\n  follow: true\n  poll: 20ms\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: w\nparams:\n  path: w.db\n  create: \"true\"\n  columns: user_id, window_start, window_end, n, total\n",
	})
}

// byHour and byRows are windowCounts' queries: user*100+hour of each
// window, and user*1000+rows of each 00:00 window.
const (
	byHour = "SELECT user_id * 100 + CAST(substr(window_start, 12, 2) AS INTEGER) FROM w"
	byRows = "SELECT user_id * 1000 + n FROM w WHERE substr(window_start, 12, 2) = '00'"
)

// windowCounts runs query on the window folder dir's table: nil before
// the sink made its file.
func windowCounts(t *testing.T, dir, query string) map[int64]int {
	db := filepath.Join(dir, "w.db")
	if _, err := os.Stat(db); err != nil {
		return nil
	}
	return SQLiteCounts(t, db, query)
}

// runWindows runs the window folder dir with workers workers until query
// counts n windows or within passed (more, when not empty, is appended to
// ev.jsonl a second after the start, for batches of its own), lets settle
// pass, stops it with SIGTERM and wants exit 0. It returns the output.
func runWindows(t *testing.T, dir string, workers int, flowMore, more, query string, n int, within, settle time.Duration) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(windowFlow(workers, flowMore)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Start(t, dir, nil, "run", ".", "--progress", "never")
	if more != "" {
		time.Sleep(time.Second)
		appendFile(t, filepath.Join(dir, "ev.jsonl"), more)
	}
	for end := time.Now().Add(within); len(windowCounts(t, dir, query)) < n && time.Now().Before(end); {
		if p.Exited() {
			t.Fatalf("kisflow exited:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(settle) // anything more would be written by now
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.Output())
	}
	return p.Output()
}

// TestWindowsKeptAcrossFewerWorkers: windows kept by a run with two
// workers, whose lanes' clocks differ, are neither lost nor emitted twice
// by the next run with one worker. Lane clocks: users 1 and 3 share a
// lane with a row at 02:30, which closes their 00:00 windows in the first
// run; users 0, 2 and 4's lane is still at 00:59. The second run's one
// lane goes on from the largest clock (02:30): the 00:00 windows of users
// 0, 2 and 4, open when they were saved, must be emitted then, not
// dropped as if closed.
func TestWindowsKeptAcrossFewerWorkers(t *testing.T) {
	var lines strings.Builder
	for i := range 200 {
		fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:00Z","user_id":%d,"amt":1}`+"\n", i%60, i%5)
	}
	lines.WriteString(`{"ts":"2026-01-01T02:30:00Z","user_id":1,"amt":1}` + "\n")
	dir := windowFolder(t, lines.String(), windowFlow(2, ""), "lateness: 0s")
	run := func(workers int, want map[int64]int) {
		out := runWindows(t, dir, workers, "", "", byHour, len(want), time.Minute, 300*time.Millisecond)
		if got := windowCounts(t, dir, byHour); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("windows (user*100+hour: rows) = %v, want %v\n%s", got, want, out)
		}
	}
	// Run 1, two workers: only users 1 and 3's 00:00 windows close.
	run(2, map[int64]int{100: 1, 300: 1})
	// Run 2, one worker, one row per user at 05:00: every window before
	// 05:00 closes, each once.
	var rows strings.Builder
	for u := range 5 {
		fmt.Fprintf(&rows, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
	}
	appendFile(t, filepath.Join(dir, "ev.jsonl"), rows.String())
	run(1, map[int64]int{0: 1, 100: 1, 102: 1, 200: 1, 300: 1, 400: 1})
}

// TestWindowsKeptAcrossOtherWorkerCounts: the windows open when a run of
// one number of workers stops are taken over, every row counted, by a run
// of another number, between any two numbers (each lane keeps a clock
// entry of its own; one of 3 workers took that of one of 2 as its own
// and lost the rows of 2->3, 3->2, 4->3 and 2->4). Forty users' rows of
// 00:00 stay open in the first run; the second appends a row per user at
// 05:00, which closes them: each user's 00:00 window holds its 10 rows.
func TestWindowsKeptAcrossOtherWorkerCounts(t *testing.T) {
	for _, c := range [][2]int{{2, 3}, {3, 2}, {4, 3}, {2, 4}, {1, 3}, {3, 1}} {
		t.Run(fmt.Sprintf("%d-%d", c[0], c[1]), func(t *testing.T) {
			t.Parallel()
			const users = 40
			var lines strings.Builder
			for i := range users * 10 {
				fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:%02dZ","user_id":%d,"amt":1}`+"\n", i/60%60, i%60, i%users)
			}
			const batch = "  batch_size: 5\n"
			dir := windowFolder(t, lines.String(), windowFlow(c[0], batch), "lateness: 30s, late: dead_letter")
			// Run 1: every row read, no window closes.
			runWindows(t, dir, c[0], batch, "", byRows, 1, 2*time.Second, 0)
			if got := windowCounts(t, dir, byRows); len(got) != 0 {
				t.Fatalf("run 1 wrote windows %v", got)
			}
			// Run 2, another number of workers: a row per user at 05:00.
			var rows strings.Builder
			want := map[int64]int{}
			for u := range users {
				fmt.Fprintf(&rows, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
				want[int64(u*1000+10)] = 1
			}
			appendFile(t, filepath.Join(dir, "ev.jsonl"), rows.String())
			// The windows written, or (lost rows: a window never written,
			// or written short) what is after 30s.
			out := runWindows(t, dir, c[1], batch, "", byRows, users, 30*time.Second, 300*time.Millisecond)
			if got := windowCounts(t, dir, byRows); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("00:00 windows (user*1000+rows: windows) = %v, want %v\n%s", got, want, out)
			}
		})
	}
}

// TestWindowGoneInOneLaneStaysOpenInAnother: a window that one lane of a
// run of two workers closed and marked gone (its delta that holds the
// window's records stays for a later window) stays open for the other
// lane's groups, whose watermark is behind, when a run with another
// number of workers takes both over (the mark deleted the other lane's
// groups of the window: their deltas' Seqs are numbered per lane).
// Users 1 and 3 share a lane: its first batch writes user 1's 00:00 and
// user 3's 01:00 groups in one delta (lateness 30m: its watermark is
// 00:40); its second (user 1 at 01:45) closes 00:00. Users 0 and 2's lane keeps its 00:00 groups open.
func TestWindowGoneInOneLaneStaysOpenInAnother(t *testing.T) {
	for _, next := range []int{1, 3} {
		t.Run(fmt.Sprintf("2-%d", next), func(t *testing.T) {
			t.Parallel()
			dir := windowFolder(t, `{"ts":"2026-01-01T00:10:00Z","user_id":1,"amt":1}
{"ts":"2026-01-01T01:10:00Z","user_id":3,"amt":1}
{"ts":"2026-01-01T00:20:00Z","user_id":0,"amt":1}
{"ts":"2026-01-01T00:30:00Z","user_id":2,"amt":1}
`, windowFlow(2, ""), "lateness: 30m")
			run := func(workers int, want map[int64]int, more string) {
				out := runWindows(t, dir, workers, "", more, byHour, len(want), 20*time.Second, 500*time.Millisecond)
				if got := windowCounts(t, dir, byHour); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("windows (user*100+hour: rows) = %v, want %v\n%s", got, want, out)
				}
			}
			// Run 1, two workers: user 1's 00:00 window closes (the row
			// after a second: in a batch of its own).
			run(2, map[int64]int{100: 1}, `{"ts":"2026-01-01T01:45:00Z","user_id":1,"amt":1}`+"\n")
			// Run 2: a row per user at 05:00 closes every window before.
			var rows strings.Builder
			for u := range 4 {
				fmt.Fprintf(&rows, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
			}
			appendFile(t, filepath.Join(dir, "ev.jsonl"), rows.String())
			run(next, map[int64]int{0: 1, 100: 1, 101: 1, 200: 1, 301: 1}, "")
		})
	}
}

// TestWindowsKeptAcrossAWorkerThatGotNoRows: 2 -> 3 -> 2 workers, where
// the run of 3 gets rows of two users only, so a lane of it may never
// write: it never took its share of the first run's windows, which the
// third run must take from the first run's deltas (they were lost).
func TestWindowsKeptAcrossAWorkerThatGotNoRows(t *testing.T) {
	const users = 30
	var lines strings.Builder
	for i := range users * 20 {
		fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:%02dZ","user_id":%d,"amt":1}`+"\n", i/60%60, i%60, i%users)
	}
	dir := windowFolder(t, lines.String(), windowFlow(2, ""), "lateness: 30s")
	events := filepath.Join(dir, "ev.jsonl")
	runWindows(t, dir, 2, "", "", byRows, 0, 20*time.Second, 1500*time.Millisecond)
	appendFile(t, events, `{"ts":"2026-01-01T00:59:00Z","user_id":1,"amt":1}`+"\n"+`{"ts":"2026-01-01T00:59:00Z","user_id":2,"amt":1}`+"\n")
	runWindows(t, dir, 3, "", "", byRows, 0, 20*time.Second, 1500*time.Millisecond)
	var closing strings.Builder
	want := map[int64]int{}
	for u := range users {
		fmt.Fprintf(&closing, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
		want[int64(u*1000+20)] = 1
	}
	want[1021], want[2021] = 1, 1
	delete(want, 1020)
	delete(want, 2020)
	appendFile(t, events, closing.String())
	runWindows(t, dir, 2, "", "", byRows, users, 20*time.Second, 1500*time.Millisecond)
	if got := windowCounts(t, dir, byRows); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("00:00 windows (user*1000+rows: windows) = %v, want %v", got, want)
	}
}
