package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
)

// yamlFuncDir writes a config folder whose flow streams in.jsonl through
// the function of funcs.yml (its fmode on line 3) and returns it. conns
// holds more connectors.
func yamlFuncDir(t *testing.T, stream bool, funcs, conns string) string {
	t.Helper()
	dir := t.TempDir()
	flow := "kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Enrich\n"
	if stream {
		flow += "stream:\n  source: in\n"
	}
	files := map[string]string{
		"flow.yml":  flow,
		"funcs.yml": funcs,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\n" + conns,
		"in.jsonl":  `{"user_id":1}` + "\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const sqliteUsers = "kistype: conn\ncname: users\ntype: sqlite\nparams:\n  path: users.db\n"

func TestFunctionWithoutBodyIsALintError(t *testing.T) {
	t.Parallel()
	load := func(params string) string {
		return "kistype: func\nfname: Enrich\nfmode: Load\noption:\n  cname: users\n  default_params:\n" + params
	}
	tests := []struct {
		name, funcs, conns, want string
	}{
		{"sql Load without load_query", load("    x: y\n"), sqliteUsers,
			`funcs.yml:3: function "Enrich" (fmode Load) has no body: give it a load_query (a param of the function or of connector "users"), such as SELECT id AS user_id, name FROM users WHERE id IN (:user_id), or register a Go function named "Enrich" in your binary (kisflow.Registry.Register) (flow "Orders" runs it)`},
		{"Load on a connector type without YAML load", "kistype: func\nfname: Enrich\nfmode: Load\noption:\n  cname: in\n", "",
			`funcs.yml:3: function "Enrich" (fmode Load) has no body: connector "in" (type file) has no YAML load`},
		{"Calculate without calc", "kistype: func\nfname: Enrich\nfmode: Calculate\n", "",
			`funcs.yml:3: function "Enrich" (fmode Calculate) has no body: give it a calc in YAML`},
		{"Verify without filter", "kistype: func\nfname: Enrich\nfmode: Verify\n", "",
			`funcs.yml:3: function "Enrich" (fmode Verify) has no body: give it a filter in YAML`},
		{"Expand", "kistype: func\nfname: Enrich\nfmode: Expand\n", "",
			`function "Enrich" (fmode Expand) has no body: an Expand function has no YAML form, or register a Go function named "Enrich"`},
		{"load_query with two keys", load("    load_query: SELECT a AS x, b FROM t WHERE a IN (:x) AND b = :y\n"), sqliteUsers,
			`a YAML load takes one key, written IN (:x)`},
		{"load_query without IN", load("    load_query: SELECT id AS user_id, name FROM users WHERE id = :user_id\n"), sqliteUsers,
			`write the placeholder as IN (:user_id)`},
		{"on_missing typo", load("    load_query: SELECT id AS user_id FROM users WHERE id IN (:user_id)\n    on_missing: skip\n"), sqliteUsers,
			`funcs.yml:8: function "Enrich" (fmode Load): param on_missing: "skip" is not one of pass, drop, dead_letter`},
		{"on_missing near a value", load("    load_query: SELECT id AS user_id FROM users WHERE id IN (:user_id)\n    on_missing: dorp\n"), sqliteUsers,
			`funcs.yml:8: function "Enrich" (fmode Load): param on_missing: "dorp" is not one of pass, drop, dead_letter (did you mean drop?)`},
		{"load_query of the connector without IN", load("    x: y\n"), sqliteUsers + "  load_query: SELECT id AS user_id FROM users WHERE id = :user_id\n",
			`conns.yml:12: function "Enrich" (fmode Load): param load_query: "SELECT id AS user_id FROM users WHERE id = :user_id": write the placeholder as IN (:user_id)`},
		{"cache_ttl typo", load("    load_query: SELECT id AS user_id FROM users WHERE id IN (:user_id)\n    cache_ttl: 30\n"), sqliteUsers,
			`funcs.yml:8: function "Enrich" (fmode Load): param cache_ttl: "30" is not a duration (want one such as 30s)`},
		{"redis load_mode typo", load("    load_mode: hsh\n"), "kistype: conn\ncname: users\ntype: redis\naddrs: 127.0.0.1:1\nkey: user:{user_id}\n",
			`funcs.yml:7: function "Enrich" (fmode Load): param load_mode: "hsh" is not one of hash, string (did you mean hash?)`},
		{"redis Load on a list", load("    x: y\n"), "kistype: conn\ncname: users\ntype: redis\naddrs: 127.0.0.1:1\nkey: user:{user_id}\nparams:\n  mode: list\n",
			`give it load_mode hash or string (connector "users" has mode list, which a YAML load cannot read)`},
		{"redis Load with a fixed key", load("    load_key: users\n"), "kistype: conn\ncname: users\ntype: redis\naddrs: 127.0.0.1:1\nkey: user:{user_id}\n",
			`give it a key template with a {field}`},
		{"Save through a connector that cannot write", "kistype: func\nfname: Enrich\nfmode: Save\noption:\n  cname: gen\n", "kistype: conn\ncname: gen\ntype: generator\n",
			`function "Enrich" (fmode Save) has no body: connector "gen" (type generator) cannot write rows`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := yamlFuncDir(t, true, tt.funcs, tt.conns)
			code, out, stderr := run(t, "lint", dir)
			if code != ExitProblem || !strings.Contains(out, tt.want) {
				t.Fatalf("lint: exit %d, want %d and %q in\n%s%s", code, ExitProblem, tt.want, out, stderr)
			}
			// kisflow run refuses it with the same words, before anything runs.
			code, out, stderr = run(t, "run", dir, "--state", filepath.Join(dir, ".state"))
			if code != ExitUsage || !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "not registered") {
				t.Fatalf("run: exit %d, want %d and %q in\n%s%s", code, ExitUsage, tt.want, out, stderr)
			}
		})
	}
}

