package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInfiniteValueIsABadRow: a calc dividing by zero yields +Inf, which
// JSON cannot encode; the file sink refuses that row alone, which is
// dead-lettered with the reason, and the run ends with the other rows
// written instead of retrying the batch forever.
func TestInfiniteValueIsABadRow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Div\nstream: {source: in, sink: out, batch_size: 10}\n",
		"funcs.yml": "kistype: func\nfname: Div\nfmode: Calculate\ncalc:\n  y: 10 / (id % 5)\n",
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams: {path: in.jsonl}\n---\nkistype: conn\ncname: out\ntype: file\nparams: {path: out.jsonl}\n",
	})
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 10)
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := run(t, "run", dir)
		done <- result{code, stdout, stderr}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the run did not end: the sink retries a row JSON cannot encode")
	}
	got := countIDs(t, filepath.Join(dir, "out.jsonl"))
	if len(got) != 8 || got[5] != 0 || got[10] != 0 {
		t.Fatalf("written ids %v, want 1..10 but 5 and 10 (exit %d)\n%s%s", got, r.code, r.stdout, r.stderr)
	}
	dead, err := os.ReadFile(filepath.Join(dir, ".kisflow", "dead-letter", "F.jsonl"))
	if err != nil {
		t.Fatalf("no dead letters: %v (exit %d)\n%s%s", err, r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(dead)), "\n")
	if len(lines) != 2 || !strings.Contains(string(dead), "unsupported value") || !strings.Contains(string(dead), "sink out") || !strings.Contains(string(dead), `"payload":{"id":5,"y":"+Inf"}`) {
		t.Fatalf("dead letters, want ids 5 and 10 with the encoder's reason:\n%s", dead)
	}
}
