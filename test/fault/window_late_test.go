package fault

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// winLateDir is a run of flow Win: orders from a JSON lines file (params:
// the file source's extra params) through an event-time tumbling window of
// one minute, lateness 30s, into SQLite, exactly once, batches of 50.
func winLateDir(t *testing.T, lines, params string) string {
	return Dir(t, map[string]string{
		"orders.jsonl": lines,
		"flow.yml": `kistype: flow
status: 1
flow_name: Win
flows:
  - fname: PerUser
stream:
  source: orders
  sink: db
  delivery: exactly-once
  batch_size: 50
  max_consecutive_failures: 100
`,
		"funcs.yml": `kistype: func
fname: PerUser
fmode: Calculate
window: {type: tumbling, size: 1m, time_field: ts, lateness: 30s,
         group_by: [user_id], aggregate: {n: count(), total: sum(amount), top: max(amount)}}
`,
		"conns.yml": `kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl` + params + `
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: user_id, window_start, window_end, n, total, top
`,
	})
}

func winLine(r winRow) string {
	return fmt.Sprintf(`{"id":%d,"ts":%d,"user_id":%d,"amount":%.2f}`+"\n", r.id, r.t, r.user, r.amount)
}

// A device flushing an old buffer: 300 on-time rows, 150 rows an hour old,
// one row whose time is in microseconds (year 58000 and more), then 100
// on-time rows. The 150 late rows are more than max_consecutive_failures
// (100) in a row, but late rows are expected data: the run ends with exit
// 0, the late rows and the wild one are dead-lettered with their reasons,
// and every window has the on-time rows the reference gives it, those
// after the burst and the wild row included.
func TestWindowsLateBurstAndAWildTimestampDoNotStopTheJob(t *testing.T) {
	t.Parallel()
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Minute).UnixMilli()
	var rows []winRow
	var lines strings.Builder
	add := func(r winRow) {
		rows = append(rows, r)
		lines.WriteString(winLine(r))
	}
	for i := range 300 {
		add(winRow{id: i, t: base + int64(i)*400, user: i % 5, amount: float64(i%7) + 0.5})
	}
	for i := range 150 {
		add(winRow{id: 300 + i, t: base - time.Hour.Milliseconds() + int64(i)*100, user: i % 5, amount: 1})
	}
	const wild = 9999
	lines.WriteString(winLine(winRow{id: wild, t: (base + 120_000) * 1000, user: 1, amount: 1}))
	for i := range 100 {
		add(winRow{id: 450 + i, t: base + 120_000 + int64(i)*400, user: i % 5, amount: float64(i%3) + 0.25})
	}
	want, late := fixedReference(rows, 60_000, 60_000, 30_000)
	if len(late) != 150 {
		t.Fatalf("%d late rows in the reference, want the 150 old ones", len(late))
	}
	// One worker: with several, which rows are late depends on which
	// worker finishes first (the README says so).
	dir := winLateDir(t, lines.String(), "")
	res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	got := readWindows(t, filepath.Join(dir, "out.db"))
	if len(got) != len(want) {
		t.Errorf("%d windows, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("user %d, window %s: missing", k[0], time.UnixMilli(k[1]).UTC())
		case g.n != w.n || math.Abs(g.sum-w.sum) > 1e-6 || g.top != w.top || g.end != w.end:
			t.Errorf("user %d, window %s: got %+v, want %+v", k[0], time.UnixMilli(k[1]).UTC(), g, w)
		}
	}
	deadLate := map[int]bool{}
	wildDead := false
	for _, d := range JSONLines(t, filepath.Join(dir, ".kisflow", "dead-letter", "Win.jsonl")) {
		p, _ := d["payload"].(map[string]any)
		id, _ := p["id"].(float64)
		e, _ := d["error"].(string)
		switch {
		case int(id) == wild && strings.Contains(e, "event time too far ahead of the clock"):
			wildDead = true
		case strings.Contains(e, "late row: its window already closed"):
			deadLate[int(id)] = true
		default:
			t.Errorf("dead letter %v", d)
		}
	}
	if !wildDead {
		t.Errorf("the row with a timestamp in microseconds is not dead-lettered as too far ahead")
	}
	if !mapsEqual(deadLate, late) {
		t.Errorf("%d late rows dead-lettered, want the %d of the reference", len(deadLate), len(late))
	}
}

