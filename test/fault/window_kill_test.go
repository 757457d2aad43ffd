package fault

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// killRuns runs kisflow on dir again and again, each run killed with
// SIGKILL at a random point after its job started, until maxKills runs
// were killed; then a last run reads the file to its end. It returns how
// many kills landed before the run they killed finished.
func killRuns(t *testing.T, dir string, maxKills int) int {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, 3))
	kills := 0
	for range maxKills {
		p := Start(t, dir, nil, "run", dir, "--progress", "never", "--log-level", "info")
		p.WaitFor("job starts", time.Minute)
		select {
		case <-p.Done():
			if code := p.Wait(time.Second); code != 0 {
				t.Fatalf("exit %d\n%s", code, tail(p.Output(), 4000))
			}
			t.Logf("seed %d: %d SIGKILLs landed mid-stream", seed, kills)
			return kills
		case <-time.After(time.Duration(150+rnd.IntN(900)) * time.Millisecond):
			p.Kill()
			kills++
		}
	}
	res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
	if res.Code != 0 {
		t.Fatalf("last run: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("seed %d: %d SIGKILLs landed mid-stream", seed, kills)
	return kills
}

// TestWindowsWithWorkersSurviveSIGKILL runs the reference test's job on
// four workers (stream.key: user_id), exactly-once into SQLite, killing it
// with SIGKILL at random points: the table and the dead letters equal
// those of an uninterrupted run (the per-worker reference, which the
// reference test holds an uninterrupted run to).
func TestWindowsWithWorkersSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	for _, tc := range []winCase{winCases[0], winCases[2]} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := winData(t, tc, uint64(time.Now().UnixNano()), 3000, 24)
			want, late := perWorker(d.rows, 4, tc.ref)
			dir := winDir(t, tc.block, d.lines, winStream(4, "exactly-once"), winSQLite)
			Throttle(t, dir, 1000) // about 3 s of work: two kills (at most 1.05 s after a start) always land mid-stream
			if kills := killRuns(t, dir, 6); kills < 2 {
				t.Fatalf("only %d SIGKILLs landed mid-stream", kills)
			}
			compareWindows(t, readWindows(t, filepath.Join(dir, "out.db")), want)
			checkWinDeadLetters(t, dir, d.bad, late)
		})
	}
}

// TestWindowsInPostgresAndMariaDBSurviveSIGKILL: the same with the
// PostgreSQL and MariaDB exactly-once sinks, whose transactions keep the
// windows' state.
func TestWindowsInPostgresAndMariaDBSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	for _, sys := range []struct {
		name, driver, typ, ddl string
		dsn                    func(testing.TB) string
	}{
		{"postgres", "pgx", "postgres", "CREATE TABLE wins (user_id BIGINT, window_start TEXT, window_end TEXT, n BIGINT, total DOUBLE PRECISION, top DOUBLE PRECISION)", testenv.PostgresDatabase},
		{"mariadb", "mysql", "mysql", "CREATE TABLE wins (user_id BIGINT, window_start VARCHAR(40), window_end VARCHAR(40), n BIGINT, total DOUBLE, top DOUBLE)", testenv.MySQLDatabase},
	} {
		t.Run(sys.name, func(t *testing.T) {
			t.Parallel()
			dsn := sys.dsn(t)
			db, err := sql.Open(sys.driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(sys.ddl); err != nil {
				t.Fatal(err)
			}
			tc := winCases[0]
			d := winData(t, tc, uint64(time.Now().UnixNano()), 3000, 24)
			want, late := perWorker(d.rows, 4, tc.ref)
			sink := fmt.Sprintf("kistype: conn\ncname: db\ntype: %s\nkey: wins\nparams:\n  dsn: %q\n  columns: user_id, window_start, window_end, n, total, top\n", sys.typ, dsn)
			dir := winDir(t, tc.block, d.lines, winStream(4, "exactly-once"), sink)
			Throttle(t, dir, 1000)
			if kills := killRuns(t, dir, 4); kills < 1 {
				t.Fatalf("no SIGKILL landed mid-stream")
			}
			compareWindows(t, readWindowsDB(t, db, "wins"), want)
			checkWinDeadLetters(t, dir, d.bad, late)
		})
	}
}

