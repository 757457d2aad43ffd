package fault

import (
	"database/sql"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/state"
)

// winRow is one input row of the window tests.
type winRow struct {
	id     int
	t      int64 // event time, ms
	user   int
	amount float64
}

// winAgg is one output row: a window of one user.
type winAgg struct {
	n          int64
	sum, top   float64
	start, end int64
}

// TestWindowsMatchABruteForceReference runs `kisflow run` over randomised,
// out-of-order orders from a file (event times as RFC 3339 strings and as
// epoch milliseconds) through a YAML window function of each type into
// SQLite, and compares the table with the windows computed here row by
// row: the watermark is the largest time seen before a row less the
// lateness, a window closes when the watermark reaches its end, and a row
// none of whose windows is open (for sessions: whose own [t, t+gap) closed
// and that joins no open session) is late. Late rows must be the dead
// letters, with the reason, and every window still open at the end of the
// file must be in the table (the final flush). With workers: 4 (stream.key:
// user_id) each worker keeps the windows of its users with a watermark of
// its own: the reference is computed per worker, over the rows of the
// users the runtime sends it.
func TestWindowsMatchABruteForceReference(t *testing.T) {
	t.Parallel()
	for _, tc := range winCases {
		for _, workers := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/workers=%d", tc.name, workers), func(t *testing.T) {
				t.Parallel()
				users := 8
				if workers > 1 {
					users = 24
				}
				d := winData(t, tc, uint64(len(tc.name)), 3000, users)
				want, late := perWorker(d.rows, workers, tc.ref)
				if len(late) == 0 || len(late) > 600 {
					t.Fatalf("%d late rows in the input: the test data does not exercise lateness", len(late))
				}
				dir := winDir(t, tc.block, d.lines, winStream(workers, "exactly-once"), winSQLite)
				res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
				if res.Code != 0 {
					t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
				}
				compareWindows(t, readWindows(t, filepath.Join(dir, "out.db")), want)
				checkWinDeadLetters(t, dir, d.bad, late)
				t.Logf("%d windows, %d late rows", len(want), len(late))
			})
		}
	}
}

const winLateness = 20_000

// winCase is a window type with its block, how out of order its input is,
// and its brute-force reference.
type winCase struct {
	name, block string
	jitter      int64 // how far out of order rows are, ms
	ref         func(rows []winRow) (map[[2]int64]winAgg, map[int]bool)
}

var winCases = []winCase{
	{"tumbling", "type: tumbling, size: 1m", 45_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
		return fixedReference(rows, 60_000, 60_000, winLateness)
	}},
	{"sliding", "type: sliding, size: 1m, slide: 20s", 110_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
		return fixedReference(rows, 60_000, 20_000, winLateness)
	}},
	{"session", "type: session, gap: 30s", 80_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
		return sessionReference(rows, 30_000, winLateness)
	}},
}

// winInput is the input of a window test: its rows, as a file's lines, and
// the ids of the rows the window cannot read, with the reason.
type winInput struct {
	rows  []winRow
	lines string
	bad   map[int]string
}

// winData returns n orders of users 1..users over two hours, out of order
// by up to tc.jitter (more than the lateness, 20 s: some rows are late),
// after two rows the window cannot read.
func winData(t *testing.T, tc winCase, seed uint64, n, users int) winInput {
	rnd := rand.New(rand.NewPCG(seed, 13))
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	var lines strings.Builder
	// Two rows the window cannot read: dead-lettered with the reason.
	d := winInput{bad: map[int]string{9001: `time field "ts"`, 9002: "is not a number"}}
	fmt.Fprintf(&lines, `{"id":9001,"ts":"noon","user_id":1,"amount":1}`+"\n")
	fmt.Fprintf(&lines, `{"id":9002,"ts":%d,"user_id":1,"amount":"x"}`+"\n", base)
	step := int64(2400 * 3000 / n)
	for i := range n {
		r := winRow{id: i + 1, t: base + int64(i)*step - rnd.Int64N(tc.jitter), user: 1 + rnd.IntN(users), amount: float64(rnd.IntN(100_000)) / 100}
		d.rows = append(d.rows, r)
		ts := fmt.Sprintf("%d", r.t)
		if i%2 == 0 {
			ts = `"` + time.UnixMilli(r.t).UTC().Format(time.RFC3339Nano) + `"`
		}
		fmt.Fprintf(&lines, `{"id":%d,"ts":%s,"user_id":%d,"amount":%.2f}`+"\n", r.id, ts, r.user, r.amount)
	}
	d.lines = lines.String()
	return d
}

