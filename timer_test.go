package kisflow_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// tev is a row of the timer tests: key, event time (epoch ms).
type tev struct {
	Key string `json:"key"`
	TS  int64  `json:"ts"`
}

// timerFlow writes a config folder for a flow Timed over events.jsonl into
// the SQLite table out of out.db, with the stream block extra.
func timerFlow(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"events.jsonl": "",
		"flow.yml": `kistype: flow
status: 1
flow_name: Timed
flows:
  - fname: Arm
stream:
  source: events
  sink: db
` + extra,
		"funcs.yml": "kistype: func\nfname: Arm\nfmode: Calculate\n",
		"conns.yml": `kistype: conn
cname: events
type: file
params:
  path: events.jsonl
  follow: "false"
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
`,
	})
	return dir
}

func appendEvents(t *testing.T, dir string, evs []tev) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "events.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, e := range evs {
		b, _ := json.Marshal(e)
		fmt.Fprintf(f, "%s\n", b)
	}
}

// outRows returns the rows of out.db's table out, as "kind key at wm after".
func outRows(t *testing.T, dir string) []string {
	t.Helper()
	h, err := sql.Open("sqlite", filepath.Join(dir, "out.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rows, err := h.Query(`SELECT kind, key, at, wm, after FROM out ORDER BY rowid`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil
		}
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var kind, key string
		var at, wm, after int64
		if err := rows.Scan(&kind, &key, &at, &wm, &after); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %d %d %d", kind, key, at, wm, after))
	}
	return out
}

// timerRow is what Arm and its callback write.
func timerRow(kind, key string, at, wm int64, after int) map[string]any {
	return map[string]any{"kind": kind, "key": key, "at": at, "wm": wm, "after": after}
}

func wmOf(f kisflow.Flow) int64 {
	if w, ok := kisflow.Watermark(f); ok {
		return w.UnixMilli()
	}
	return -1
}

// runTimed runs flow Timed of dir to the end of its file: Arm sets, per
// row, an event-time timer at ts+delay for the row's key and writes a row
// "row"; the callback writes a row "timer" with the number of rows Arm had
// processed when it fired.
func runTimed(t *testing.T, dir string, delay int64) {
	t.Helper()
	var mu sync.Mutex
	processed := 0
	tm := kisflow.NewTimer("t")
	reg := streamRegistry(t)
	reg.MustRegister("Arm", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*tev) error {
		for _, e := range rows {
			if err := tm.SetEventTime(f, e.Key, time.UnixMilli(e.TS+delay)); err != nil {
				return err
			}
			mu.Lock()
			processed++
			n := processed
			mu.Unlock()
			if err := f.CommitRow(timerRow("row", e.Key, e.TS, wmOf(f), n)); err != nil {
				return err
			}
		}
		return nil
	}))
	if err := reg.OnTimer("Arm", func(ctx context.Context, f kisflow.Flow, ft kisflow.FiredTimer) error {
		if !ft.EventTime || ft.Timer != "t" {
			return fmt.Errorf("fired %+v", ft)
		}
		mu.Lock()
		n := processed
		mu.Unlock()
		return f.CommitRow(timerRow("timer", ft.Key, ft.Time.UnixMilli(), wmOf(f), n))
	}); err != nil {
		t.Fatal(err)
	}
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	job, err := eng.Job(ctx, "Timed", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		t.Fatal(err)
	}
	if err := job.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTimersFireInEventTimeOrderWhenTheWatermarkPasses feeds rows one a
