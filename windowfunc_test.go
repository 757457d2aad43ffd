package kisflow_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	kishttp "github.com/kisflow-go/kisflow/connector/http"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestJobProcessingTimeWindowClosesWhileIdle sends rows to a
// processing-time window over HTTP and then nothing: the window must still
// close and reach the sink, through the idle tick.
func TestJobProcessingTimeWindowClosesWhileIdle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n  - fname: PerSensor\nstream:\n  source: api\n  sink: db\n  linger: 1ms\n",
		"func.yml": "kistype: func\nfname: PerSensor\nfmode: Calculate\n" +
			"window: {type: tumbling, size: 300ms, group_by: [sensor], aggregate: {n: count(), total: sum(value)}}\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\nkey: /readings\n---\n" +
			"kistype: conn\ncname: db\ntype: sqlite\nkey: readings\nparams:\n  path: out.db\n  create: \"true\"\n  columns: sensor, window_start, window_end, n, total\n",
	})
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(streamRegistry(t), set)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer eng.Close(ctx)
	_, stop := testenv.StartJob(t, eng, "Ingest")
	defer stop()

	api, _ := eng.Connector(ctx, "api")
	url := "http://" + api.Driver().(*kishttp.Ingest).Addr() + "/readings"
	resp, err := http.Post(url, "application/json", strings.NewReader(`[{"sensor":"a","value":1},{"sensor":"a","value":2},{"sensor":"b","value":5}]`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	dbc, _ := eng.Connector(ctx, "db")
	db := dbc.Driver().(*kissql.DB).SQL()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n, rows int
		var total float64
		err := db.QueryRow("SELECT coalesce(sum(n), 0), coalesce(sum(total), 0), count(*) FROM readings").Scan(&n, &total, &rows)
		if err == nil && n == 3 {
			if total != 8 || rows < 2 {
				t.Fatalf("%d rows, total %v", rows, total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle stream's window never closed: %d rows counted (%v)", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWindowStateSnapshotRestore takes the state of a flow's window in one
// engine and restores it in another: the second emits the windows the
// first had open.
func TestWindowStateSnapshotRestore(t *testing.T) {
	t.Parallel()
	yml := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Calc\n  - fname: W\n---\n" +
		"kistype: func\nfname: Calc\nfmode: Calculate\ncalc: {cents: amount * 100}\n---\n" +
		"kistype: func\nfname: W\nfmode: Calculate\n" +
		"window: {type: tumbling, size: 1m, time_field: ts, group_by: [user], aggregate: {n: count(), cents: sum(cents)}}\n"
	newEngine := func() *kisflow.Engine { return yamlEngine(t, yml) }
	ctx := context.Background()
	run := func(eng *kisflow.Engine, rows ...string) []any {
		fl, err := eng.Flow(ctx, "F")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			_ = fl.CommitRow(r)
		}
		res, err := fl.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return res.Rows
	}
	a := newEngine()
	if out := run(a, `{"user":1,"ts":"2026-05-01T12:00:01Z","amount":1.5}`, `{"user":1,"ts":"2026-05-01T12:00:30Z","amount":2}`); len(out) != 0 {
		t.Fatalf("a window closed early: %v", out)
	}
	if _, err := a.WindowState(ctx, "F", 0); err == nil {
		t.Error("step 0 (a calc) has a window state")
	}
	st, err := a.WindowState(ctx, "F", 1)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b := newEngine()
	st2, err := b.WindowState(ctx, "F", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	out := run(b, `{"user":1,"ts":"2026-05-01T12:01:10Z","amount":4}`)
	if len(out) != 1 || fmt.Sprint(out[0]) != "map[cents:350 n:2 user:1 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]" {
		t.Fatalf("restored window emitted %v", out)
	}
}

// TestWindowLatePoliciesInAFlow runs a late row through a window function
// under each policy: update emits the corrected row of its window, drop
// ignores it, dead_letter rejects it with the reason.
func TestWindowLatePoliciesInAFlow(t *testing.T) {
	t.Parallel()
	rows := []string{
		`{"u":1,"ts":"2026-05-01T12:00:10Z"}`,
		`{"u":1,"ts":"2026-05-01T12:01:15Z"}`, // watermark 12:01:05: [12:00, 12:01) closes
		`{"u":1,"ts":"2026-05-01T12:00:50Z"}`, // late
	}
	for _, tc := range []struct{ late, out, rejected string }{
		{"update", "[map[n:1 u:1 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z] map[n:2 u:1 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]]", ""},
		{"drop", "[map[n:1 u:1 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]]", ""},
		{"dead_letter", "[map[n:1 u:1 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]]", "late row: its window already closed"},
	} {
		t.Run(tc.late, func(t *testing.T) {
			t.Parallel()
			yml := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: W\n---\n" +
				"kistype: func\nfname: W\nfmode: Calculate\n" +
				"window: {type: tumbling, size: 1m, time_field: ts, lateness: 10s, late: " + tc.late + ", group_by: [u], aggregate: {n: count()}}\n"
			fl, err := yamlEngine(t, yml).Flow(context.Background(), "F")
			if err != nil {
				t.Fatal(err)
			}
			var out []any
			var rejected []string
			for _, r := range rows {
				_ = fl.CommitRow(r)
				res, _ := fl.Run(context.Background())
				out = append(out, res.Rows...)
				for _, re := range res.Rejected {
					rejected = append(rejected, re.Error())
				}
			}
			if fmt.Sprint(out) != tc.out {
				t.Errorf("out %v\nwant %s", out, tc.out)
			}
			if got := strings.Join(rejected, "; "); (tc.rejected == "") != (got == "") || !strings.Contains(got, tc.rejected) {
				t.Errorf("rejected %q, want %q", got, tc.rejected)
			}
		})
	}
}

// TestWindowLargeBatch runs one batch large enough to be decoded in
// parallel chunks, its rows JSON strings, JSON bytes, maps, malformed JSON
// and rows without the time field mixed: every good row must be counted
// in its group, and each bad one rejected at its own position with its
// own row, whichever chunk it fell in.
func TestWindowLargeBatch(t *testing.T) {
	t.Parallel()
	yml := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: W\n---\n" +
		"kistype: func\nfname: W\nfmode: Calculate\n" +
		"window: {type: tumbling, size: 1m, time_field: ts, group_by: [u], aggregate: {n: count(), s: sum(v)}}\n"
	ctx := context.Background()
	fl, err := yamlEngine(t, yml).Flow(ctx, "F")
	if err != nil {
		t.Fatal(err)
	}
	const rows = 9001
	wantN, wantS := map[int]int{}, map[int]float64{}
	bad := map[int]any{}
	for i := range rows {
		u, v := i%7, float64(i%13)
		var row any
		switch i % 5 {
		case 0:
			row = fmt.Sprintf(`{"u":%d,"v":%g,"ts":"2026-05-01T12:00:%02dZ"}`, u, v, i%60)
		case 1:
			row = []byte(fmt.Sprintf(`{"ts":"2026-05-01T12:00:%02dZ", "v":%g, "u":%d}`, i%60, v, u))
		case 2:
			row = map[string]any{"u": u, "v": v, "ts": "2026-05-01T12:00:30Z"}
		case 3:
			if i%3 == 0 {
				row = fmt.Sprintf(`{"u":%d,"v":%g,"ts":"2026-05-01T12:00:01Z"`, u, v) // no closing brace
			} else {
				row = fmt.Sprintf(`{"u":%d,"v":%g}`, u, v) // no time field
			}
		case 4:
			row = fmt.Sprintf(`{"u":%d,"v":%g,"ts":"2026-05-01T12:00:59.5Z","x":{"deep":[1,2]}}`, u, v) // not flat
		}
		if i%5 == 3 {
			bad[i] = row
		} else {
			wantN[u]++
			wantS[u] += v
		}
		if err := fl.CommitRow(row); err != nil {
			t.Fatal(err)
		}
		if i == rows/2 || i == rows-1 {
			// Two batches: the second must not see anything of the first.
			res, _ := fl.Run(ctx)
			if len(res.Rows) != 0 {
				t.Fatalf("%d rows before the window closed", len(res.Rows))
			}
			first := 0
			if i == rows-1 {
				first = rows/2 + 1
			}
			for _, re := range res.Rejected {
				row, ok := bad[first+re.Index]
				if !ok || fmt.Sprint(re.Row) != fmt.Sprint(row) {
					t.Fatalf("row %d (%v) rejected: %v", first+re.Index, re.Row, re.Err)
				}
				delete(bad, first+re.Index)
			}
		}
	}
	if len(bad) != 0 {
		t.Fatalf("%d bad rows not rejected", len(bad))
	}
	// A row of the next minute, past the lateness, closes the window.
	if err := fl.CommitRow(`{"u":0,"v":0,"ts":"2026-05-01T12:05:00Z"}`); err != nil {
		t.Fatal(err)
	}
	res, err := fl.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != len(wantN) {
		t.Fatalf("%d window rows, want %d: %v", len(res.Rows), len(wantN), res.Rows)
	}
	for _, r := range res.Rows {
		m := r.(map[string]any)
		u := int(m["u"].(int64))
		if m["n"] != int64(wantN[u]) || m["s"] != wantS[u] {
			t.Errorf("group %d: n %v s %v, want %d %g", u, m["n"], m["s"], wantN[u], wantS[u])
		}
	}
}

// yamlEngine is an engine of the stock registry over one YAML file, closed
// when the test ends.
func yamlEngine(t *testing.T, yml string) *kisflow.Engine {
	t.Helper()
	set, err := config.ImportFS(fstest.MapFS{"f.yml": {Data: []byte(yml)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(kisflow.NewRegistry(), set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	return eng
}
