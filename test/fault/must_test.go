package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mustDir is a file -> file flow whose first function declares
// source.must [id, status, qty], over n rows: every 10th lacks status,
// every 10th plus 5 has it null, every 7th lacks qty. It returns the
// folder and, by id, the fields each bad row lacks.
func mustDir(t *testing.T, n int, calc string) (string, map[int64]string) {
	t.Helper()
	bad := map[int64]string{}
	rows := IDLines(n, func(i int) string {
		var missing []string
		status := `,"status":"paid"`
		switch i % 10 {
		case 0:
			status = ""
			missing = append(missing, `"status"`)
		case 5:
			status = `,"status":null`
			missing = append(missing, `"status"`)
		}
		qty := fmt.Sprintf(`,"qty":%d`, i%4)
		if i%7 == 0 {
			qty = ""
			missing = append(missing, `"qty"`)
		}
		if len(missing) > 0 {
			bad[int64(i)] = strings.Join(missing, ", ")
		}
		return fmt.Sprintf(`{"id":%d%s%s}`, i, status, qty)
	})
	dir := Dir(t, map[string]string{
		"in.jsonl":  rows,
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ids\nflows:\n  - fname: Double\nstream:\n  source: in\n  sink: out\n  batch_size: 100\n",
		"funcs.yml": "kistype: func\nfname: Double\nfmode: Calculate\nsource:\n  name: orders\n  must: [id, status, qty]\ncalc:\n  twice: " + calc + "\nkeep: [id, twice]\n",
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	return dir, bad
}

// A row lacking a field of the first function's source.must (absent, or
// null) is dead-lettered before that function, once, with the fields
// named; every other row is written.
func TestSourceMustDeadLettersRowsLackingAField(t *testing.T) {
	t.Parallel()
	const n = 2000
	dir, bad := mustDir(t, n, "qty * 2")
	if lint := Run(t, dir, time.Minute, "lint", dir); lint.Code != 0 {
		t.Fatalf("lint: exit %d\n%s%s", lint.Code, lint.Stdout, lint.Stderr)
	}
	res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if want := fmt.Sprintf(", %d dead-lettered", len(bad)); !strings.Contains(res.Stdout+res.Stderr, want) {
		t.Errorf("the summary does not say %q:\n%s%s", want, res.Stdout, res.Stderr)
	}
	out := map[int64]int{}
	for _, row := range JSONLines(t, filepath.Join(dir, "out.jsonl")) {
		id, _ := row["id"].(float64)
		if twice, _ := row["twice"].(float64); twice != float64(int(id)%4*2) {
			t.Errorf("row %v: twice is not qty * 2", row)
		}
		out[int64(id)]++
	}
	for id := range bad {
		if out[id] > 0 {
			t.Errorf("id %d lacks %s but was written", id, bad[id])
		}
		out[id] = 1 // accounted for by its dead letter, checked below
	}
	if problems := Check(out, n, true); len(problems) > 0 {
		t.Fatalf("sink: %v", problems)
	}
	dead := JSONLines(t, filepath.Join(dir, "state", "dead-letter", "Ids.jsonl"))
	if len(dead) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(bad))
	}
	seen := map[int64]bool{}
	for _, dl := range dead {
		payload, _ := dl["payload"].(map[string]any)
		id, _ := payload["id"].(float64)
		field := "field"
		if strings.Contains(bad[int64(id)], ",") {
			field = "fields"
		}
		want := fmt.Sprintf("missing required %s %s (source.must)", field, bad[int64(id)])
		if seen[int64(id)] || dl["func"] != "Double" || dl["attempts"] != float64(1) || !strings.Contains(fmt.Sprint(dl["error"]), want) {
			t.Errorf("dead letter %v, want one for id %d naming %q", dl, int64(id), want)
		}
		seen[int64(id)] = true
	}
}

// With source.must, an expression reading a field outside it is a lint
// error at its line, naming the field it resembles; run refuses it too.
func TestSourceMustMakesAMisspeltFieldALintError(t *testing.T) {
	t.Parallel()
	dir, _ := mustDir(t, 10, `'staus == "paid" ? qty * 2 : 0'`)
	want := `funcs.yml:8: function "Double": calc twice: unknown field "staus" (did you mean status?); rows in flow "Ids" carry only id, qty, status (source.must and earlier calcs)`
	lint := Run(t, dir, time.Minute, "lint", dir)
	if lint.Code != 1 || !strings.Contains(lint.Stdout, want) {
		t.Errorf("lint: exit %d, want 1 with %q\n%s%s", lint.Code, want, lint.Stdout, lint.Stderr)
	}
	run := Run(t, dir, time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if run.Code != 2 || !strings.Contains(run.Stderr, want) {
		t.Errorf("run: exit %d, want 2 with %q\n%s%s", run.Code, want, run.Stdout, run.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
		t.Error("run wrote the sink despite the error")
	}
}
