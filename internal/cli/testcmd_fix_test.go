package cli

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
)

// installedRegistry is a registry with every bundled connector.
func installedRegistry(t *testing.T) *kisflow.Registry {
	t.Helper()
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

// srcOut is the YAML of a file source src reading path and a sink out of
// type sink, which the configurations of these tests begin with.
func srcOut(path, sink string) string {
	return "kistype: conn\ncname: src\ntype: file\nparams: {path: " + path + "}\n---\nkistype: conn\ncname: out\ntype: " + sink + "\n---\n"
}

// oneStepFlow is the YAML of a flow named flow of the one function fname,
// reading source and writing sink.
func oneStepFlow(flow, fname, source, sink string) string {
	return "kistype: flow\nstatus: 1\nflow_name: " + flow + "\nflows: [{fname: " + fname + "}]\nstream: {source: " + source + ", sink: " + sink + "}\n"
}

// kisflowTestBounded runs `BIN test DIR args...` like kisflowTest, but
// fails the test instead of waiting when the command runs past limit.
func kisflowTestBounded(t *testing.T, bin, dir string, limit time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"test", dir}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("kisflow test %s %v still ran after %s:\n%s", dir, args, limit, out.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// A test's --timeout holds against a step that waits long past it (a rate
// limit), and a timeout that is not positive is a usage error.
func TestKisflowTestTimeoutIsEnforced(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": srcOut("in.jsonl", "stdout") + `kistype: func
fname: Slow
fmode: Calculate
calc: {y: x + 1}
option:
  filters:
    - name: ratelimit
      params: {rate: 0.01, burst: 1}
---
kistype: flow
status: 1
flow_name: SlowF
flows: [{fname: Slow}]
stream: {source: src, sink: out, batch_size: 1}
`,
		"slow_test.yml": `kistype: test
flow: SlowF
input: [{x: 1}, {x: 2}, {x: 3}]
expect:
  rows: [{x: 1, y: 2}, {x: 2, y: 3}, {x: 3, y: 4}]
`,
	})
	// The flow would take 200 s; the run ends with the timeout and a
	// short grace, not after the 30 s drain.
	code, out := kisflowTestBounded(t, bin, dir, 15*time.Second, "--timeout", "1s")
	if code != ExitProblem || !strings.Contains(out, "did not finish within 1s (--timeout)") {
		t.Fatalf("a test past its timeout: exit %d, want 1 naming the timeout\n%s", code, out)
	}
	for _, bad := range []string{"0s", "-1s"} {
		code, out := kisflowTestBounded(t, bin, dir, 15*time.Second, "--timeout", bad)
		if code != ExitUsage || !strings.Contains(out, "bad --timeout") {
			t.Fatalf("--timeout %s: exit %d, want 2 (usage)\n%s", bad, code, out)
		}
	}
}

// A Go function that ignores its context cannot hold `kisflow test`: the
// test is reported as failed once its timeout has passed and the command
// exits.
func TestKisflowTestTimeoutAbandonsAStuckFunction(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	reg := installedRegistry(t)
	reg.MustRegister("Hang", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		<-release // not ctx.Done()
		return nil
	}))
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": "kistype: func\nfname: Hang\nfmode: Calculate\n",
		"hang_test.yml": `kistype: test
name: hang
func: Hang
input: [{x: 1}]
expect: {rows: [{x: 1}]}
`,
	})
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		code := Main(reg, []string{"test", dir, "--run", "hang", "--timeout", "1s"}, &out, &out)
		done <- result{code, out.String()}
	}()
	select {
	case r := <-done:
		if r.code != ExitProblem || !strings.Contains(r.out, "did not finish within 1s (--timeout)") || !strings.Contains(r.out, "abandoned") {
			t.Fatalf("a stuck Go function: exit %d, want 1 naming the timeout\n%s", r.code, r.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kisflow test still waits for a function that ignores its context, 20 s after a 1s --timeout")
	}
}

// Integers beyond float64's 2^53 compare exactly: a test expecting the
// neighbour of the flow's order_id fails with a diff showing both, and
// 20 still equals 20.0.
func TestKisflowTestComparesLargeIntegersExactly(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	conf := srcOut("in.jsonl", "stdout") + `kistype: func
fname: OrderTotal
fmode: Calculate
calc: {total: qty * price}
---
` + oneStepFlow("Big", "OrderTotal", "src", "out")
	test := `kistype: test
flow: Big
input: ['{"order_id": 9007199254740993, "qty": 2, "price": 10}', {order_id: 9007199254740993, qty: 2, price: 10}]
expect:
  rows: [{order_id: ID, qty: 2, price: 10, total: 20.0}, {order_id: ID, qty: 2, price: 10, total: 20}]
`
	writeFiles(t, dir, map[string]string{"conf.yml": conf, "big_test.yml": strings.ReplaceAll(test, "ID", "9007199254740992")})
	code, out := kisflowTestBounded(t, bin, dir, time.Minute)
	for _, want := range []string{"rows[0]: field order_id: want 9007199254740992, got 9007199254740993", "rows[1]: field order_id: want 9007199254740992, got 9007199254740993"} {
		if code != ExitProblem || !strings.Contains(out, want) {
			t.Fatalf("a wrong large integer: exit %d, want 1 with %q\n%s", code, want, out)
		}
	}
	writeFiles(t, dir, map[string]string{"big_test.yml": strings.ReplaceAll(test, "ID", "9007199254740993")})
	if code, out := kisflowTestBounded(t, bin, dir, time.Minute); code != ExitOK {
		t.Fatalf("the right large integer: exit %d, want 0\n%s", code, out)
	}
}

// A test's params get lint's param checks: a misspelt param of a YAML Load
// is an error with the param it resembles, in a flow test and in a
// function test.
func TestKisflowTestRefusesMisspeltParamsOfYAMLFunctions(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": srcOut("in.jsonl", "stdout") + `kistype: conn
cname: cache
type: redis
addrs: 127.0.0.1:1
key: "user:{user_id}"
params: {mode: string}
---
kistype: func
fname: AddUser
fmode: Load
option:
  cname: cache
  default_params: {on_missing: drop}
---
` + oneStepFlow("RL", "AddUser", "src", "out"),
		"t_test.yml": `kistype: test
flow: RL
params: {AddUser: {on_mising: pass}}
input: [{user_id: 1}]
mocks: {cache: {records: [{user_id: 1, name: Ann}]}}
expect: {rows: [{user_id: 1, name: Ann}]}
---
kistype: test
func: AddUser


params: {cache_tl: 5s}
input: [{user_id: 1}]
mocks: {cache: {records: [{user_id: 1, name: Ann}]}}
expect: {rows: [{user_id: 1, name: Ann}]}
`,
	})
	code, out := kisflowTestBounded(t, bin, dir, time.Minute)
	for _, want := range []string{
		`t_test.yml:3: test: params: function "AddUser": param "on_mising" is not read by its YAML Load`, "(did you mean on_missing?)",
		`t_test.yml:12: test: params: function "AddUser": param "cache_tl" is not read by its YAML Load`, "(did you mean cache_ttl?)",
	} {
		if code != ExitUsage || !strings.Contains(out, want) {
			t.Fatalf("misspelt params: exit %d, want 2 with %q\n%s", code, want, out)
		}
	}
}

// A Go function's params are not declared to the registry: a test's param
// that resembles one the configuration gives the function, but is not
// one, is refused; a new param is not.
func TestKisflowTestRefusesMisspeltParamsOfGoFunctions(t *testing.T) {
	t.Parallel()
	reg := installedRegistry(t)
	reg.MustRegister("Enrich", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		return f.CommitRowBatch(rows)
	}))
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": `kistype: func
fname: Enrich
fmode: Calculate
option: {default_params: {tax_rate: "0.2"}}
---
kistype: flow
status: 1
flow_name: Orders
flows: [{fname: Enrich}]
`,
		"t_test.yml": `kistype: test
func: Enrich
params: {tax_rat: "0.5"}
input: [{id: 1}]
expect: {rows: [{id: 1}]}
---
kistype: test
flow: Orders
params: {Enrich: {tax_rat: "0.5"}}
input: [{id: 1}]
expect: {rows: [{id: 1}]}
`,
	})
	var out bytes.Buffer
	code := Main(reg, []string{"test", dir}, &out, &out)
	for _, want := range []string{`t_test.yml:3: test: params: function "Enrich" is not given param "tax_rat"`, `t_test.yml:9: test: params: function "Enrich" is not given param "tax_rat"`, "(did you mean tax_rate?)"} {
		if code != ExitUsage || !strings.Contains(out.String(), want) {
			t.Fatalf("misspelt params of a Go function: exit %d, want 2 with %q\n%s", code, want, out.String())
		}
	}
	writeFiles(t, dir, map[string]string{"t_test.yml": strings.ReplaceAll(`kistype: test
func: Enrich
params: {tax_rate: "0.5", region: eu}
input: [{id: 1}]
expect: {rows: [{id: 1}]}
`, "\t", "")})
	out.Reset()
	if code := Main(reg, []string{"test", dir}, &out, &out); code != ExitOK {
		t.Fatalf("declared and new params of a Go function: exit %d, want 0\n%s", code, out.String())
	}
}

// A string input is fed as a JSON line: for a flow whose source reads CSV
// it is refused before anything runs, saying to give the record as a map,
// rather than dead-lettered with a JSON error.
func TestKisflowTestRefusesStringInputOfACSVSource(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	conf := srcOut("in.csv", "stdout") + `kistype: func
fname: Dbl
fmode: Calculate
calc: {y: int(x) * 2}
---
` + oneStepFlow("Csv", "Dbl", "src", "out")
	writeFiles(t, dir, map[string]string{"conf.yml": conf, "t_test.yml": "kistype: test\nflow: Csv\ninput: ['1,a']\nexpect: {rows: [{x: 1, name: a, y: 2}]}\n"})
	code, out := kisflowTestBounded(t, bin, dir, time.Minute)
	if want := `input[0]: flow "Csv" reads CSV (connector "src"), but a string input is fed as a JSON line`; code != ExitUsage || !strings.Contains(out, want) {
		t.Fatalf("a string input of a CSV flow: exit %d, want 2 with %q\n%s", code, want, out)
	}
	writeFiles(t, dir, map[string]string{"t_test.yml": "kistype: test\nflow: Csv\ninput: [{x: 1, name: a}]\nexpect: {rows: [{x: 1, name: a, y: 2}]}\n"})
	if code, out := kisflowTestBounded(t, bin, dir, time.Minute); code != ExitOK {
		t.Fatalf("a map input of a CSV flow: exit %d, want 0\n%s", code, out)
	}
}

// new's help names --no-tidy's meaning (not "go mod tidy" as its value),
// and after --no-tidy its next steps begin with go mod tidy, without
// which go run fails.
func TestNewNoTidySaysToTidy(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Main(kisflow.NewRegistry(), []string{"new", "--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("new --help: exit %d\n%s", code, errb.String())
	}
	if strings.Contains(out.String(), "--no-tidy go mod tidy") || !strings.Contains(out.String(), "--no-tidy ") {
		t.Fatalf("new --help shows --no-tidy badly:\n%s", out.String())
	}
	dir := filepath.Join(t.TempDir(), "shop")
	out.Reset()
	if code := Main(kisflow.NewRegistry(), []string{"new", dir, "--no-tidy"}, &out, &errb); code != ExitOK {
		t.Fatalf("new --no-tidy: exit %d\n%s%s", code, out.String(), errb.String())
	}
	next := out.String()[strings.Index(out.String(), "next:"):]
	if tidy, run := strings.Index(next, "go mod tidy"), strings.Index(next, "go run . run conf"); tidy < 0 || tidy > run {
		t.Fatalf("new --no-tidy: the next steps do not begin with go mod tidy:\n%s", out.String())
	}
}

// A mock naming no connector is reported at its own line, not at the
// test's first.
func TestKisflowTestNamesTheLineOfABadMock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": `kistype: conn
cname: users
type: sqlite
key: users
params: {path: users.db}
---
kistype: func
fname: AddUser
fmode: Load
option:
  cname: users
  default_params: {load_query: "SELECT id AS user_id, name FROM users WHERE id IN (:user_id)"}
---
kistype: flow
status: 1
flow_name: L
flows: [{fname: AddUser}]
`,
		"t_test.yml": `kistype: test
flow: L
input: [{user_id: 1}]
mocks:
  users:
    records: [{user_id: 1, name: Ann}]
  usres:
    records: [{user_id: 1, name: Ann}]
expect: {rows: [{user_id: 1, name: Ann}]}
`,
	})
	code, out, errb := run(t, "test", dir)
	if want := `t_test.yml:7: test: mocks: no connector "usres" (did you mean users?)`; code != ExitUsage || !strings.Contains(out, want) {
		t.Fatalf("a mock of no connector: exit %d, want 2 with %q\n%s%s", code, want, out, errb)
	}
}
