package fault

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// bin is the kisflow binary under test, built once by TestMain (with the
// race detector when the tests run with it).
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests spend their time waiting for outages, takeovers and
	// processes, not computing: run many at once unless -parallel is given,
	// so that the whole suite fits in go test's default 10-minute timeout.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "16")
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if b := os.Getenv("KISFLOW_FAULT_BIN"); b != "" {
		bin = b
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kisflow-fault-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "kisflow")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/kisflow-go/kisflow/cmd/kisflow")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kisflow:", err)
		return 2
	}
	return m.Run()
}

// Dir writes files (name -> content, names may contain folders) into a new
// temporary folder and returns it: a config folder as a user writes one.
func Dir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Proc is a running kisflow process.
type Proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *buffer
	stderr *buffer
	all    *buffer
	done   chan struct{}
	err    error // set before done closes
}

// Start runs the kisflow binary with args, in dir when dir is not empty,
// with env added to the test's environment. The process is killed at the
// end of the test if it still runs; its output is logged when the test
// failed.
func Start(t testing.TB, dir string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	all := &buffer{}
	p := &Proc{t: t, cmd: cmd, stdout: &buffer{tee: all}, stderr: &buffer{tee: all}, all: all, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("kisflow %s (pid %d) output:\n%s", strings.Join(args, " "), cmd.Process.Pid, tail(p.all.String(), 8000))
		}
	})
	return p
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdout is what the process wrote to standard output so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr is what the process wrote to standard error so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Output is standard output and error so far, interleaved as written.
func (p *Proc) Output() string { return p.all.String() }

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (a no-op once it ended).
func (p *Proc) Signal(sig syscall.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for the process to end and returns its exit
// code: -1 when a signal ended it. It fails the test on timeout.
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("kisflow still running after %v; output:\n%s", timeout, tail(p.Output(), 4000))
	}
	return exitCode(p.err)
}

// WaitFor waits up to timeout until the output contains s. It fails the
// test when the process ends first or the time runs out.
func (p *Proc) WaitFor(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if p.Exited() {
			if strings.Contains(p.Output(), s) {
				return
			}
			p.t.Fatalf("kisflow ended (%v) before printing %q; output:\n%s", p.err, s, tail(p.Output(), 4000))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("kisflow did not print %q within %v; output:\n%s", s, timeout, tail(p.Output(), 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Result is how a kisflow run ended.
type Result struct {
	Code           int // -1 when ended by a signal
	Stdout, Stderr string
}

// Run runs kisflow with args in dir until it ends; after timeout it is
// killed and the test fails.
func Run(t testing.TB, dir string, timeout time.Duration, args ...string) Result {
	t.Helper()
	p := Start(t, dir, nil, args...)
	code := p.Wait(timeout)
	return Result{Code: code, Stdout: p.Stdout(), Stderr: p.Stderr()}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1
		}
		return ee.ExitCode()
	}
	return -1
}

// Eventually polls cond every 20ms until it holds, failing the test with
// what after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sqliteOut is the YAML of a sink db: the table out of the SQLite file
// out.db, created with the columns given.
func sqliteOut(columns string) string {
	return "kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: " + columns + "\n"
}

// SQLiteCounts runs query (one integer column) against the SQLite file at
// path and returns how often each value occurs. A missing table counts as
// empty.
func SQLiteCounts(t testing.TB, path, query string) map[int64]int {
	t.Helper()
	// The job may be writing: wait for its lock rather than fail.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return Counts(t, db, query)
}

// Counts runs query (one integer column) on db and returns how often each
// value occurs. A missing table counts as empty.
func Counts(t testing.TB, db *sql.DB, query string) map[int64]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "no such table") || strings.Contains(msg, "does not exist") || strings.Contains(msg, "doesn't exist") {
			return map[int64]int{}
		}
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[int64]int{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		counts[v]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// JSONLines reads a JSON lines file (a dead-letter file, a file sink) into
// one map per line. A missing file is empty.
func JSONLines(t testing.TB, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v in %q", path, err, line)
		}
		out = append(out, m)
	}
	return out
}

// Check reports every id of 1..n whose count breaks the rule: exactly once
// (exact) or at least once, and any value outside 1..n. Empty when all hold.
func Check(counts map[int64]int, n int, exact bool) []string {
	var bad []string
	for id := int64(1); id <= int64(n); id++ {
		c := counts[id]
		if c == 0 || (exact && c != 1) {
			bad = append(bad, fmt.Sprintf("id %d: %d times", id, c))
		}
	}
	for id, c := range counts {
		if id < 1 || id > int64(n) {
			bad = append(bad, fmt.Sprintf("unexpected id %d: %d times", id, c))
		}
	}
	if len(bad) > 20 {
		bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
	}
	return bad
}

// IDLines writes n JSON lines {"id":i,...} produced by line(i) for i in 1..n.
func IDLines(n int, line func(i int) string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(line(i))
		b.WriteByte('\n')
	}
	return b.String()
}

// buffer is a process's output, safe to read while it is written.
type buffer struct {
	mu  sync.Mutex
	b   bytes.Buffer
	tee *buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.b.Write(p)
	b.mu.Unlock()
	if b.tee != nil {
		_, _ = b.tee.Write(p)
	}
	return len(p), nil
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Throttle limits the last function of dir's funcs.yml to rate rows per
// second (the ratelimit filter), so that a job lasts long enough for a
// fault to land mid-stream however fast the machine is.
func Throttle(t testing.TB, dir string, rate int) {
	t.Helper()
	p := filepath.Join(dir, "funcs.yml")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data = fmt.Appendf(data, "option:\n  filters:\n    - {name: ratelimit, params: {rate: \"%d\", burst: \"100\"}}\n", rate)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
