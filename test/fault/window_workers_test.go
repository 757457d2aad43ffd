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

// TestWindowsKeptAcrossFewerWorkers: windows kept by a run with two
// workers, whose lanes' clocks differ, are neither lost nor emitted twice
// by the next run with one worker. Lane clocks: users 1 and 3 share a
// lane with a row at 02:30, which closes their 00:00 windows in the first
// run; users 0, 2 and 4's lane is still at 00:59. The second run's one
// lane goes on from the largest clock (02:30): the 00:00 windows of users
// 0, 2 and 4, open when they were saved, must be emitted then, not
// dropped as if closed.
func TestWindowsKeptAcrossFewerWorkers(t *testing.T) {
	flow := func(workers int) string {
		return fmt.Sprintf(`kistype: flow
status: 1
flow_name: Win
flows:
  - fname: Agg
stream:
  source: ev
  sink: db
  delivery: exactly-once
  key: user_id
  workers: %d
`, workers)
	}
	var lines strings.Builder
	for i := range 200 {
		fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:00Z","user_id":%d,"amt":1}`+"\n", i%60, i%5)
	}
	lines.WriteString(`{"ts":"2026-01-01T02:30:00Z","user_id":1,"amt":1}` + "\n")
	dir := Dir(t, map[string]string{
		"ev.jsonl": lines.String(),
		"flow.yml": flow(2),
		"funcs.yml": `kistype: func
fname: Agg
fmode: Calculate
window: {type: tumbling, size: 1h, time_field: ts, lateness: 0s, group_by: [user_id], aggregate: {n: count(), total: sum(amt)}}
`,
		"conns.yml": `kistype: conn
cname: ev
type: file
params:
  path: ev.jsonl
  follow: true
  poll: 20ms
---
kistype: conn
cname: db
type: sqlite
key: w
params:
  path: w.db
  create: "true"
  columns: user_id, window_start, window_end, n, total
`,
	})
	db := filepath.Join(dir, "w.db")
	windows := func() map[int64]int {
		if _, err := os.Stat(db); err != nil {
			return nil
		}
		return SQLiteCounts(t, db, "SELECT user_id * 100 + CAST(substr(window_start, 12, 2) AS INTEGER) FROM w")
	}
	run := func(want map[int64]int) {
		p := Start(t, dir, nil, "run", ".", "--progress", "never")
		Eventually(t, time.Minute, "the windows written", func() bool {
			if p.Exited() {
				t.Fatalf("kisflow exited:\n%s", p.Output())
			}
			return len(windows()) >= len(want)
		})
		time.Sleep(300 * time.Millisecond) // anything more would be written by now
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(time.Minute); code != 0 {
			t.Fatalf("exit %d:\n%s", code, p.Output())
		}
		got := windows()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("windows (user*100+hour: rows) = %v, want %v\n%s", got, want, p.Output())
		}
	}
	// Run 1, two workers: only users 1 and 3's 00:00 windows close.
	run(map[int64]int{100: 1, 300: 1})
	// Run 2, one worker, one row per user at 05:00: every window before
	// 05:00 closes, each once.
	if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "ev.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for u := range 5 {
		fmt.Fprintf(f, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
	}
	f.Close()
	run(map[int64]int{0: 1, 100: 1, 102: 1, 200: 1, 300: 1, 400: 1})
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
			flow := func(workers int) string {
				return fmt.Sprintf(`kistype: flow
status: 1
flow_name: Win
flows:
  - fname: Agg
stream:
  source: ev
  sink: db
  delivery: exactly-once
  batch_size: 5
  key: user_id
  workers: %d
`, workers)
			}
			const users = 40
			var lines strings.Builder
			for i := range users * 10 {
				fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:%02dZ","user_id":%d,"amt":1}`+"\n", i/60%60, i%60, i%users)
			}
			dir := Dir(t, map[string]string{
				"ev.jsonl": lines.String(),
				"flow.yml": flow(c[0]),
				"funcs.yml": `kistype: func
fname: Agg
fmode: Calculate
window: {type: tumbling, size: 1h, time_field: ts, lateness: 30s, late: dead_letter, group_by: [user_id], aggregate: {n: count(), total: sum(amt)}}
`,
				"conns.yml": `kistype: conn
cname: ev
type: file
params:
  path: ev.jsonl
  follow: true
  poll: 20ms
---
kistype: conn
cname: db
type: sqlite
key: w
params:
  path: w.db
  create: "true"
  columns: user_id, window_start, window_end, n, total
`,
			})
			db := filepath.Join(dir, "w.db")
			// user*1000 + rows of each 00:00 window written
			windows := func() map[int64]int {
				if _, err := os.Stat(db); err != nil {
					return nil
				}
				return SQLiteCounts(t, db, "SELECT user_id * 1000 + n FROM w WHERE substr(window_start, 12, 2) = '00'")
			}
			// Run 1: every row read, no window closes.
			p := Start(t, dir, nil, "run", ".", "--progress", "never")
			time.Sleep(2 * time.Second)
			if p.Exited() {
				t.Fatalf("kisflow exited:\n%s", p.Output())
			}
			p.Signal(syscall.SIGTERM)
			if code := p.Wait(time.Minute); code != 0 {
				t.Fatalf("exit %d:\n%s", code, p.Output())
			}
			if got := windows(); len(got) != 0 {
				t.Fatalf("run 1 wrote windows %v", got)
			}
			// Run 2, another number of workers: a row per user at 05:00.
			if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow(c[1])), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dir, "ev.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for u := range users {
				fmt.Fprintf(f, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
			}
			f.Close()
			want := map[int64]int{}
			for u := range users {
				want[int64(u*1000+10)] = 1
			}
			p = Start(t, dir, nil, "run", ".", "--progress", "never")
			// The windows written, or (lost rows: a window never written,
			// or written short) what is after 30s.
			for end := time.Now().Add(30 * time.Second); len(windows()) < users && time.Now().Before(end); {
				if p.Exited() {
					t.Fatalf("kisflow exited:\n%s", p.Output())
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // anything more would be written by now
			p.Signal(syscall.SIGTERM)
			if code := p.Wait(time.Minute); code != 0 {
				t.Fatalf("exit %d:\n%s", code, p.Output())
			}
			if got := windows(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("00:00 windows (user*1000+rows: windows) = %v, want %v\n%s", got, want, p.Output())
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
			flow := func(workers int) string {
				return fmt.Sprintf(`kistype: flow
status: 1
flow_name: Win
flows:
  - fname: Agg
stream:
  source: ev
  sink: db
  delivery: exactly-once
  key: user_id
  workers: %d
`, workers)
			}
			dir := Dir(t, map[string]string{
				"ev.jsonl": `{"ts":"2026-01-01T00:10:00Z","user_id":1,"amt":1}
{"ts":"2026-01-01T01:10:00Z","user_id":3,"amt":1}
{"ts":"2026-01-01T00:20:00Z","user_id":0,"amt":1}
{"ts":"2026-01-01T00:30:00Z","user_id":2,"amt":1}
`,
				"flow.yml": flow(2),
				"funcs.yml": `kistype: func
fname: Agg
fmode: Calculate
window: {type: tumbling, size: 1h, time_field: ts, lateness: 30m, group_by: [user_id], aggregate: {n: count(), total: sum(amt)}}
`,
				"conns.yml": `kistype: conn
cname: ev
type: file
params:
  path: ev.jsonl
  follow: true
  poll: 20ms
---
kistype: conn
cname: db
type: sqlite
key: w
params:
  path: w.db
  create: "true"
  columns: user_id, window_start, window_end, n, total
`,
			})
			db := filepath.Join(dir, "w.db")
			windows := func() map[int64]int {
				if _, err := os.Stat(db); err != nil {
					return nil
				}
				return SQLiteCounts(t, db, "SELECT user_id * 100 + CAST(substr(window_start, 12, 2) AS INTEGER) FROM w")
			}
			appendRows := func(rows string) {
				f, err := os.OpenFile(filepath.Join(dir, "ev.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString(rows); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			run := func(want map[int64]int, more string) {
				p := Start(t, dir, nil, "run", ".", "--progress", "never")
				if more != "" {
					time.Sleep(time.Second) // the rows above in batches of their own
					appendRows(more)
				}
				for end := time.Now().Add(20 * time.Second); len(windows()) < len(want) && time.Now().Before(end); {
					if p.Exited() {
						t.Fatalf("kisflow exited:\n%s", p.Output())
					}
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(500 * time.Millisecond) // anything more would be written by now
				p.Signal(syscall.SIGTERM)
				if code := p.Wait(time.Minute); code != 0 {
					t.Fatalf("exit %d:\n%s", code, p.Output())
				}
				if got := windows(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("windows (user*100+hour: rows) = %v, want %v\n%s", got, want, p.Output())
				}
			}
			// Run 1, two workers: user 1's 00:00 window closes.
			run(map[int64]int{100: 1}, `{"ts":"2026-01-01T01:45:00Z","user_id":1,"amt":1}`+"\n")
			// Run 2: a row per user at 05:00 closes every window before.
			if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow(next)), 0o644); err != nil {
				t.Fatal(err)
			}
			var rows strings.Builder
			for u := range 4 {
				fmt.Fprintf(&rows, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
			}
			appendRows(rows.String())
			run(map[int64]int{0: 1, 100: 1, 101: 1, 200: 1, 301: 1}, "")
		})
	}
}

// TestWindowsKeptAcrossAWorkerThatGotNoRows: 2 -> 3 -> 2 workers, where
// the run of 3 gets rows of two users only, so a lane of it may never
// write: it never took its share of the first run's windows, which the
// third run must take from the first run's deltas (they were lost).
func TestWindowsKeptAcrossAWorkerThatGotNoRows(t *testing.T) {
	flow := func(workers int) string {
		return fmt.Sprintf("kistype: flow\nstatus: 1\nflow_name: Win\nflows:\n  - fname: Agg\nstream:\n  source: ev\n  sink: db\n  delivery: exactly-once\n  key: user_id\n  workers: %d\n", workers)
	}
	const users = 30
	var lines strings.Builder
	for i := range users * 20 {
		fmt.Fprintf(&lines, `{"ts":"2026-01-01T00:%02d:%02dZ","user_id":%d,"amt":1}`+"\n", i/60%60, i%60, i%users)
	}
	dir := Dir(t, map[string]string{
		"ev.jsonl":  lines.String(),
		"flow.yml":  flow(2),
		"funcs.yml": "kistype: func\nfname: Agg\nfmode: Calculate\nwindow: {type: tumbling, size: 1h, time_field: ts, lateness: 30s, group_by: [user_id], aggregate: {n: count(), total: sum(amt)}}\n",
		"conns.yml": "kistype: conn\ncname: ev\ntype: file\nparams:\n  path: ev.jsonl\n  follow: true\n  poll: 20ms\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: w\nparams:\n  path: w.db\n  create: \"true\"\n  columns: user_id, window_start, window_end, n, total\n",
	})
	db := filepath.Join(dir, "w.db")
	windows := func() map[int64]int {
		if _, err := os.Stat(db); err != nil {
			return nil
		}
		return SQLiteCounts(t, db, "SELECT user_id * 1000 + n FROM w WHERE substr(window_start, 12, 2) = '00'")
	}
	run := func(workers int, more string, n int) {
		if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow(workers)), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, "ev.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(more); err != nil {
			t.Fatal(err)
		}
		f.Close()
		p := Start(t, dir, nil, "run", ".", "--progress", "never")
		for end := time.Now().Add(20 * time.Second); len(windows()) < n && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond)
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(time.Minute); code != 0 {
			t.Fatalf("exit %d:\n%s", code, p.Output())
		}
	}
	run(2, "", 0)
	run(3, `{"ts":"2026-01-01T00:59:00Z","user_id":1,"amt":1}`+"\n"+`{"ts":"2026-01-01T00:59:00Z","user_id":2,"amt":1}`+"\n", 0)
	var closing strings.Builder
	want := map[int64]int{}
	for u := range users {
		fmt.Fprintf(&closing, `{"ts":"2026-01-01T05:00:00Z","user_id":%d,"amt":1}`+"\n", u)
		want[int64(u*1000+20)] = 1
	}
	want[1021], want[2021] = 1, 1
	delete(want, 1020)
	delete(want, 2020)
	run(2, closing.String(), users)
	if got := windows(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("00:00 windows (user*1000+rows: windows) = %v, want %v", got, want)
	}
}
