package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
)

// A scaffolded project builds, passes its own tests and CI, and runs its
// flow at once.
func TestNewProjectBuildsTestsAndRuns(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	dir := filepath.Join(t.TempDir(), "shop")
	var out, errb bytes.Buffer
	if code := Main(kisflow.NewRegistry(), []string{"new", dir}, &out, &errb); code != ExitOK {
		t.Fatalf("kisflow new: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, f := range []string{"main.go", "enrich.go", "enrich_test.go", "conf/flow.yml", "README.md", ".ci/run", ".gitignore", "go.sum"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	// Each step of its CI is bounded, the tests of the flows too.
	if b, err := os.ReadFile(filepath.Join(dir, ".ci", "run")); err != nil || !strings.Contains(string(b), "go test -timeout ") || !strings.Contains(string(b), "go run . test conf --timeout ") {
		t.Errorf("the project's .ci/run does not bound go test and kisflow test with a timeout (%v):\n%s", err, b)
	}
	ci := exec.Command("bash", ".ci/run")
	ci.Dir = dir
	b, err := ci.CombinedOutput()
	if err != nil {
		t.Fatalf("the project's .ci/run: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), `{"id":1,"amount":100,"tax":20,"total":120}`) || !strings.Contains(string(b), "2 written") {
		t.Fatalf("the project's flow did not write the enriched orders:\n%s", b)
	}
	// Its CI ran `go run . test conf`: the scaffold's tests of the flow
	// and of its Go function pass through the project's own binary.
	if !strings.Contains(string(b), "ok: 2 test(s) passed") {
		t.Fatalf("the project's CI did not pass its kisflow tests:\n%s", b)
	}
	// The CI never hangs on an unbounded flow: with the source followed
	// (it would wait for more lines for ever), .ci/run still ends, having
	// read what the file held when the run began.
	conns := filepath.Join(dir, "conf", "conns.yml")
	orig, err := os.ReadFile(conns)
	if err != nil {
		t.Fatal(err)
	}
	followed := strings.Replace(string(orig), "path: ../data/orders.jsonl", "path: ../data/orders.jsonl\n  follow: \"true\"\n  poll: 50ms", 1)
	if followed == string(orig) {
		t.Fatalf("conf/conns.yml has no file source to follow:\n%s", orig)
	}
	if err := os.WriteFile(conns, []byte(followed), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ci = exec.CommandContext(ctx, "bash", ".ci/run")
	ci.Dir = dir
	b, err = ci.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the project's .ci/run hung on a followed source:\n%s", b)
	}
	if err != nil || !strings.Contains(string(b), "2 written") {
		t.Fatalf("the project's .ci/run with a followed source: %v\n%s", err, b)
	}
	if err := os.WriteFile(conns, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// A failing test of the Go function, through the project's binary:
	// exit 1 and a diff naming the field.
	wrong := "kistype: test\nname: wrong tax\nfunc: Enrich\nparams: {tax_rate: \"0.3\"}\ninput: [{id: 9, amount: 10}]\nexpect:\n  rows: [{id: 9, amount: 10, tax: 2, total: 12}]\n"
	if err := os.WriteFile(filepath.Join(dir, "conf", "wrong_test.yml"), []byte(wrong), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", "shop-bin", ".")
	build.Dir = dir
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	run := exec.Command("./shop-bin", "test", "conf")
	run.Dir = dir
	b, err = run.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitProblem {
		t.Fatalf("the project's binary, test conf with a failing test: %v, want exit 1\n%s", err, b)
	}
	for _, want := range []string{`conf/wrong_test.yml:1 "wrong tax" (func Enrich)`, "rows[0]: field tax: want 2, got 3", "rows[0]: field total: want 12, got 13", "1 of 3 test(s) failed"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the project's binary, test conf: output lacks %q:\n%s", want, b)
		}
	}

	// The stock binary cannot run the Go function: it says which binary can.
	out.Reset()
	errb.Reset()
	if code := Main(kisflow.NewRegistry(), []string{"test", filepath.Join(dir, "conf")}, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), `function "Enrich" (fmode Calculate) has no body`) || !strings.Contains(errb.String(), "tested through the project's own binary, which has this command too: go run . test ") {
		t.Errorf("kisflow test on the project without its Go functions: exit %d, want 2 naming its binary\n%s%s", code, out.String(), errb.String())
	}

	if code := Main(kisflow.NewRegistry(), []string{"new", dir}, &out, &errb); code != ExitUsage {
		t.Errorf("new over an existing folder: exit %d, want %d", code, ExitUsage)
	}
	if code := Main(kisflow.NewRegistry(), []string{"new", filepath.Join(t.TempDir(), "9lives")}, &out, &errb); code != ExitUsage {
		t.Errorf("bad project name: exit %d, want %d", code, ExitUsage)
	}
}

// Outside a kisflow checkout, a development build cannot require itself
// from the module proxy: new refuses before writing anything and says
// exactly what to do.
func TestNewOutsideCheckoutSaysWhatToDo(t *testing.T) {
	t.Chdir(t.TempDir())
	var out, errb bytes.Buffer
	code := Main(kisflow.NewRegistry(), []string{"new", "shop"}, &out, &errb)
	if code != ExitUsage {
		t.Fatalf("kisflow new outside a checkout (a devel build): exit %d, want %d\n%s%s", code, ExitUsage, out.String(), errb.String())
	}
	for _, want := range []string{"development build", "kisflow new shop --replace DIR", "git clone https://github.com/kisflow-go/kisflow", "go install github.com/kisflow-go/kisflow/cmd/kisflow@latest"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("the message lacks %q:\n%s", want, errb.String())
		}
	}
	if _, err := os.Stat("shop"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused new wrote shop: %v", err)
	}
}
