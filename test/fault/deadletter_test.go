package fault

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dlqConn adds to dir a dead_letter connector dlq of type sqlite: table
// dead in dir/dead.db, with params (YAML lines, indented by two).
func dlqConn(t *testing.T, dir, params string) {
	t.Helper()
	appendFile(t, filepath.Join(dir, "flow.yml"), "  dead_letter: dlq\n")
	appendFile(t, filepath.Join(dir, "conns.yml"), "---\nkistype: conn\ncname: dlq\ntype: sqlite\nkey: dead\nparams:\n  path: dead.db\n"+params)
}

// Finding 2.1: an SQLite dead_letter table made by create from the first
// dead letter (all its fields, the headers map among them) and keyed on
// letter_id takes every poison row once, and the job finishes, saying how
// many rows were dead-lettered and where. Run again from the start (the
// position deleted), the same dead letters are counted again and stored
// once.
func TestSQLiteDeadLetterTableWithCreateTakesEveryPoisonRowOnce(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			const n = 3000
			dir, poison := poisonDir(t, n, 30, delivery)
			dlqConn(t, dir, "  create: \"true\"\n  upsert_key: letter_id\n")
			_, payloads := sqliteDeadLetters(t, dir)
			for run := 1; run <= 2; run++ {
				res := Run(t, dir, 3*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
				if res.Code != 0 {
					t.Fatalf("run %d: exit %d\n%s%s", run, res.Code, res.Stdout, res.Stderr)
				}
				if want := fmt.Sprintf("%d committed, %d written, %d dead-lettered", n, n-len(poison), len(poison)); !strings.Contains(res.Stdout, want) {
					t.Fatalf("run %d: the summary does not say %q:\n%s", run, want, res.Stdout)
				}
				if !strings.Contains(res.Stdout, "flow Ids: dead letters are in connector dlq") {
					t.Fatalf("run %d: the summary does not say where the dead letters are:\n%s", run, res.Stdout)
				}
				dead := map[int64]int{}
				for _, p := range payloads() {
					dead[payloadID(t, p)]++
				}
				checkDeadOnce(t, dead, poison)
				// Start over: the position goes, the dead letters stay.
				for _, f := range []string{filepath.Join(dir, "out.db"), filepath.Join(dir, "state", "checkpoints.db")} {
					if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
				}
			}
			// The table was made from a dead letter: its headers (a map)
			// have a column, NULL for lines that carry none.
			if c := SQLiteCounts(t, filepath.Join(dir, "dead.db"), "SELECT count(*) FROM dead WHERE headers IS NULL"); c[int64(len(poison))] != 1 {
				t.Fatalf("dead letters without headers: %v, want %d", c, len(poison))
			}
		})
	}
}

// A dead-letter sink that refuses the dead letters for good (here a NOT
// NULL column they have no field for) ends the job with exit 1 and the
// database's reason, instead of retrying for ever; nothing is committed.
func TestADeadLetterSinkThatRefusesForGoodEndsTheJob(t *testing.T) {
	t.Parallel()
	dir, _ := poisonDir(t, 300, 30, "at-least-once")
	db, err := sql.Open("sqlite", filepath.Join(dir, "dead.db"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("CREATE TABLE dead (letter_id TEXT PRIMARY KEY, payload TEXT, reviewed_by TEXT NOT NULL)")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	dlqConn(t, dir, "  columns: letter_id,payload,reviewed_by\n")
	res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{"flow Ids failed: dead-letter sink dlq refused", "NOT NULL constraint failed"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, res.Stderr)
		}
	}
	if !strings.Contains(res.Stdout, " 0 committed") {
		t.Errorf("the summary says something was committed:\n%s", res.Stdout)
	}
	if c := SQLiteCounts(t, filepath.Join(dir, "dead.db"), "SELECT count(*) FROM dead"); c[0] != 1 {
		t.Errorf("dead letters stored: %v, want none", c)
	}
}

// A dead-letter sink that is down when a signal stops the run holds the
// batches that have dead letters: the drain times out, and the run says
// so and exits 4, rather than "drained and committed" and 0. The log
// names the dead-letter connector once, not "dead-letter sink
// dead-letter sink".
func TestBatchesHeldByTheDeadLetterSinkAtStopExit4(t *testing.T) {
	t.Parallel()
	dir, _ := poisonDir(t, 3000, 30, "at-least-once")
	dlqConn(t, dir, "  create: \"true\"\n  upsert_key: letter_id\n")
	appendFile(t, filepath.Join(dir, "flow.yml"), "  drain_timeout: 2s\n")
	input := filepath.Join(dir, "ids.jsonl")
	lines, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	// A first run of a good row creates the dead-letter database's tables.
	if err := os.WriteFile(input, []byte(`{"id":1,"qty":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := Run(t, dir, time.Minute, "run", dir, "--state", filepath.Join(dir, "state0"), "--progress", "never"); r.Code != 0 {
		t.Fatalf("first run: exit %d:\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if err := os.WriteFile(input, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	// Another writer holds the dead-letter database's write lock.
	db, err := sql.Open("sqlite", filepath.Join(dir, "dead.db"))
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
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	p.WaitFor("dead-letter sink dlq unavailable", 2*time.Minute)
	p.Signal(syscall.SIGINT)
	if code := p.Wait(time.Minute); code != 4 {
		t.Fatalf("exit %d, want 4 (not drained)\n%s", code, p.Output())
	}
	if !strings.Contains(p.Stderr(), "did not finish within the drain timeout") || !strings.Contains(p.Stderr(), "dead-letter sink dlq unavailable for") {
		t.Errorf("stderr does not say the drain timed out on the dead-letter sink:\n%s", p.Stderr())
	}
	if out := p.Output(); strings.Contains(out, "drained and committed") || strings.Contains(out, "dead-letter sink dead-letter sink") {
		t.Errorf("output:\n%s", out)
	}
}

// Finding 2.6, the README's quick start: after a first run of
// examples/orders, deleting only the database and running again reads
// every line again; its 3 malformed lines are reported as dead-lettered,
// with where the dead letters are, and the dead-letter file still holds
// each once.
func TestRerunAfterDeletingOnlyTheDatabaseReportsTheDeadLetters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range []string{"conns.yml", "flow.yml", "funcs.yml", "orders.jsonl.gz"} {
		copyFile(t, filepath.Join("..", "..", "examples", "orders", f), filepath.Join(dir, f))
	}
	letters := filepath.Join(dir, ".kisflow", "dead-letter", "PaidOrders.jsonl")
	for run := 1; run <= 2; run++ {
		res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
		if res.Code != 0 {
			t.Fatalf("run %d: exit %d\n%s%s", run, res.Code, res.Stdout, res.Stderr)
		}
		for _, want := range []string{"100000 rows read, 100000 committed, 66682 written, 3 dead-lettered", "flow PaidOrders: dead letters are in " + letters} {
			if !strings.Contains(res.Stdout, want) {
				t.Fatalf("run %d: the summary does not say %q:\n%s", run, want, res.Stdout)
			}
		}
		if got := JSONLines(t, letters); len(got) != 3 {
			t.Fatalf("run %d: %d dead letters in the file, want the 3 malformed lines once", run, len(got))
		}
		if err := os.Remove(filepath.Join(dir, "orders.db")); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