// batch with out-of-order event times: each timer fires right after the
// row that moved the watermark (largest time less lateness) to or past
// its time, never earlier, timers made due by one row in time order, the
// rest at the end of the file; a rerun over appended rows resumes from the
// kept watermark and fires nothing twice.
func TestTimersFireInEventTimeOrderWhenTheWatermarkPasses(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			const lateness, delay = 100, 500
			dir := timerFlow(t, fmt.Sprintf("  batch_size: 1\n  delivery: %s\n  time_field: ts\n  lateness: %dms\n", delivery, lateness))
			rnd := rand.New(rand.NewPCG(uint64(len(delivery)), 1))
			var evs []tev
			for i := range 60 {
				evs = append(evs, tev{Key: fmt.Sprintf("k%02d", i), TS: 10000 + int64(i)*100 + int64(rnd.IntN(400)) - 200})
			}
			appendEvents(t, dir, evs)
			runTimed(t, dir, delay)

			// The reference: after row i (1-based), the timers at or
			// before max(ts[:i]) - lateness fire, in time order.
			var want []string
			fired := map[string]bool{}
			maxTS, wm := int64(-1<<62), int64(-1)
			for i, e := range evs {
				before := wm
				want = append(want, fmt.Sprintf("row %s %d %d %d", e.Key, e.TS, before, i+1))
				maxTS = max(maxTS, e.TS)
				wm = maxTS - lateness
				var due []tev
				for _, d := range evs[:i+1] {
					if !fired[d.Key] && d.TS+delay <= wm {
						due = append(due, d)
					}
				}
				slices.SortFunc(due, func(a, b tev) int {
					if a.TS != b.TS {
						return int(a.TS - b.TS)
					}
					return strings.Compare(a.Key, b.Key)
				})
				for _, d := range due {
					fired[d.Key] = true
					want = append(want, fmt.Sprintf("timer %s %d %d %d", d.Key, d.TS+delay, before, i+1))
				}
			}
			// The rest fire at the end of the file, in time order.
			var rest []tev
			for _, d := range evs {
				if !fired[d.Key] {
					rest = append(rest, d)
				}
			}
			slices.SortFunc(rest, func(a, b tev) int {
				if a.TS != b.TS {
					return int(a.TS - b.TS)
				}
				return strings.Compare(a.Key, b.Key)
			})
			for _, d := range rest {
				want = append(want, fmt.Sprintf("timer %s %d %d %d", d.Key, d.TS+delay, wm, len(evs)))
			}
			got := outRows(t, dir)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}

			// A rerun over two more rows: the watermark goes on from the
			// kept one (the first row is behind it), and no timer fires
			// again but the new ones.
			appendEvents(t, dir, []tev{{Key: "late", TS: 9000}, {Key: "new", TS: maxTS + 1000}})
			runTimed(t, dir, delay)
			got = outRows(t, dir)[len(got):]
			want = []string{
				fmt.Sprintf("row late 9000 %d 1", wm),
				fmt.Sprintf("timer late 9500 %d 1", wm),
				fmt.Sprintf("row new %d %d 2", maxTS+1000, wm),
				fmt.Sprintf("timer new %d %d 2", maxTS+1000+delay, maxTS+1000-lateness),
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("rerun: got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestProcessingTimeTimerFiresWhileIdle: a processing-time timer set by
// the only row of a stream that then stays idle fires once the wall clock
// passes it, and its row reaches the sink.
func TestProcessingTimeTimerFiresWhileIdle(t *testing.T) {
	t.Parallel()
	dir := timerFlow(t, "  delivery: exactly-once\n")
	conns, err := os.ReadFile(filepath.Join(dir, "conns.yml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"conns.yml": strings.Replace(string(conns), `follow: "false"`, `follow: "true"`, 1)})
	const wait = 300 * time.Millisecond
	var mu sync.Mutex
	setAt := map[string]time.Time{}
	tm := kisflow.NewTimer("idle")
	reg := streamRegistry(t)
	reg.MustRegister("Arm", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*tev) error {
		for _, e := range rows {
			now := time.Now()
			if err := tm.SetProcessingTime(f, e.Key, now.Add(wait)); err != nil {
				return err
			}
			mu.Lock()
			setAt[e.Key] = now
			mu.Unlock()
			if err := f.CommitRow(timerRow("row", e.Key, e.TS, 0, 0)); err != nil {
				return err
			}
		}
		return nil
	}))
	if err := reg.OnTimer("Arm", func(ctx context.Context, f kisflow.Flow, ft kisflow.FiredTimer) error {
		mu.Lock()
		took := time.Since(setAt[ft.Key])
		mu.Unlock()
		if ft.EventTime {
			return fmt.Errorf("fired %+v as an event-time timer", ft)
		}
		return f.CommitRow(timerRow("timer", ft.Key, ft.Time.UnixMilli(), 0, int(took.Milliseconds())))
	}); err != nil {
		t.Fatal(err)
	}
	eng := dirEngine(t, reg, dir)
	defer eng.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	job, err := eng.Job(ctx, "Timed", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	appendEvents(t, dir, []tev{{Key: "a", TS: 1}})
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows := outRows(t, dir)
		if len(rows) == 2 {
			var kind, key string
			var at, wm, took int64
			if _, err := fmt.Sscan(rows[1], &kind, &key, &at, &wm, &took); err != nil || kind != "timer" || key != "a" {
				t.Fatalf("rows %q", rows)
			}
			if took < wait.Milliseconds() {
				t.Fatalf("the timer fired %dms after it was set, before its time (%v)", took, wait)
			}
			return
		}
		if len(rows) > 2 || time.Now().After(deadline) {
			t.Fatalf("after 15s of an idle stream the sink holds %q, want the row and its timer's", rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLintTimersWithWorkersNeedAKey: a flow whose function sets timers,
// with several workers and no stream.key, is an error at stream.workers.
func TestLintTimersWithWorkersNeedAKey(t *testing.T) {
	t.Parallel()
	dir := timerFlow(t, "  workers: 3\n")
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := streamRegistry(t)
	reg.MustRegister("Arm", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*tev) error { return nil }))
	if err := reg.OnTimer("Arm", func(context.Context, kisflow.Flow, kisflow.FiredTimer) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := reg.OnTimer("Arm", func(context.Context, kisflow.Flow, kisflow.FiredTimer) error { return nil }); err == nil {
		t.Fatal("a second callback for Arm was accepted")
	}
	var got []string
	for _, p := range set.Check(reg.LintOptions()...) {
		got = append(got, p.String())
	}
	want := `flow.yml:9: flow "Timed": function "Arm" sets timers, which with 3 workers need stream.key`
	if len(got) != 1 || !strings.Contains(got[0], want) {
		t.Fatalf("got %q, want one problem %q", got, want)
	}
}
