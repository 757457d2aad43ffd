package http

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// deadLetters collects what the runtime dead-letters.
type deadLetters struct {
	mu   sync.Mutex
	rows []*stream.DeadLetter
}

func (d *deadLetters) Write(_ context.Context, rows []any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range rows {
		d.rows = append(d.rows, r.(*stream.DeadLetter))
	}
	return nil
}

func (d *deadLetters) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.rows)
}

// TestJobAnswersWithDeadLetters runs a YAML flow behind the source: a
// request whose row fails the flow is answered 422 naming that row, once the
// others are in the sink and it is in the dead letters; a clean request is
// answered 200 once its rows are in the sink.
func TestJobAnswersWithDeadLetters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	reg := kisflow.NewRegistry()
	for _, err := range []error{Install(reg), file.Install(reg)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n  - fname: Scale\n" +
			"stream:\n  source: api\n  sink: out\n  linger: 1ms\n  retry_times: 0\n",
		"func.yml": "kistype: func\nfname: Scale\nfmode: Calculate\ncalc:\n  scaled: value * 10\nkeep: [id, scaled]\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\n---\n" +
			"kistype: conn\ncname: out\ntype: file\nparams:\n  path: " + out + "\n",
	})
	dead := &deadLetters{}
	ctx, cancel := context.WithCancel(context.Background())
	job, err := eng.Job(ctx, "Ingest", kisflow.WithStateDir(dir), kisflow.WithDeadLetterSink(dead))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("job: %v", err)
		}
	}()
	api, err := eng.Connector(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + api.Driver().(*Ingest).Addr() + "/ingest"

	tests := []struct {
		body     string
		code     int
		want     string
		inSink   []int // ids in the sink when answered
		deadRows int   // dead letters when answered
	}{
		{"{\"id\":1,\"value\":1}\n{\"id\":2,\"value\":\"x\"}\n{\"id\":3,\"value\":3}\n", 422,
			`"accepted":2,"dead_lettered":1,"errors":[{"row":1,"func":"Scale"`, []int{1, 3}, 1},
		{"{\"id\":4,\"value\":4}\n{\"id\":5,\"value\":5}\n", 200, `{"accepted":2}`, []int{1, 3, 4, 5}, 1},
	}
	for _, tt := range tests {
		r := <-post(url, "application/x-ndjson", strings.NewReader(tt.body))
		if r.code != tt.code || !strings.Contains(r.body, tt.want) {
			t.Fatalf("%q: got %d %s, want %d %s", tt.body, r.code, r.body, tt.code, tt.want)
		}
		if got := sinkIDs(t, out); !slices.Equal(got, tt.inSink) {
			t.Errorf("%q: answered with ids %v in the sink, want %v", tt.body, got, tt.inSink)
		}
		if n := dead.len(); n != tt.deadRows {
			t.Errorf("%q: answered with %d dead letters, want %d", tt.body, n, tt.deadRows)
		}
	}
}

func sinkIDs(t *testing.T, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for line := range bytes.Lines(data) {
		var row struct{ ID int }
		if err := json.Unmarshal(line, &row); err != nil {
			t.Fatalf("sink line %q: %v", line, err)
		}
		ids = append(ids, row.ID)
	}
	slices.Sort(ids)
	return ids
}
