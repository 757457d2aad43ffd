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
	newEngine := func() *kisflow.Engine {
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
			set, err := config.ImportFS(fstest.MapFS{"f.yml": {Data: []byte(yml)}}, ".")
			if err != nil {
				t.Fatal(err)
			}
			eng, err := kisflow.NewEngine(kisflow.NewRegistry(), set)
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close(context.Background())
			fl, err := eng.Flow(context.Background(), "F")
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
