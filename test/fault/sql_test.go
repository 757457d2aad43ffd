package fault

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// sqlFlow is a config folder: the source connector src (YAML) -> keep id
// and v -> an SQLite table out, with the given delivery.
func sqlFlow(t testing.TB, src, delivery string, extra map[string]string) string {
	t.Helper()
	files := map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Copy
flows:
  - fname: Keep
stream:
  source: src
  sink: db
  delivery: ` + delivery + `
  batch_size: 100
`,
		"funcs.yml": `kistype: func
fname: Keep
fmode: Calculate
calc:
  n: id + 0
keep: [id, v]
`,
		"conns.yml": src + `---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: id,v
`,
	}
	for k, v := range extra {
		files[k] = v
	}
	return Dir(t, files)
}

// sinkCounts counts the values query returns from the SQLite file at path
// while a job writes it (waiting out its write locks).
func sinkCounts(t testing.TB, path, query string) map[int64]int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return Counts(t, db, query)
}

// Finding 1 of issue 10: a transaction takes id 1 and commits after ten
// others; a job polling meanwhile must read id 1 too (it read ids 2-11,
// checkpointed 11, and never read id 1).
func TestSQLSourceReadsARowCommittedLate(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	dir := sqlFlow(t, `kistype: conn
cname: src
type: postgres
key: events
params:
  dsn: "`+dsn+`"
  poll_column: id
  poll_interval: 20ms
`, "at-least-once", nil)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	out := filepath.Join(dir, "out.db")
	// The job is polling once an early row came through.
	if _, err := db.ExecContext(ctx, "INSERT INTO events (id, v) VALUES (0, 'first')"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, time.Minute, "the first row reaches the sink", func() bool { return sinkCounts(t, out, "SELECT id FROM out")[0] == 1 })
	slow, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback() }()
	if _, err := slow.ExecContext(ctx, "INSERT INTO events (v) VALUES ('slow')"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := db.ExecContext(ctx, fmt.Sprintf("INSERT INTO events (v) VALUES ('fast%d')", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The job polls about 50 times while the slow transaction is open:
	// the old source read and checkpointed ids 2-11 then.
	time.Sleep(time.Second)
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, time.Minute, "ids 0-11 reach the sink", func() bool { return len(sinkCounts(t, out, "SELECT id FROM out")) == 12 })
	if bad := Check(sinkCounts(t, out, "SELECT id FROM out WHERE id > 0"), 11, true); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// Finding 2 of issue 10: the SQLite sink file deleted mid-run ends the
// job with a non-zero exit and a message naming the file, instead of
// "written" and exit 0 with the rows gone.
func TestSQLiteSinkFileDeletedMidRun(t *testing.T) {
	t.Parallel()
	// The sink detects it and returns a stream.Fatal error naming the file
	// (TestSQLiteSinkNoticesItsFileGone in connector/sql); the runtime ends
	// the job on it.
	const n = 200000
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "{\"id\":%d,\"v\":\"x\"}\n", i)
	}
	dir := sqlFlow(t, `kistype: conn
cname: src
type: file
params:
  path: ids.jsonl
`, "at-least-once", map[string]string{"ids.jsonl": lines.String()})
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "info")
	out := filepath.Join(dir, "out.db")
	// Wait for the job (its sink started: a file deleted while the sink
	// starts is only a missing file, made anew), then for the sink file's
	// first rows, without opening it (an open after the delete would
	// create a new file).
	p.WaitFor("job starts", time.Minute)
	Eventually(t, time.Minute, "the sink file grows", func() bool {
		st, err := os.Stat(out + "-wal")
		return err == nil && st.Size() > 0
	})
	for _, f := range []string{out, out + "-wal", out + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	code := p.Wait(time.Minute)
	if p.Exited() && code == 0 {
		t.Fatalf("exit 0 after the sink file was deleted:\n%s", tail(p.Output(), 3000))
	}
	if !strings.Contains(p.Output(), out) {
		t.Fatalf("exit %d; the output does not name %s:\n%s", code, out, tail(p.Output(), 3000))
	}
}