// TestWindowsLateUpdateSurviveSIGKILL: under late: update, on four
// workers, the rows of a run killed at random points (windows, and the
// corrected rows late rows re-emit) are those of an uninterrupted run.
func TestWindowsLateUpdateSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	tc := winCases[0]
	block := tc.block + ", late: update"
	d := winData(t, tc, uint64(time.Now().UnixNano()), 3000, 24)
	whole := winDir(t, block, d.lines, winStream(4, "exactly-once"), winSQLite)
	if res := Run(t, whole, 3*time.Minute, "run", whole, "--progress", "never"); res.Code != 0 {
		t.Fatalf("uninterrupted run: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	want := windowRows(t, filepath.Join(whole, "out.db"))
	corrected := 0
	seen := map[string]bool{}
	for _, r := range want {
		k := strings.Join(strings.Fields(r)[:3], " ")
		if seen[k] {
			corrected++
		}
		seen[k] = true
	}
	if corrected == 0 {
		t.Fatal("the uninterrupted run re-emitted no window: the test tests nothing of late: update")
	}
	dir := winDir(t, block, d.lines, winStream(4, "exactly-once"), winSQLite)
	Throttle(t, dir, 1000)
	if kills := killRuns(t, dir, 6); kills < 2 {
		t.Fatalf("only %d SIGKILLs landed mid-stream", kills)
	}
	if got := windowRows(t, filepath.Join(dir, "out.db")); !slices.Equal(got, want) {
		t.Fatalf("after SIGKILLs the table has %d rows, an uninterrupted run %d (%d corrections); they differ", len(got), len(want), corrected)
	}
	t.Logf("%d rows, %d corrections", len(want), corrected)
}

// windowRows returns the rows of the window table, each as a line, sorted.
func windowRows(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT user_id, window_start, window_end, n, total, top FROM out")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var user, n int64
		var start, end string
		var total, top float64
		if err := rows.Scan(&user, &start, &end, &n, &total, &top); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %s %s %d %.2f %.2f", user, start, end, n, total, top))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestProcessingTimeWindowsSurviveARestart: processing-time windows (no
// time field) open when a run stops (SIGTERM) are kept, on two workers,
// and the next run closes them as the clock passes their end: every row
// is counted once.
func TestProcessingTimeWindowsSurviveARestart(t *testing.T) {
	t.Parallel()
	dir := Dir(t, map[string]string{
		"orders.jsonl": "",
		"flow.yml": `kistype: flow
status: 1
flow_name: Win
flows:
  - fname: PerUser
stream:
  source: orders
  sink: db
  delivery: exactly-once
  batch_size: 20
  workers: 2
  key: user_id
`,
		"funcs.yml": `kistype: func
fname: PerUser
fmode: Calculate
window: {type: tumbling, size: 10s, group_by: [user_id], aggregate: {n: count(), total: sum(amount)}}
`,
		"conns.yml": `kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl
  follow: "true"
  poll: 20ms
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: user_id, window_start, window_end, n, total
`,
	})
	// Start at the beginning of a 10 s window, so that the rows are in
	// one that stays open past the stop.
	time.Sleep(time.Until(time.Now().Truncate(10 * time.Second).Add(10*time.Second + 200*time.Millisecond)))
	p := Start(t, dir, nil, "run", dir, "--progress", "never", "--log-level", "info")
	p.WaitFor("job starts", 30*time.Second)
	const n = 200
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, `{"id":%d,"user_id":%d,"amount":1}`+"\n", i, i%10)
	}
	f, err := os.OpenFile(filepath.Join(dir, "orders.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(lines.String()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // read and committed
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Output())
	}
	if out := p.Output(); !strings.Contains(out, "flow Win: 10 open windows are kept for the next run") {
		t.Fatalf("the stop did not keep the 10 open windows:\n%s", out)
	}
	if c := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out"); len(c) > 0 {
		t.Fatalf("windows emitted before the stop: %v", c)
	}
	p = Start(t, dir, nil, "run", dir, "--progress", "never", "--log-level", "info")
	Eventually(t, time.Minute, "the kept windows closed by the clock", func() bool {
		return len(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out")) > 0
	})
	time.Sleep(time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, p.Output())
	}
	counts := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT n FROM out")
	if len(counts) != 1 || counts[n/10] != 10 {
		t.Fatalf("window row counts (count: windows) %v, want 10 windows of %d rows", counts, n/10)
	}
}
