package fault

import (
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
// file must be in the table (the final flush).
func TestWindowsMatchABruteForceReference(t *testing.T) {
	t.Parallel()
	const lateness = 20_000
	for _, tc := range []struct {
		name, block string
		jitter      int64 // how far out of order rows are, ms
		ref         func(rows []winRow) (map[[2]int64]winAgg, map[int]bool)
	}{
		{"tumbling", "type: tumbling, size: 1m", 45_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
			return fixedReference(rows, 60_000, 60_000, lateness)
		}},
		{"sliding", "type: sliding, size: 1m, slide: 20s", 110_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
			return fixedReference(rows, 60_000, 20_000, lateness)
		}},
		{"session", "type: session, gap: 30s", 80_000, func(rows []winRow) (map[[2]int64]winAgg, map[int]bool) {
			return sessionReference(rows, 30_000, lateness)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(uint64(len(tc.name)), 13))
			base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
			var rows []winRow
			var lines strings.Builder
			// Two rows the window cannot read: dead-lettered with the reason.
			bad := map[int]string{9001: `time field "ts"`, 9002: "is not a number"}
			fmt.Fprintf(&lines, `{"id":9001,"ts":"noon","user_id":1,"amount":1}`+"\n")
			fmt.Fprintf(&lines, `{"id":9002,"ts":%d,"user_id":1,"amount":"x"}`+"\n", base)
			for i := range 3000 {
				// Two hours of orders, out of order by more than the
				// lateness (20 s): some rows are late.
				r := winRow{id: i + 1, t: base + int64(i)*2400 - rnd.Int64N(tc.jitter), user: 1 + rnd.IntN(8), amount: float64(rnd.IntN(100_000)) / 100}
				rows = append(rows, r)
				ts := fmt.Sprintf("%d", r.t)
				if i%2 == 0 {
					ts = `"` + time.UnixMilli(r.t).UTC().Format(time.RFC3339Nano) + `"`
				}
				fmt.Fprintf(&lines, `{"id":%d,"ts":%s,"user_id":%d,"amount":%.2f}`+"\n", r.id, ts, r.user, r.amount)
			}
			want, late := tc.ref(rows)
			if len(late) == 0 || len(late) > 600 {
				t.Fatalf("%d late rows in the input: the test data does not exercise lateness", len(late))
			}
			dir := Dir(t, map[string]string{
				"orders.jsonl": lines.String(),
				"flow.yml": `kistype: flow
status: 1
flow_name: Win
flows:
  - fname: PerUser
stream:
  source: orders
  sink: db
  delivery: exactly-once
  batch_size: 97
`,
				"funcs.yml": `kistype: func
fname: PerUser
fmode: Calculate
window: {` + tc.block + `, time_field: ts, lateness: 20s, late: dead_letter,
         group_by: [user_id], aggregate: {n: count(), total: sum(amount), top: max(amount)}}
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
  columns: user_id, window_start, window_end, n, total, top
`,
			})
			res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
			if res.Code != 0 {
				t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
			}
			got := readWindows(t, filepath.Join(dir, "out.db"))
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
					delete(bad, int(id))
					continue
				}
				deadIDs[int(id)] = true
				if !strings.Contains(e, "late row: its window already closed") || d["func"] != "PerUser" {
					t.Errorf("dead letter %v", d)
				}
			}
			if len(bad) > 0 {
				t.Errorf("rows not dead-lettered: %v", bad)
			}
			if len(deadIDs) != len(late) || !mapsEqual(deadIDs, late) {
				t.Errorf("%d late rows dead-lettered, want the %d of the reference", len(deadIDs), len(late))
			}
			t.Logf("%d windows, %d late rows", len(want), len(late))
		})
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
	rows, err := db.Query("SELECT user_id, window_start, window_end, n, total, top FROM out")
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
