package kisflow_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	kishttp "github.com/kisflow-go/kisflow/connector/http"
	"github.com/kisflow-go/kisflow/connector/memory"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

func streamRegistry(t testing.TB) *kisflow.Registry {
	t.Helper()
	reg := kisflow.NewRegistry()
	for _, err := range []error{file.Install(reg), kissql.Install(reg), kishttp.Install(reg), memory.Install(reg)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJobYAMLOnlyFileToSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var in strings.Builder
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&in, "{\"stu_id\":%d,\"score_1\":%d,\"score_2\":90,\"score_3\":80}\n", i, i%101)
	}
	in.WriteString("{\"stu_id\": broken}\n")
	writeFiles(t, dir, map[string]string{
		"scores.jsonl": in.String(),
		"flow.yml": `kistype: flow
status: 1
flow_name: Avg
flows:
  - fname: Passed
  - fname: AvgScore
stream:
  source: scores
  sink: db
  batch_size: 64
  workers: 2
  retry_times: 0
`,
		"funcs.yml": `kistype: func
fname: Passed
fmode: Verify
filter: score_1 >= 50
---
kistype: func
fname: AvgScore
fmode: Calculate
calc:
  avg_score: (score_1 + score_2 + score_3) / 3
  grade: 'avg_score >= 80 ? "A" : "B"'
keep: [stu_id, avg_score, grade]
`,
		"conns.yml": `kistype: conn
cname: scores
type: file
params:
  path: scores.jsonl
---
kistype: conn
cname: db
type: sqlite
key: averages
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
	state := filepath.Join(dir, "state")
	runJob := func() kisflow.JobStats {
		eng, err := kisflow.NewEngine(streamRegistry(t), set)
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close(ctx)
		job, err := eng.Job(ctx, "Avg", kisflow.WithStateDir(state))
		if err != nil {
			t.Fatal(err)
		}
		if err := job.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return job.Stats()
	}
	s := runJob()
	// score_1 = i % 101 >= 50: ids whose remainder is 50..100.
	want := 0
	for i := 1; i <= 500; i++ {
		if i%101 >= 50 {
			want++
		}
	}
	if s.Read != 501 || s.Committed != 501 || s.Out != int64(want) || s.DeadLettered != 1 {
		t.Fatalf("stats %+v, want %d rows out", s, want)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var avg float64
	var grade string
	if err := db.QueryRow("SELECT count(*) FROM averages").Scan(&n); err != nil || n != want {
		t.Fatalf("rows %d (%v), want %d", n, err, want)
	}
	if err := db.QueryRow("SELECT avg_score, grade FROM averages WHERE stu_id = 100").Scan(&avg, &grade); err != nil || avg != 90 || grade != "A" {
		t.Fatalf("stu 100: %v %q %v", avg, grade, err)
	}
	data, err := os.ReadFile(filepath.Join(state, "dead-letter", "Avg.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var dl stream.DeadLetter
	if err := json.Unmarshal(data, &dl); err != nil || dl.Func != "Passed" || dl.Attempts != 1 || !strings.Contains(dl.Error, "invalid character") {
		t.Fatalf("dead letter %s (%v)", data, err)
	}
	// A second run resumes after the committed position: nothing to do.
	if s := runJob(); s.Read != 0 {
		t.Fatalf("second run read %d rows", s.Read)
	}
}

type reading struct {
	Sensor string  `json:"sensor"`
	Value  float64 `json:"value"`
}

func TestJobHTTPIngestAnswersAfterTheRowsAreStored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n  - fname: Scale\nstream:\n  source: api\n  sink: db\n  linger: 1ms\n",
		"func.yml": "kistype: func\nfname: Scale\nfmode: Calculate\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\nkey: /readings\n---\n" +
			"kistype: conn\ncname: db\ntype: sqlite\nkey: readings\nparams:\n  path: out.db\n  create: \"true\"\n",
	})
	reg := streamRegistry(t)
	reg.MustRegister("Scale", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*reading) error {
		for _, r := range rows {
			_ = f.CommitRow(&reading{Sensor: r.Sensor, Value: r.Value * 10})
		}
		return nil
	}))
	eng := dirEngine(t, reg, dir)
	ctx := context.Background()
	defer eng.Close(ctx)
	_, stop := testenv.StartJob(t, eng, "Ingest")

	api, _ := eng.Connector(ctx, "api")
	url := "http://" + api.Driver().(*kishttp.Ingest).Addr() + "/readings"
	dbc, _ := eng.Connector(ctx, "db")
	db := dbc.Driver().(*kissql.DB).SQL()
	for round := 1; round <= 3; round++ {
		resp, err := http.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`[{"sensor":"a","value":%d},{"sensor":"b","value":2}]`, round)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("round %d: %d %s", round, resp.StatusCode, body)
		}
		var n int
		if err := db.QueryRow("SELECT count(*) FROM readings").Scan(&n); err != nil || n != 2*round {
			t.Fatalf("round %d: answered 200 with %d rows stored (%v)", round, n, err)
		}
	}
	resp, err := http.Post(url, "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed body: %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var total float64
	_ = db.QueryRow("SELECT sum(value) FROM readings WHERE sensor = 'a'").Scan(&total)
	if total != 60 {
		t.Fatalf("sum of scaled values: %v", total)
	}
}

func TestJobCapabilityErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := map[string]string{
		"func.yml": "kistype: func\nfname: F\nfmode: Calculate\ncalc:\n  x: 1\n",
		"conns.yml": "kistype: conn\ncname: mem\ntype: memory\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n---\n" +
			"kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n",
	}
	tests := []struct {
		stream string
		want   string
	}{
		{"  source: mem\n", `connector type memory cannot be a source`},
		{"  source: in\n  sink: mem\n", `connector type memory cannot be a sink`},
		{"  source: in\n  sink: out\n  delivery: exactly-once\n", `sink "out" (type file) is not transactional`},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		files := map[string]string{"flow.yml": "kistype: flow\nstatus: 1\nflow_name: S\nflows:\n  - fname: F\nstream:\n" + tt.stream, "in.jsonl": "{}\n"}
		for k, v := range base {
			files[k] = v
		}
		writeFiles(t, dir, files)
		set, err := config.Import(dir)
		if err != nil {
			t.Fatal(err)
		}
		eng, err := kisflow.NewEngine(streamRegistry(t), set)
		if err != nil {
			t.Fatal(err)
		}
		_, err = eng.Job(ctx, "S", kisflow.WithStateDir(filepath.Join(dir, "state")))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("stream %q: got %v, want %q", tt.stream, err, tt.want)
		}
		_ = eng.Close(ctx)
	}
}

// A prepared job that never runs gives its source back on Close: here the
// HTTP source's listening socket, which a second job can then take.
func TestJobCloseReleasesAPreparedJobsSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n  - fname: Keep\nstream:\n  source: api\n  sink: out\n",
		"func.yml":  "kistype: func\nfname: Keep\nfmode: Verify\nfilter: \"true\"\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: " + addr + "\n---\nkistype: conn\ncname: out\ntype: discard\n",
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
	opts := kisflow.WithStateDir(t.TempDir())
	job, err := eng.Job(ctx, "Ingest", opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := job.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := job.Close(ctx); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if err := job.Run(ctx); !errors.Is(err, kisflow.ErrJobUsed) {
		t.Fatalf("Run after Close: %v, want ErrJobUsed", err)
	}
	again, err := eng.Job(ctx, "Ingest", opts)
	if err != nil {
		t.Fatalf("the closed job still holds its source (%s): %v", addr, err)
	}
	if err := again.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestJobSourceBatchSize: a flow that sets no batch_size takes its source
// type's (driver.Spec.BatchSize, 5000 for the CDC sources), and one that
// sets it keeps its own.
func TestJobSourceBatchSize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := streamRegistry(t)
	big := *file.FileSpec
	big.Type, big.BatchSize = "bigfile", 7
	if err := reg.RegisterConnector(&big, file.NewFile); err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for i := range 21 {
		fmt.Fprintf(&lines, "{\"i\": %d}\n", i)
	}
	for _, tt := range []struct {
		typ, batch string
		want       int64
	}{{"bigfile", "", 3}, {"bigfile", "  batch_size: 3\n", 7}, {"file", "", 1}} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: S\nflows:\n  - fname: F\nstream:\n  source: in\n  sink: out\n  linger: 1s\n" + tt.batch,
			"func.yml":  "kistype: func\nfname: F\nfmode: Calculate\ncalc:\n  x: 1\n",
			"conns.yml": "kistype: conn\ncname: in\ntype: " + tt.typ + "\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: out\ntype: discard\n",
			"in.jsonl":  lines.String(),
		})
		eng := dirEngine(t, reg, dir)
		job, err := eng.Job(ctx, "S", kisflow.WithStateDir(filepath.Join(dir, "state")))
		if err != nil {
			t.Fatal(err)
		}
		if err := job.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if s := job.Stats(); s.Committed != 21 || s.Batches != tt.want {
			t.Errorf("type %s, %q: %d rows in %d batches, want 21 in %d", tt.typ, tt.batch, s.Committed, s.Batches, tt.want)
		}
		_ = eng.Close(ctx)
	}
}