// A stop (SIGINT) with windows still open: they are kept with the last
// commit (one worker, an exactly-once SQL sink), the run says so, and the
// next run goes on with them: rows appended then close them with every
// row of both runs counted.
func TestWindowsOpenAtStopAreKept(t *testing.T) {
	t.Parallel()
	base := time.Now().Add(-time.Hour).Truncate(time.Minute).UnixMilli()
	var lines strings.Builder
	// Minute one for users 0..4, then minute three, which closes minute
	// one (watermark = largest time - 30s) and stays open: 5 windows.
	for i := range 50 {
		lines.WriteString(winLine(winRow{id: i, t: base + int64(i)*1000, user: i % 5, amount: 1}))
	}
	for i := range 50 {
		lines.WriteString(winLine(winRow{id: 50 + i, t: base + 120_000 + int64(i)*100, user: i % 5, amount: 1}))
	}
	dir := winLateDir(t, lines.String(), "\n  follow: \"true\"\n  poll: 20ms")
	p := Start(t, dir, nil, "run", dir, "--progress", "never")
	Eventually(t, 2*time.Minute, "the first minute's windows in the table", func() bool {
		return len(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out")) > 0
	})
	p.Signal(syscall.SIGINT)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Output())
	}
	out := p.Output()
	for _, want := range []string{
		"flow Win: 5 open windows are kept for the next run",
		"stopped by signal; in-flight batches were drained and committed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "were not emitted") {
		t.Errorf("kept windows reported as not emitted:\n%s", out)
	}

	// The next run: minute five closes minute three, whose 50 rows the
	// first run read.
	p = Start(t, dir, nil, "run", dir, "--progress", "never")
	var more strings.Builder
	for i := range 10 {
		more.WriteString(winLine(winRow{id: 100 + i, t: base + 240_000 + int64(i)*1000, user: i % 5, amount: 1}))
	}
	f, err := os.OpenFile(filepath.Join(dir, "orders.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(more.String()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 2*time.Minute, "minute three's windows in the table", func() bool {
		windows := 0
		for _, k := range SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out") {
			windows += k
		}
		return windows >= 10
	})
	p.Signal(syscall.SIGINT)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, p.Output())
	}
	// Minutes one and three of 5 users, 10 rows in each: minute three's
	// read by the first run.
	counts := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out")
	if len(counts) != 1 || counts[10] != 10 {
		t.Fatalf("window row counts (count: windows) %v, want 10 windows of 10 rows", counts)
	}
}

// A job error (max_consecutive_failures on rows whose time cannot be read)
// with windows open, on two workers (stream.key: user_id, a group_by
// field): the run fails, and says how many windows the workers keep for
// the next run.
func TestWindowsOpenAtAJobErrorAreReported(t *testing.T) {
	t.Parallel()
	base := time.Now().Add(-time.Hour).Truncate(time.Minute).UnixMilli()
	var lines strings.Builder
	for i := range 10 {
		lines.WriteString(winLine(winRow{id: i, t: base + int64(i)*1000, user: i % 5, amount: 1}))
	}
	for i := range 150 {
		fmt.Fprintf(&lines, `{"id":%d,"ts":"noon","user_id":1,"amount":1}`+"\n", 10+i)
	}
	dir := winLateDir(t, lines.String(), "")
	flow := filepath.Join(dir, "flow.yml")
	b, err := os.ReadFile(flow)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flow, []byte(strings.Replace(string(b), "  batch_size: 50\n", "  batch_size: 50\n  workers: 2\n  key: user_id\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
	if res.Code != 1 || !strings.Contains(res.Stderr, "(stream.max_consecutive_failures)") {
		t.Fatalf("exit %d, want 1 on max_consecutive_failures\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if want := "flow Win: 5 open windows are kept for the next run"; !strings.Contains(res.Stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, res.Stdout)
	}
}
