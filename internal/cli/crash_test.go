package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
)

// The test binary doubles as a kisflow binary for crash tests: with
// KISFLOW_TEST_CHILD set it runs the CLI with the arguments in that
// variable (JSON), with two extra Go functions registered: Slow (waits a
// little per batch, so a kill lands mid-run), Flaky (fails every 7th
// call, so retries happen) and CountState (counts rows per user in keyed
// state, see state_crash_test.go).
func TestMain(m *testing.M) {
	if args := os.Getenv("KISFLOW_TEST_CHILD"); args != "" {
		os.Exit(childMain(args))
	}
	code := m.Run()
	if stockDir != "" {
		os.RemoveAll(stockDir) // the kisflow binary testcmd_test.go built
	}
	os.Exit(code)
}

func childMain(argsJSON string) int {
	var args []string
	if err := json.Unmarshal([]byte(argsJSON), &args); err != nil {
		fmt.Fprintln(os.Stderr, "child args:", err)
		return 2
	}
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	reg.MustRegister("Slow", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		time.Sleep(4 * time.Millisecond)
		return f.CommitRowBatch(rows)
	}))
	var calls atomic.Int64
	reg.MustRegister("Flaky", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		if calls.Add(1)%7 == 0 {
			return errors.New("flaky failure")
		}
		return f.CommitRowBatch(rows)
	}))
	reg.MustRegister("CountState", kisflow.Func(countState))
	reg.MustRegister("CountKey", kisflow.Func(countKey))
	reg.MustRegister("ArmKey", kisflow.Func(armKey))
	if err := reg.OnTimer("ArmKey", firedKey); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	reg.MustRegister("Gate", kisflow.FuncRows(gate))
	return Main(reg, args, os.Stdout, os.Stderr)
}

// streamDir writes a config folder: n ids in a JSON lines file, the flow
// Flaky -> Slow -> Keep(id), and an SQLite sink with the given delivery.
func streamDir(t *testing.T, n int, delivery string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "{\"id\":%d,\"user\":%d}\n", i, i%17)
	}
	files := map[string]string{
		"ids.jsonl": b.String(),
		"flow.yml": `kistype: flow
status: 1
flow_name: Ids
flows:
  - fname: Flaky
  - fname: Slow
  - fname: Keep
stream:
  source: ids
  sink: db
  delivery: ` + delivery + `
  batch_size: 10
  workers: 2
  key: user
  retry_times: 3
  retry_duration: 1
`,
		"funcs.yml": `kistype: func
fname: Flaky
fmode: Calculate
---
kistype: func
fname: Slow
fmode: Calculate
---
kistype: func
fname: Keep
fmode: Calculate
calc:
  seen: true
keep: [id]
`,
		"conns.yml": `kistype: conn
cname: ids
type: file
params:
  path: ids.jsonl
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: id
`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func child(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	args, _ := json.Marshal([]string{"run", dir, "--state", filepath.Join(dir, "state"), "--log-level", "info"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KISFLOW_TEST_CHILD="+string(args))
	out := newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// syncBuffer is a child's output, read while the child writes it through
// the command's lockedWriter.
type syncBuffer struct {
	lockedWriter
	b strings.Builder
}

func newSyncBuffer() *syncBuffer {
	b := &syncBuffer{}
	b.w = &b.b
	return b
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitStarted waits until the child's job runs (its signal handler is in
// place by then) or the child ends; false if neither within wait.
func waitStarted(cmd *exec.Cmd, done chan error, wait time.Duration) bool {
	out := cmd.Stdout.(*syncBuffer)
	deadline := time.Now().Add(wait)
	for !strings.Contains(out.String(), "job starts") {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case err := <-done:
			done <- err // for the caller, who waits on it too
			return true
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// ids returns every id in the sink table, with repeats.
func ids(t *testing.T, dir string) (all, distinct int) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*), count(DISTINCT id) FROM out").Scan(&all, &distinct); err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0, 0
		}
		t.Fatal(err)
	}
	return all, distinct
}

// killUntilDone starts the job, kills it with sig after a random delay,
// and repeats until a run finishes by itself. It returns the kills made.
func killUntilDone(t *testing.T, dir string, sig syscall.Signal, maxKills int) int {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for range maxKills + 1 {
		cmd := child(t, dir)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var delay time.Duration
		switch {
		case kills == maxKills:
			delay = time.Minute // let the last run finish
		case sig == syscall.SIGTERM:
			// A SIGTERM before the process handles signals (while it
			// starts) ends it at once, with nothing in flight: what is
			// tested is the drain of a running job.
			if !waitStarted(cmd, done, 30*time.Second) {
				t.Fatal("the run did not start its job within 30s")
			}
			delay = time.Duration(r.IntN(250)) * time.Millisecond
		default:
			delay = time.Duration(40+r.IntN(250)) * time.Millisecond
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run ended with %v", err)
			}
			return kills
		case <-time.After(delay):
			_ = cmd.Process.Signal(sig)
			kills++
			err := <-done
			var ee *exec.ExitError
			// A drained stop of a bounded source before its end exits
			// ExitCutShort; one that lands after the end, 0.
			if sig == syscall.SIGTERM && err != nil && !(errors.As(err, &ee) && ee.ExitCode() == ExitCutShort) {
				t.Fatalf("SIGTERM: run should drain and exit %d (cut short) or 0, got %v", ExitCutShort, err)
			}
			if sig == syscall.SIGKILL && err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
		}
	}
	t.Fatalf("no run finished after %d kills", maxKills)
	return kills
}

func TestAtLeastOnceSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 3000
	dir := streamDir(t, n, "at-least-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 4)
	if kills == 0 {
		t.Fatal("no SIGKILL landed before the job finished")
	}
	all, distinct := ids(t, dir)
	if distinct != n {
		t.Fatalf("after %d SIGKILLs: %d of %d ids reached the sink", kills, distinct, n)
	}
	t.Logf("%d SIGKILLs: %d rows for %d ids (repeats are allowed at-least-once)", kills, all, n)
}

func TestExactlyOnceSurvivesSIGKILLAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 6000
	dir := streamDir(t, n, "exactly-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 15)
	if kills < 5 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	all, distinct := ids(t, dir)
	if all != n || distinct != n {
		t.Fatalf("after %d SIGKILLs: %d rows, %d distinct ids; want each of %d ids exactly once", kills, all, distinct, n)
	}
	t.Logf("%d SIGKILLs: every id exactly once", kills)
}

func TestSIGTERMDrainsAndLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 3000
	dir := streamDir(t, n, "at-least-once")
	kills := killUntilDone(t, dir, syscall.SIGTERM, 3)
	if kills == 0 {
		t.Fatal("no SIGTERM landed before the job finished")
	}
	all, distinct := ids(t, dir)
	// A drained stop commits exactly what was written: even at-least-once,
	// nothing repeats.
	if all != n || distinct != n {
		t.Fatalf("after %d SIGTERMs: %d rows, %d distinct ids, want %d", kills, all, distinct, n)
	}
}
