package kisflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// TestWindowsFollowTheStreamWatermark: with stream.time_field, an
// event-time window is judged by the stream's watermark (largest time
// less the stream's lateness, 0 here) instead of its own (less its own
// lateness, 5s): a row 2s behind the largest time is late. Without it the
// window keeps its own watermark and takes the row.
func TestWindowsFollowTheStreamWatermark(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		stream string
		want   []string
	}{
		{"  time_field: ts\n", []string{"1970-01-01T00:00:00Z 1", "1970-01-01T00:00:03Z 1"}},
		{"", []string{"1970-01-01T00:00:00Z 1", "1970-01-01T00:00:01Z 1", "1970-01-01T00:00:03Z 1"}},
	} {
		t.Run(fmt.Sprintf("stream_time=%v", tc.stream != ""), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{
				"events.jsonl": `{"k":"a","ts":500}
{"k":"a","ts":3500}
{"k":"a","ts":1500}
`,
				"flow.yml": `kistype: flow
status: 1
flow_name: Win
flows:
  - fname: Count
stream:
  source: events
  sink: db
  batch_size: 1
` + tc.stream,
				"funcs.yml": `kistype: func
fname: Count
fmode: Calculate
window: {type: tumbling, size: 1s, time_field: ts, lateness: 5s, late: drop, group_by: [k], aggregate: {n: count()}}
`,
				"conns.yml": `kistype: conn
cname: events
type: file
params:
  path: events.jsonl
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
			set, err := config.Import(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			eng, err := kisflow.NewEngine(streamRegistry(t), set)
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close(ctx)
			job, err := eng.Job(ctx, "Win", kisflow.WithStateDir(filepath.Join(dir, "state")))
			if err != nil {
				t.Fatal(err)
			}
			if err := job.Run(ctx); err != nil {
				t.Fatal(err)
			}
			h, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			rows, err := h.Query(`SELECT window_start, n FROM out ORDER BY window_start`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var got []string
			for rows.Next() {
				var start string
				var n int
				if err := rows.Scan(&start, &n); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s %d", start, n))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