func TestFunctionWithABody(t *testing.T) {
	t.Parallel()
	noBody := "kistype: func\nfname: Enrich\nfmode: Calculate\n"
	tests := []struct {
		name   string
		stream bool
		funcs  string
		conns  string
		goBody bool
	}{
		// As in KisFlow, a flow run from Go code only (no stream block)
		// gets its bodies from that code: lint cannot know them.
		{"no stream block", false, noBody, "", false},
		{"a Go body", true, noBody, "", true},
		{"a YAML Load", true, "kistype: func\nfname: Enrich\nfmode: Load\noption:\n  cname: users\n", sqliteUsers +
			"  load_query: SELECT id AS user_id FROM users WHERE id::text IN (:user_id) AND name <> ':x'\n", false},
		{"a YAML Save", true, "kistype: func\nfname: Enrich\nfmode: Save\noption:\n  cname: users\n", sqliteUsers, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := kisflow.NewRegistry()
			if err := all.Install(reg); err != nil {
				t.Fatal(err)
			}
			if tt.goBody {
				reg.MustRegister("Enrich", func(context.Context, kisflow.Flow) error { return nil })
			}
			var out, errb bytes.Buffer
			if code := Main(reg, []string{"lint", yamlFuncDir(t, tt.stream, tt.funcs, tt.conns)}, &out, &errb); code != ExitOK {
				t.Fatalf("lint: exit %d\n%s%s", code, out.String(), errb.String())
			}
		})
	}
}

// TestYAMLLoadParamTypo warns of a param nothing reads, at its line; a
// param of one of the function's filters is read.
func TestYAMLLoadParamTypo(t *testing.T) {
	t.Parallel()
	funcs := "kistype: func\nfname: Enrich\nfmode: Load\noption:\n  cname: users\n  filters: [timeout]\n  default_params:\n" +
		"    load_query: SELECT id AS user_id FROM users WHERE id IN (:user_id)\n    cache_tll: 30s\n    timeout_duration: 2s\n"
	code, out, stderr := run(t, "lint", yamlFuncDir(t, true, funcs, sqliteUsers))
	want := `funcs.yml:9: warning: function "Enrich": param "cache_tll" is not read by its YAML Load (it reads load_query, on_missing, cache_ttl, cache_size, body)`
	if code != ExitOK || !strings.Contains(out, want) || strings.Count(out, "\n") != 1 {
		t.Fatalf("exit %d, want %d and only %q in\n%s%s", code, ExitOK, want, out, stderr)
	}
}

