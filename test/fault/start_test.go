package fault

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// redisOn starts a throw-away redis-server on port (extra: more options)
// and returns once it answers PING.
func redisOn(t *testing.T, port int, extra ...string) {
	t.Helper()
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	Eventually(t, 10*time.Second, "redis-server up", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// A Redis source that is down when kisflow run starts is weather, as the
// same outage a second later is: the job waits for it (saying so once),
// then processes every entry. It used to exit 1 at once with "connection
// refused".
func TestSourceDownAtStartIsWaitedFor(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	key := testenv.Name("kisflow-fault-")
	sink, ids := listOut(t, key+":out")
	dir := redisFlow(t, addr, key, "30s", "", sink)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	p.WaitFor("waiting for connector in: ", 30*time.Second)
	// Still waiting after several retries.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("kisflow ended while its source was down:\n%s", tail(p.Output(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	redisOn(t, port)
	const n = 500
	publish(t, redisClient(t, addr), key, 1, n)
	Eventually(t, 60*time.Second, "every entry in the sink", func() bool { return len(ids()) >= n })
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if bad := Check(ids(), n, false); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	out := p.Output()
	if c := strings.Count(out, "waiting for connector in"); c != 1 {
		t.Errorf("the wait is logged %d times, want once:\n%s", c, tail(out, 4000))
	}
	if !strings.Contains(out, "connector in is up after") {
		t.Errorf("the end of the wait is not logged:\n%s", tail(out, 4000))
	}
}

// SIGTERM while waiting for a connector ends the run promptly; nothing
// was processed, so a bounded flow is "cut short" (3) and this unbounded
// one exits 0.
func TestSignalWhileWaitingForConnector(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	key := testenv.Name("kisflow-fault-")
	sink, _ := listOut(t, key+":out")
	dir := redisFlow(t, addr, key, "30s", "", sink)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	p.WaitFor("waiting for connector in: ", 30*time.Second)
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	code := p.Wait(10 * time.Second)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("kisflow took %v to stop after SIGTERM", took)
	}
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// Refused credentials are a configuration error, not weather: the run
// ends at once with exit 1.
func TestBadRedisPasswordAtStartExits1(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	redisOn(t, port, "--requirepass", "right-one")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	key := testenv.Name("kisflow-fault-")
	sink, _ := listOut(t, key+":out")
	dir := redisFlow(t, addr, key, "30s", "", sink+"\n")
	// The source's params get a wrong password.
	dir = Dir(t, map[string]string{
		"flow.yml":  readFile(t, filepath.Join(dir, "flow.yml")),
		"funcs.yml": readFile(t, filepath.Join(dir, "funcs.yml")),
		"conns.yml": strings.Replace(readFile(t, filepath.Join(dir, "conns.yml")), "  group: g\n", "  group: g\n  password: wrong-one\n", 1),
	})
	start := time.Now()
	r := Run(t, dir, 30*time.Second, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1:\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a refused password took %v to end the run", took)
	}
	if !strings.Contains(r.Stderr, "WRONGPASS") || strings.Contains(r.Stderr, "waiting for connector") {
		t.Errorf("stderr does not name the refused password, or waited:\n%s", r.Stderr)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fileFlow is a folder with a file -> keep -> file flow, whose flow
// document gets extra (YAML lines, at the end) and whose func document
// gets funcExtra.
func fileFlow(t *testing.T, extra, funcExtra string) string {
	t.Helper()
	dir := Dir(t, map[string]string{
		"in.jsonl":  IDLines(10, func(i int) string { return fmt.Sprintf(`{"id":%d}`, i) }),
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ids\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n" + extra,
		"funcs.yml": "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n" + funcExtra,
	})
	conns := fmt.Sprintf("kistype: conn\ncname: in\ntype: file\nparams:\n  path: %s\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: %s\n",
		filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl"))
	if err := os.WriteFile(filepath.Join(dir, "conns.yml"), []byte(conns), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A misspelt key in a stream block (delivry: exactly-once) changed what
// the job guarantees without a word from run: it is an error for lint and
// run, at its file and line, with the key it resembles.
func TestMisspeltStreamKeyIsAnError(t *testing.T) {
	t.Parallel()
	dir := fileFlow(t, "  delivry: exactly-once\n", "")
	refusedByLintAndRun(t, dir, `flow.yml:9: unknown field "stream.delivry" (did you mean "delivery"?)`)
}

// An unknown top-level key of a func document is still a warning: run
// prints it, as lint does, and runs.
func TestRunPrintsLintWarnings(t *testing.T) {
	t.Parallel()
	dir := fileFlow(t, "", "colour: blue\n")
	want := `funcs.yml:7: warning: unknown field "colour"`
	run := Run(t, dir, 30*time.Second, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if run.Code != 0 || !strings.Contains(run.Stderr, want) {
		t.Fatalf("run: exit %d, want 0 with %q:\n%s%s", run.Code, want, run.Stdout, run.Stderr)
	}
	if n := len(JSONLines(t, filepath.Join(dir, "out.jsonl"))); n != 10 {
		t.Errorf("sink has %d rows, want 10", n)
	}
}

// A bounded source stopped by SIGTERM while its sink is blocked (the
// SQLite table locked by another writer) cannot drain within
// drain_timeout: the run exits 4 ("not drained"), not 3 ("cut short"),
// which would claim the in-flight batches were drained and committed.
func TestDrainTimeoutOnBoundedSourceExits4(t *testing.T) {
	t.Parallel()
	drainTimeoutExits4(t)
}

// Under run --watch too (it exited 0 and said everything was drained and
// committed).
func TestDrainTimeoutUnderWatchExits4(t *testing.T) {
	t.Parallel()
	drainTimeoutExits4(t, "--watch")
}

func drainTimeoutExits4(t *testing.T, flags ...string) {
	dir := Dir(t, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ids\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n  drain_timeout: 2s\n",
		"funcs.yml": "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n",
	})
	path := filepath.Join(dir, "out.db")
	conns := fmt.Sprintf("kistype: conn\ncname: in\ntype: file\nparams:\n  path: %s\n---\nkistype: conn\ncname: out\ntype: sqlite\nkey: out\nparams:\n  path: %s\n  columns: id\n  create: \"true\"\n",
		filepath.Join(dir, "in.jsonl"), path)
	if err := os.WriteFile(filepath.Join(dir, "conns.yml"), []byte(conns), 0o644); err != nil {
		t.Fatal(err)
	}
	// A first run of one row creates the sink's tables.
	input := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(input, []byte("{\"id\":0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := Run(t, dir, 60*time.Second, "run", dir, "--state", filepath.Join(dir, "state0"), "--progress", "never"); r.Code != 0 {
		t.Fatalf("first run: exit %d:\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if err := os.WriteFile(input, []byte(IDLines(50000, func(i int) string { return fmt.Sprintf(`{"id":%d}`, i) })), 0o644); err != nil {
		t.Fatal(err)
	}
	// Another writer holds the database's write lock until the test ends.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lock.ExecContext(ctx, "ROLLBACK"); lock.Close() })
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	p := Start(t, dir, nil, append([]string{"run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never"}, flags...)...)
	p.WaitFor("sink out unavailable", 60*time.Second)
	p.Signal(syscall.SIGTERM)
	code := p.Wait(30 * time.Second)
	if code != 4 {
		t.Fatalf("exit %d, want 4 (not drained):\n%s", code, p.Output())
	}
	if strings.Contains(p.Stdout(), "drained and committed") {
		t.Errorf("stdout says the batches were drained and committed:\n%s", p.Stdout())
	}
	if !strings.Contains(p.Stderr(), "drain") || !strings.Contains(p.Stderr(), "sink out unavailable for") {
		t.Errorf("stderr does not say the drain timed out, waiting for sink out:\n%s", p.Stderr())
	}
}