// perWorker computes ref over the rows of each of workers workers (the
// users the runtime sends it: state.Partition of the user's stream key),
// and merges the results.
func perWorker(rows []winRow, workers int, ref func([]winRow) (map[[2]int64]winAgg, map[int]bool)) (map[[2]int64]winAgg, map[int]bool) {
	parts := make([][]winRow, workers)
	for _, r := range rows {
		w := state.Partition(strconv.Itoa(r.user), workers)
		parts[w] = append(parts[w], r)
	}
	want, late := map[[2]int64]winAgg{}, map[int]bool{}
	for _, p := range parts {
		w, l := ref(p)
		maps.Copy(want, w)
		maps.Copy(late, l)
	}
	return want, late
}

// winStream is the stream block's settings after the source and sink.
func winStream(workers int, delivery string) string {
	s := "  delivery: " + delivery + "\n  batch_size: 97\n"
	if workers > 1 {
		s += fmt.Sprintf("  workers: %d\n  key: user_id\n", workers)
	}
	return s
}

// winSQLite is the window tests' sink: a SQLite table out.
const winSQLite = `kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: user_id, window_start, window_end, n, total, top
`

// winDir writes a config folder: orders.jsonl (lines) -> PerUser (a window
// of block, grouped by user_id) -> sink (conn db).
func winDir(t *testing.T, block, lines, stream, sink string) string {
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
` + stream,
		"funcs.yml": `kistype: func
fname: PerUser
fmode: Calculate
window: {` + block + `, time_field: ts, lateness: 20s,` + lateOf(block) + `
         group_by: [user_id], aggregate: {n: count(), total: sum(amount), top: max(amount)}}
`,
		"conns.yml": `kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl
---
` + sink,
	})
}

// lateOf is the late policy to add to block: dead_letter unless it has one.
func lateOf(block string) string {
	if strings.Contains(block, "late:") {
		return ""
	}
	return " late: dead_letter,"
}

// compareWindows compares the windows of a table with the reference.
func compareWindows(t *testing.T, got, want map[[2]int64]winAgg) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("user %d, window %s: missing", k[0], time.UnixMilli(k[1]).UTC())
		case g.n != w.n || math.Abs(g.sum-w.sum) > 1e-6 || g.top != w.top || g.end != w.end:
			t.Errorf("user %d, window %s: got %+v, want %+v", k[0], time.UnixMilli(k[1]).UTC(), g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("user %d, window %s: not in the reference", k[0], time.UnixMilli(k[1]).UTC())
		}
	}
}

// checkWinDeadLetters checks that the dead letters are the rows the window
// cannot read, with the reason, and the late rows of the reference.
func checkWinDeadLetters(t *testing.T, dir string, bad map[int]string, late map[int]bool) {
	t.Helper()
	missing := maps.Clone(bad)
	dead := JSONLines(t, filepath.Join(dir, ".kisflow", "dead-letter", "Win.jsonl"))
	deadIDs := map[int]bool{}
	for _, d := range dead {
		p, _ := d["payload"].(map[string]any)
		id, _ := p["id"].(float64)
		e, _ := d["error"].(string)
		if why, ok := bad[int(id)]; ok {
			if !strings.Contains(e, why) {
				t.Errorf("dead letter of row %d says %q, want %q", int(id), e, why)
			}
			delete(missing, int(id))
			continue
		}
		if _, again := deadIDs[int(id)]; again {
			continue
		}
		deadIDs[int(id)] = true
		if !strings.Contains(e, "late row: its window already closed") || d["func"] != "PerUser" {
			t.Errorf("dead letter %v", d)
		}
	}
	if len(missing) > 0 {
		t.Errorf("rows not dead-lettered: %v", missing)
	}
	if len(deadIDs) != len(late) || !mapsEqual(deadIDs, late) {
		t.Errorf("%d late rows dead-lettered, want the %d of the reference", len(deadIDs), len(late))
	}
}

func mapsEqual(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// fixedReference computes tumbling (slide == size) or sliding windows,
// keyed by user and window start, and the late rows.
func fixedReference(rows []winRow, size, slide, lateness int64) (map[[2]int64]winAgg, map[int]bool) {
	out, late := map[[2]int64]winAgg{}, map[int]bool{}
	seen, maxTS := false, int64(0)
	for _, r := range rows {
		wm := maxTS - lateness
		taken := false
		for start := r.t - ((r.t%slide)+slide)%slide; start > r.t-size; start -= slide {
			if seen && start+size <= wm {
				continue // closed
			}
			k := [2]int64{int64(r.user), start}
			a, ok := out[k]
			if !ok {
				a = winAgg{start: start, end: start + size, top: math.Inf(-1)}
			}
			a.n++
			a.sum += r.amount
			a.top = max(a.top, r.amount)
			out[k] = a
			taken = true
		}
		if !taken {
			late[r.id] = true
		}
		if !seen || r.t > maxTS {
			seen, maxTS = true, r.t
		}
	}
	return out, late
}

// sessionReference computes session windows of gap, keyed by user and
// session start, and the late rows.
func sessionReference(rows []winRow, gap, lateness int64) (map[[2]int64]winAgg, map[int]bool) {
	out, late := map[[2]int64]winAgg{}, map[int]bool{}
	open := map[int][]winAgg{} // per user, disjoint
	closeUpTo := func(wm int64) {
		for u, list := range open {
			list = slices.DeleteFunc(list, func(s winAgg) bool {
				if s.end <= wm {
					out[[2]int64{int64(u), s.start}] = s
					return true
				}
				return false
			})
			open[u] = list
		}
	}
	seen, maxTS := false, int64(0)
	for _, r := range rows {
		wm := maxTS - lateness
		s := winAgg{start: r.t, end: r.t + gap, n: 1, sum: r.amount, top: r.amount}
		var rest []winAgg
		merged := false
		for _, o := range open[r.user] {
			if o.start < s.end && s.start < o.end {
				s = winAgg{start: min(s.start, o.start), end: max(s.end, o.end), n: s.n + o.n, sum: s.sum + o.sum, top: max(s.top, o.top)}
				merged = true
				continue
			}
			rest = append(rest, o)
		}
		if !merged && seen && s.end <= wm {
			late[r.id] = true
		} else {
			open[r.user] = append(rest, s)
		}
		if !seen || r.t > maxTS {
			seen, maxTS = true, r.t
			closeUpTo(maxTS - lateness)
		}
	}
	closeUpTo(math.MaxInt64)
	return out, late
}

// readWindows reads the window table, keyed by user and window start.
func readWindows(t *testing.T, path string) map[[2]int64]winAgg {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return readWindowsDB(t, db, "out")
}

// readWindowsDB reads the window table of db, keyed by user and window
// start.
func readWindowsDB(t *testing.T, db *sql.DB, table string) map[[2]int64]winAgg {
	t.Helper()
	rows, err := db.Query("SELECT user_id, window_start, window_end, n, total, top FROM " + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[[2]int64]winAgg{}
	for rows.Next() {
		var user int64
		var start, end string
		var a winAgg
		if err := rows.Scan(&user, &start, &end, &a.n, &a.sum, &a.top); err != nil {
			t.Fatal(err)
		}
		s, err1 := time.Parse(time.RFC3339Nano, start)
		e, err2 := time.Parse(time.RFC3339Nano, end)
		if err1 != nil || err2 != nil {
			t.Fatalf("window bounds %q, %q are not RFC 3339", start, end)
		}
		a.start, a.end = s.UnixMilli(), e.UnixMilli()
		k := [2]int64{user, a.start}
		if _, dup := got[k]; dup {
			t.Errorf("user %d, window %s: twice in the table", user, start)
		}
		got[k] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}