// TestWindowFunctionHasABody lints a stream flow whose function is only a
// window block: it has a body; a bad block is reported at its field and
// not as a function without a body.
func TestWindowFunctionHasABody(t *testing.T) {
	t.Parallel()
	win := "kistype: func\nfname: Enrich\nfmode: Calculate\nwindow:\n  type: tumbling\n  size: %s\n  group_by: [user_id]\n  aggregate: {orders: count()}\n"
	code, out, stderr := run(t, "lint", yamlFuncDir(t, true, strings.Replace(win, "%s", "1m", 1), ""))
	if code != ExitOK || strings.Contains(out, "has no body") {
		t.Fatalf("lint of a window function: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = run(t, "lint", yamlFuncDir(t, true, strings.Replace(win, "%s", "1 minute", 1), ""))
	if want := `funcs.yml:6: function "Enrich": size: bad duration "1 minute"`; code != ExitProblem || !strings.Contains(out, want) || strings.Contains(out, "has no body") {
		t.Fatalf("lint of a bad window block: exit %d, want %q and no other error in\n%s%s", code, want, out, stderr)
	}
}

// TestWindowBeforeAFallibleFunctionIsALintWarning: a window followed by
// a Save would count the rows of a retried batch twice; lint says so at
// the window block, and not of a window followed by a calc.
func TestWindowBeforeAFallibleFunctionIsALintWarning(t *testing.T) {
	t.Parallel()
	funcs := "kistype: func\nfname: Enrich\nfmode: Calculate\nwindow: {type: tumbling, size: 1m, aggregate: {n: count()}}\n---\n" +
		"kistype: func\nfname: Next\nfmode: %s\n"
	write := func(next string) string {
		dir := yamlFuncDir(t, true, strings.Replace(funcs, "%s", next, 1), "kistype: conn\ncname: db\ntype: sqlite\nkey: t\nparams:\n  path: t.db\n  create: \"true\"\n")
		flow := "kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Enrich\n  - fname: Next\nstream:\n  source: in\n"
		if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	want := `funcs.yml:4: warning: function "Enrich": flow "Orders" runs "Next" after this window: a batch it fails is retried from the start and the window counts its rows again`
	_, out, stderr := run(t, "lint", write("Save\noption:\n  cname: db"))
	if !strings.Contains(out, want) {
		t.Fatalf("lint: want %q in\n%s%s", want, out, stderr)
	}
	code, out, stderr := run(t, "lint", write("Calculate\ncalc: {m: n * 2}"))
	if code != ExitOK || strings.Contains(out, "after this window") {
		t.Fatalf("lint of a window before a calc: exit %d\n%s%s", code, out, stderr)
	}
}

// TestWindowWithWorkersNeedsAStreamKeyInGroupBy: with workers > 1 each
// worker keeps the windows of the rows it is sent, so lint makes it an
// error, at the line to change and saying what to set, when the flow's
// stream.key is missing or not a group_by field; not with it, nor with
// one worker.
func TestWindowWithWorkersNeedsAStreamKeyInGroupBy(t *testing.T) {
	t.Parallel()
	funcs := "kistype: func\nfname: Enrich\nfmode: Calculate\nwindow: {type: tumbling, size: 1m, time_field: ts, group_by: [user_id, shop], aggregate: {n: count()}}\n"
	write := func(workers int, key string) string {
		dir := yamlFuncDir(t, true, funcs, "")
		flow := fmt.Sprintf("kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Enrich\nstream:\n  source: in\n  workers: %d\n", workers)
		if key != "" {
			flow += "  key: " + key + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, "flow.yml"), []byte(flow), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		key, want string
	}{
		{"", `flow.yml:8: flow "Orders" runs 4 workers and window function "Enrich" groups by [user_id, shop], but the flow sets no stream.key: each worker keeps the windows of the rows it is sent, so every row of a group must go to one worker; set stream.key: user_id (or another of them), or use workers: 1`},
		{"region", `flow.yml:9: flow "Orders" runs 4 workers and window function "Enrich" groups by [user_id, shop], but the flow routes rows by stream.key "region", which is not one of them`},
	} {
		code, out, stderr := run(t, "lint", write(4, tc.key))
		if code == ExitOK || !strings.Contains(out+stderr, tc.want) {
			t.Fatalf("lint with key %q: exit %d, want %q in\n%s%s", tc.key, code, tc.want, out, stderr)
		}
	}
	for _, ok := range []struct {
		workers int
		key     string
	}{{4, "shop"}, {1, ""}, {1, "region"}} {
		code, out, stderr := run(t, "lint", write(ok.workers, ok.key))
		if code != ExitOK || strings.Contains(out, "workers") {
			t.Fatalf("lint with %d workers, key %q: exit %d\n%s%s", ok.workers, ok.key, code, out, stderr)
		}
	}
}
