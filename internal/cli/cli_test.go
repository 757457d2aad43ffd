package cli

import (
	"bytes"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main(reg, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		dir      string
		code     int
		contains string
	}{
		{"valid folder", "../../examples/quickstart/conf", ExitOK, ""},
		{"every error", "../../config/testdata/bad", ExitProblem, `func-unknown-cname.yml:5: function "LoadBadConn": unknown connector "NoSuchConn"`},
		{"the original KisFlow sample files", "../../config/testdata/kisflow", ExitOK, ""},
		{"connector type unknown to this binary", "../../config/testdata/bad", ExitProblem, `connector "C2": no driver for type "carrier-pigeon"`},
		{"several mysql addrs", "testdata/badconns", ExitProblem, `conns.yml:4: connector "two-mysql": mysql connector "two-mysql": addrs names 2 servers`},
		{"a redis mode typo", "testdata/badconns", ExitProblem, `conns.yml:13: connector "typo-mode" (type redis): param mode: "hsh" is not one of hash, string, list, stream (did you mean hash?)`},
		{"a param typo", "testdata/badconns", ExitProblem, `conns.yml:22: connector "every-typo" (type redis): param claim_idel: unknown param (did you mean claim_idle?)`},
		{"a duration without unit", "testdata/badconns", ExitProblem, `conns.yml:23: connector "every-typo" (type redis): param timeout: "5" has no unit (want a duration such as 5s or 5ms)`},
		{"a boolean that is not one", "testdata/badconns", ExitProblem, `conns.yml:24: connector "every-typo" (type redis): param tls: "yes" is not a boolean (want true or false)`},
		{"a broken key template beside bad params", "testdata/badconns", ExitProblem, `conns.yml:19: connector "every-typo": redis connector "every-typo": template "user:{id": '{' without '}'`},
		{"a misspelt param on a connector only functions use: a warning", "testdata/badconns", ExitProblem,
			`conns.yml:33: warning: connector "callbacks-only" (type redis): param claim_idel: unknown param (did you mean claim_idle?); left to this connector's own callbacks`},
		// The stock binary knows no Go bodies: a connector only functions of
		// flows run from Go code use is a label until used, as in KisFlow.
		{"a bad param of a connector only functions of Go-run flows use: a warning", "testdata/funconly", ExitOK,
			`all.yml:10: warning: connector "Store" (type redis): param db: "test" is not a whole number; the connector is used only by functions of flows run from Go code, which may have a Go body`},
		{"a bad param of a connector a YAML-only Save uses (body: yaml)", "testdata/funconlyyaml", ExitProblem,
			"all.yml:9: connector \"Store\" (type redis): param db: \"test\" is not a whole number\n"},
		{"a bad param of a connector a YAML-only Load uses (load_key)", "testdata/funconlyyaml", ExitProblem,
			"all.yml:17: connector \"Lookup\" (type redis): param db: \"test\" is not a whole number\n"},
		{"a filter param typo", "testdata/badfilters", ExitProblem, `flow.yml:8: flow "Guarded": filter "retry": param tims: unknown param (did you mean times?)`},
		{"a filter duration in bare milliseconds: a warning", "testdata/badfilters", ExitProblem, `flow.yml:9: warning: flow "Guarded": filter "retry": param duration: 1500 read as 1500ms; write 1500ms`},
		{"a bad filter duration", "testdata/badfilters", ExitProblem, `flow.yml:10: flow "Guarded": filter "timeout": param duration: "soon" is not a duration (want one such as 500ms, 2s or 1h30m)`},
		{"a value the filter's factory refuses, at its param", "testdata/badfilters", ExitProblem, `flow.yml:11: flow "Guarded": filter "ratelimit": param rate: "0" is not a finite number above 0`},
		{"a filter name typo", "testdata/badfilters", ExitProblem, `flow.yml:12: flow "Guarded": filter "retyr": unknown filter (did you mean retry?)`},
		{"a filter param from the function's params", "testdata/badfilters", ExitProblem, `funcs.yml:7: function "Score": filter "breaker": param cooldown (the function's breaker_cooldown): "later" is not a duration`},
		{"a function's filter param typo", "testdata/badfilters", ExitProblem, `funcs.yml:11: function "Score": filter "breaker": param failurs: unknown param (did you mean failures?)`},
		{"a filter enum", "testdata/badfilters", ExitProblem, `funcs.yml:13: function "Score": filter "logging": param level: "loud" is not one of debug, info, warn, error`},
		{"a plugin field typo", "testdata/badfilters", ExitProblem, `global.yml:5: plugin log.main: unknown field "levl" (did you mean "level"?)`},
		{"a field typo of a connector's plugin", "testdata/badfilters", ExitProblem, `global.yml:9: plugin postgres.main: unknown field "max_conn" (did you mean "max_conns"?)`},
		{"filter durations in bare milliseconds still load", "testdata/oldfilters", ExitOK, `flow.yml:6: warning: flow "Guarded": filter "breaker": param cooldown: 30000 read as 30000ms; write 30000ms`},
		// What kisflow run would refuse, lint refuses.
		{"a filter param from a flow step's params", "testdata/lintgaps", ExitProblem, `flow.yml:7: function "F1": filter "retry": param times (flow "F" step F1's retry_times): "abc" is not a whole number`},
		{"a callback param typo does not hide a missing body", "testdata/lintgaps", ExitProblem, `flow.yml:24: function "AddUser" (fmode Load) has no body: give it a load_query`},
		{"a delivery typo", "testdata/lintgaps", ExitProblem, `flow.yml:12: flow "F": unknown delivery "exactly_once" (did you mean exactly-once?)`},
		{"a plugin type typo", "testdata/lintgaps", ExitProblem, `global.yml:8: plugin logg.main: unknown plugin type "logg" (did you mean log?)`},
		{"an unset variable of a connector run opens", "testdata/lintgaps", ExitProblem, `conns.yml:11: connector "out": params.path uses unset environment variable(s) KISFLOW_LINTGAPS_UNSET, and flow "F" uses the connector`},
		{"an unset variable of a connector nothing runs: a warning", "testdata/lintgaps", ExitProblem, `conns.yml:17: warning: connector "unused": params.path uses unset environment variable(s) KISFLOW_LINTGAPS_UNSET`},
		{"a port out of range", "testdata/lintgaps", ExitProblem, `global.yml:5: plugin metrics.main: listen "127.0.0.1:99999": port "99999": want a number from 0 to 65535`},
		{"a flow step's param typo, at the step", "testdata/lintparams", ExitProblem,
			`flow.yml:9: warning: function "BySQL": param "on_mising" is not read by its YAML Load (it reads load_query, on_missing, cache_ttl, cache_size, body) (did you mean on_missing?)`},
		{"a flow step's bad param value, at the step", "testdata/lintparams", ExitProblem,
			`flow.yml:12: function "BySQL2" (fmode Load): param on_missing: "dorp" is not one of pass, drop, dead_letter (did you mean drop?) (flow "P" runs it)`},
		{"a param a YAML Verify's filters would read, misspelt", "testdata/lintparams", ExitProblem,
			`funcs.yml:7: warning: function "Check": param "retry_tims" is read by nothing: its expression reads no params, its filters read <filter>_<param> (did you mean retry_times?)`},
		{"a filter param of a YAML Verify, misspelt", "testdata/lintparams", ExitProblem,
			`funcs.yml:8: warning: function "Check": param "timeout_duraton" is read by nothing: its expression reads no params, its filters read <filter>_<param> (did you mean timeout_duration?)`},
		{"a function's load_mode typo, at its line", "testdata/lintparams", ExitProblem,
			`funcs.yml:16: function "ByRedis" (fmode Load): param load_mode: "hsh" is not one of hash, string (did you mean hash?) (flow "P" runs it)`},
		{"missing folder", "../../no/such/dir", ExitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, stderr := run(t, "lint", tt.dir)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, stderr)
			}
			if !strings.Contains(out, tt.contains) {
				t.Fatalf("stdout lacks %q:\n%s", tt.contains, out)
			}
			if tt.code == ExitProblem && len(strings.Split(strings.TrimSpace(out), "\n")) < 1 {
				t.Fatal("no problem lines")
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, _ := run(t, "lint"); code != ExitUsage {
		t.Errorf("lint without DIR: exit %d", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != ExitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	code, out, _ := run(t, "version")
	if code != ExitOK || !strings.HasPrefix(out, "kisflow ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	// Bad input to run is exit 2, as for echo, dry-run and graph, before
	// anything starts.
	conf := "../../examples/quickstart/conf"
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", conf, "--flow", "Nope"}, `no flow "Nope" in ` + conf},
		{[]string{"run", conf, "--log-level", "loud"}, `bad --log-level "loud"`},
		{[]string{"run", conf, "--progress", "alway"}, `bad --progress "alway": want auto, always or never (did you mean always?)`},
		{[]string{"run", conf + "/flow-CalStuAvgScore.yml"}, conf + "/flow-CalStuAvgScore.yml is a file: give the folder that holds it (" + conf + ")"},
		{[]string{"lint", conf + "/flow-CalStuAvgScore.yml"}, conf + "/flow-CalStuAvgScore.yml is a file"},
	} {
		if code, _, stderr := run(t, tt.args...); code != ExitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, want %d and %q in\n%s", tt.args, code, ExitUsage, tt.want, stderr)
		}
	}
}

func TestRunOrdersExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"flow.yml", "funcs.yml", "conns.yml", "orders.jsonl.gz"} {
		data, err := os.ReadFile(filepath.Join("../../examples/orders", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Without --state, the state lives in the configuration's folder.
	state := filepath.Join(dir, ".kisflow")
	code, out, stderr := run(t, "run", dir, "--progress", "always", "--progress-interval", "5ms")
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.HasPrefix(out, "flow PaidOrders: no position: reading from the start\n") {
		t.Fatalf("the run does not say where it starts:\n%s", out)
	}
	if !strings.Contains(out, "flow PaidOrders: 100000 rows read, 100000 committed, 66682 written, 3 dead-lettered") {
		t.Fatalf("summary:\n%s", out)
	}
	if !strings.Contains(out, filepath.Join(state, "dead-letter", "PaidOrders.jsonl")) {
		t.Fatalf("summary does not say where the dead letters are:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(state, "dead-letter", "PaidOrders.jsonl")); err != nil {
		t.Fatalf("dead letters are not in DIR/.kisflow: %v", err)
	}
	if !strings.Contains(stderr, "rows/s") || !strings.Contains(stderr, "ETA") {
		t.Fatalf("no progress line on stderr:\n%s", stderr)
	}
	n, distinct := tableCount(t, filepath.Join(dir, "orders.db"), "paid_orders", "order_id")
	if n != 66682 || distinct != n {
		t.Fatalf("table holds %d rows (%d distinct)", n, distinct)
	}
	// Running again resumes after the committed position, and says that
	// there is nothing new rather than "0 rows read".
	code, out, _ = run(t, "run", dir)
	resume := regexp.MustCompile(`^flow PaidOrders: resuming at position (\S+) \(committed at (\S+)\)\n`).FindStringSubmatch(out)
	if code != ExitOK || resume == nil {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}
	if at, err := time.Parse(time.RFC3339, resume[2]); err != nil || time.Since(at) > 10*time.Minute || time.Until(at) > time.Minute {
		t.Fatalf("commit time %q: %v", resume[2], err)
	}
	if !strings.Contains(out, "flow PaidOrders: nothing new in orders-file since position "+resume[1]+"\n") || strings.Contains(out, "rows read") {
		t.Fatalf("second run:\n%s", out)
	}
	// --state still overrides the folder (the dead-letter file is opened
	// there); this exactly-once flow's position is in the sink's database.
	other := filepath.Join(t.TempDir(), "state")
	code, out, _ = run(t, "run", dir, "--state", other)
	if code != ExitOK || !strings.HasPrefix(out, "flow PaidOrders: resuming at position ") {
		t.Fatalf("run with --state: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(other, "dead-letter", "PaidOrders.jsonl")); err != nil {
		t.Fatalf("--state is not used: %v", err)
	}
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, stderr := run(t, "run", "../../examples/quickstart/conf"); code != ExitUsage || !strings.Contains(stderr, "no enabled flow has a stream block") {
		t.Errorf("folder without streams: exit %d, %s", code, stderr)
	}
	if code, _, _ := run(t, "run", "../../config/testdata/bad"); code != ExitUsage {
		t.Errorf("invalid folder: exit %d", code)
	}
}

func tableCount(t *testing.T, path, table, col string) (n, distinct int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*), count(DISTINCT "+col+") FROM "+table).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	return n, distinct
}

func TestGraph(t *testing.T) {
	t.Parallel()
	code, out, stderr := run(t, "graph", "../../examples/orders")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"flowchart LR",
		`subgraph g1["PaidOrders"]`,
		`g1_src[("source: orders-file (file)")]`,
		`g1_f1["OnlyPaid<br/>Verify"]`,
		`g1_f2["OrderTotal<br/>Calculate"]`,
		"g1_src --> g1_f1",
		"g1_f2 -->|exactly-once| g1_sink",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, "graph", "--format", "dot", "../../examples/actions/conf")
	if code != ExitOK || !strings.Contains(out, "digraph kisflow") ||
		!strings.Contains(out, `g1_f3 -> g1_c_Ledger [style=dashed, label="save"];`) ||
		!strings.Contains(out, `g1_c_Ledger [label="Ledger (memory)", shape=cylinder];`) {
		t.Fatalf("dot: exit %d\n%s", code, out)
	}
	code, out, stderr = run(t, "graph", "--format", "svg", "../../examples/orders")
	if _, err := exec.LookPath("dot"); err != nil {
		if code != ExitUsage || !strings.Contains(stderr, "needs Graphviz") {
			t.Errorf("svg without Graphviz: exit %d, %s", code, stderr)
		}
	} else if code != ExitOK || !strings.Contains(out, "<svg") {
		t.Errorf("svg: exit %d, %.200s", code, out)
	}
	if code, _, _ := run(t, "graph", "--format", "png", "../../examples/orders"); code != ExitUsage {
		t.Errorf("unknown format: exit %d", code)
	}
	if code, _, _ := run(t, "graph", "--flow", "Nope", "../../examples/orders"); code != ExitUsage {
		t.Errorf("unknown flow: exit %d", code)
	}
}

func TestListDescribesFilters(t *testing.T) {
	t.Parallel()
	code, out, stderr := run(t, "list", "filters")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"  retry      calls again after a failure, with capped exponential backoff and jitter\n",
		"  timeout    gives each call a deadline",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list filters lacks %q:\n%s", want, out)
		}
	}
	code, out, stderr = run(t, "list", "retry")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"filter retry: calls again after a failure",
		"    times (int ≥ 0)\n",
		"    duration (duration ≥ 0s) [a bare number is read as ms, with a warning]\n",
		"a function's param retry_NAME sets param NAME",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list retry lacks %q:\n%s", want, out)
		}
	}
	// metrics is a filter and a plugin type: both are named.
	if _, out, _ = run(t, "list", "metrics"); !strings.Contains(out, "filter metrics: ") || !strings.Contains(out, "plugin metrics: the admin server") {
		t.Errorf("list metrics:\n%s", out)
	}
	if code, _, stderr = run(t, "list", "retyr"); code != ExitUsage || !strings.Contains(stderr, "did you mean retry?") {
		t.Errorf("list retyr: exit %d, %s", code, stderr)
	}
}
