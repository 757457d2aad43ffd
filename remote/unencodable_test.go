package remote_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUnencodableOutputRowIsARowError: a provider's output row that JSON
// cannot hold (`1 / (amount - 7)` is +Inf for amount 7) is the call's row
// error, as a local sink refuses that row alone: it is dead-lettered at
// once (one attempt), the other rows of its batch are written, and the
// call is not retried, failed over nor bisected (it was: the whole batch
// failed as the provider's, 3 retries across providers, then split).
func TestUnencodableOutputRowIsARowError(t *testing.T) {
	t.Parallel()
	pdir := writeFiles(t, map[string]string{"funcs.yml": "kistype: func\nfname: Price\nfmode: Calculate\ncalc:\n  price: 1 / (amount - 7)\n"})
	_, a := serving(t, pdir, "--registry", "none", "--log-level", "info")
	_, b := serving(t, pdir, "--registry", "none", "--log-level", "info")
	var in bytes.Buffer
	const total = 20
	for i := range total {
		fmt.Fprintf(&in, "{\"id\":%d,\"amount\":%d}\n", i, i)
	}
	dir := writeFiles(t, map[string]string{
		"in.jsonl": in.String(),
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\n" + fileSink +
			"---\nkistype: conn\ncname: pricing\ntype: remote\naddrs: " + a + "," + b + "\nparams:\n  registry: static\n  service: prov\n  retries: 2\n",
		"flow.yml": remotePrice + "---\n" + ordersFlow + "stream:\n  source: in\n  sink: out\n  batch_size: 100\n"})
	run := start(t, "run", dir, "--progress", "never", "--log-level", "info")
	if code := run.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("run exited %d: %s", code, run.output())
	}
	out, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if n := bytes.Count(out, []byte("\n")); n != total-1 {
		t.Fatalf("%d rows written, want %d: %s\n%s", n, total-1, out, run.output())
	}
	dead, _ := os.ReadFile(filepath.Join(dir, ".kisflow", "dead-letter", "Orders.jsonl"))
	type letter struct {
		Error    string
		Attempts int
		Payload  struct{ ID, Amount int }
	}
	var letters []letter
	for _, l := range bytes.Split(bytes.TrimSpace(dead), []byte("\n")) {
		var dl letter
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Fatalf("dead letters %q: %v\n%s", dead, err, run.output())
		}
		letters = append(letters, dl)
	}
	if len(letters) != 1 || letters[0].Payload.Amount != 7 || letters[0].Attempts != 1 || !strings.Contains(letters[0].Error, "+Inf") {
		t.Fatalf("dead letters %s, want the row of amount 7 alone, after one attempt, for its +Inf\n%s", dead, run.output())
	}
	// What a failed call logs: its failover, retries, a split batch,
	// a breaker.
	failed := regexp.MustCompile(`failed over|retries=[1-9]|, [1-9][0-9]* retries|split|breaker`)
	for _, l := range strings.Split(run.output(), "\n") {
		if failed.MatchString(l) {
			t.Errorf("the call was not taken as a row error: %s", l)
		}
	}
}
