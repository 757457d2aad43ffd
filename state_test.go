package kisflow_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// visit is a row of the keyed-state tests.
type visit struct {
	ID   int    `json:"id"`
	User string `json:"user"`
	N    int    `json:"n,omitempty"`
}

// stateFlow writes a config folder for a flow Count over the rows of
// visits.jsonl into the SQLite table out of out.db, with the stream block
// extra (delivery, workers, key...).
func stateFlow(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"visits.jsonl": "",
		"flow.yml": `kistype: flow
status: 1
flow_name: Visits
flows:
  - fname: Count
stream:
  source: visits
  sink: db
  batch_size: 16
  retry_times: 3
  retry_duration: 1
` + extra,
		"funcs.yml": `kistype: func
fname: Count
fmode: Calculate
`,
		"conns.yml": `kistype: conn
cname: visits
type: file
params:
  path: visits.jsonl
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
`,
	})
	return dir
}

// appendVisits adds rows first..last to visits.jsonl, user u(i % users).
func appendVisits(t *testing.T, dir string, first, last, users int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "visits.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := first; i <= last; i++ {
		fmt.Fprintf(f, "{\"id\":%d,\"user\":\"u%d\"}\n", i, i%users)
	}
}

// countFunc counts rows per user in a ValueState and emits each row with
// its user's count so far.
func countFunc(counts *kisflow.ValueState[int]) func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
	return func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
		for _, v := range rows {
			n, _, err := counts.Get(f, v.User)
			if err != nil {
				return err
			}
			if err := counts.Set(f, v.User, n+1); err != nil {
				return err
			}
			if err := f.CommitRow(visit{ID: v.ID, User: v.User, N: n + 1}); err != nil {
				return err
			}
		}
		return nil
	}
}

// runStateJob runs the flow Visits of dir to the end of its file with the
// function Count.
func runStateJob(t *testing.T, dir string, count func(ctx context.Context, f kisflow.Flow, rows []*visit) error) kisflow.JobStats {
	t.Helper()
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := streamRegistry(t)
	reg.MustRegister("Count", kisflow.Func(count))
	ctx := context.Background()
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	job, err := eng.Job(ctx, "Visits", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		t.Fatal(err)
	}
	if err := job.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return job.Stats()
}

// storedState returns the values of the state name kept in the SQLite
// file db, by stream key.
func storedState(t *testing.T, db, name string) map[string]string {
	t.Helper()
	h, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rows, err := h.Query("SELECT skey, value FROM kisflow_state WHERE name = ?", name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// checkCounts checks that the out table holds, for each user, the counts
// 1..n once each, with n the user's rows among ids 1..last, and that the
// stored state says n.
func checkCounts(t *testing.T, dir, stateDB string, last, users int) {
	t.Helper()
	want := map[string]int{}
	for i := 1; i <= last; i++ {
		want[fmt.Sprintf("u%d", i%users)]++
	}
	h, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rows, err := h.Query("SELECT user, n, count(*) FROM out GROUP BY user, n")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var u string
		var n, c int
		if err := rows.Scan(&u, &n, &c); err != nil {
			t.Fatal(err)
		}
		if c != 1 {
			t.Errorf("user %s: count %d emitted %d times", u, n, c)
		}
		got[u]++
	}
	for u, n := range want {
		if got[u] != n {
			t.Errorf("user %s: %d distinct counts emitted, want %d", u, got[u], n)
		}
	}
	stored := storedState(t, stateDB, "visits")
	for u, n := range want {
		if stored[u] != fmt.Sprint(n) {
			t.Errorf("user %s: stored count %q, want %d", u, stored[u], n)
		}
	}
	if len(stored) != len(want) {
		t.Errorf("stored %d keys, want %d", len(stored), len(want))
	}
}

func TestStateCountsPerKeyAndResumesExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, stream, stateDB string }{
		{"exactly-once", "  delivery: exactly-once\n  workers: 3\n  key: user\n", "out.db"},
		{"at-least-once", "  workers: 3\n  key: user\n", "state/checkpoints.db"},
		{"one worker", "  delivery: exactly-once\n", "out.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := stateFlow(t, tc.stream)
			counts := kisflow.NewValueState[int]("visits")
			appendVisits(t, dir, 1, 400, 7)
			if s := runStateJob(t, dir, countFunc(counts)); s.Committed != 400 {
				t.Fatalf("committed %d, want 400", s.Committed)
			}
			checkCounts(t, dir, filepath.Join(dir, tc.stateDB), 400, 7)
			// A new process loads the committed state and goes on counting.
			appendVisits(t, dir, 401, 650, 7)
			if s := runStateJob(t, dir, countFunc(counts)); s.Committed != 250 {
				t.Fatalf("second run committed %d, want 250", s.Committed)
			}
			checkCounts(t, dir, filepath.Join(dir, tc.stateDB), 650, 7)
		})
	}
}

// A run that fails after changing state (then retried), and a message
// whose runs keep failing (dead-lettered), leave no change behind.
func TestStateFailedRunsLeaveNoChange(t *testing.T) {
	t.Parallel()
	dir := stateFlow(t, "  delivery: exactly-once\n")
	counts := kisflow.NewValueState[int]("visits")
	appendVisits(t, dir, 1, 300, 5)
	appendVisits(t, dir, 301, 301, 5) // id 301 always fails
	var calls atomic.Int64
	count := countFunc(counts)
	s := runStateJob(t, dir, func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
		err := count(ctx, f, rows)
		for _, v := range rows {
			if v.ID == 301 {
				return errors.New("poison")
			}
		}
		if calls.Add(1)%3 == 0 {
			return errors.New("flaky after the state changed")
		}
		return err
	})
	if s.DeadLettered != 1 || s.Retries == 0 {
		t.Fatalf("stats %+v: want 1 dead letter and retries", s)
	}
	checkCounts(t, dir, filepath.Join(dir, "out.db"), 300, 5)
}

func TestStateTTLExpires(t *testing.T) {
	t.Parallel()
	dir := stateFlow(t, "  delivery: exactly-once\n")
	counts := kisflow.NewValueState[int]("visits", kisflow.StateTTL(300*time.Millisecond))
	appendVisits(t, dir, 1, 10, 2)
	runStateJob(t, dir, countFunc(counts))
	if got := storedState(t, filepath.Join(dir, "out.db"), "visits"); got["u0"] != "5" || got["u1"] != "5" {
		t.Fatalf("stored %v, want 5 each", got)
	}
	time.Sleep(600 * time.Millisecond) // the entries expire
	appendVisits(t, dir, 11, 12, 2)
	runStateJob(t, dir, countFunc(counts))
	h, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var n11, n12 int
	if err := h.QueryRow("SELECT (SELECT n FROM out WHERE id = 11), (SELECT n FROM out WHERE id = 12)").Scan(&n11, &n12); err != nil {
		t.Fatal(err)
	}
	if n11 != 1 || n12 != 1 {
		t.Fatalf("after expiry the counts restart at 1: got %d, %d", n11, n12)
	}
}

// Each map entry is kept, changed and expires on its own; All and Clear
// see the changes of the batch in flight.
func TestMapStatePerKey(t *testing.T) {
	t.Parallel()
	dir := stateFlow(t, "  delivery: exactly-once\n  workers: 2\n  key: user\n")
	pages := kisflow.NewMapState[int, int]("pages")
	appendVisits(t, dir, 1, 60, 3)
	fn := func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
		for _, v := range rows {
			page := v.ID % 4
			n, _, err := pages.Get(f, v.User, page)
			if err != nil {
				return err
			}
			if err := pages.Put(f, v.User, page, n+1); err != nil {
				return err
			}
			if v.ID > 48 && v.User == "u0" {
				if err := pages.Clear(f, v.User); err != nil {
					return err
				}
			}
			all, err := pages.All(f, v.User)
			if err != nil {
				return err
			}
			total := 0
			for _, c := range all {
				total += c
			}
			if err := f.CommitRow(visit{ID: v.ID, User: v.User, N: total}); err != nil {
				return err
			}
		}
		return nil
	}
	runStateJob(t, dir, fn)
	// u1 and u2 count every row; u0 is cleared at each of its rows past 48.
	h, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var n59, n60, n51 int
	if err := h.QueryRow("SELECT (SELECT n FROM out WHERE id = 59), (SELECT n FROM out WHERE id = 60), (SELECT n FROM out WHERE id = 51)").Scan(&n59, &n60, &n51); err != nil {
		t.Fatal(err)
	}
	if n59 != 20 || n60 != 0 || n51 != 0 {
		t.Fatalf("totals u2=%d, u0 at id 60=%d and id 51=%d; want 20, 0, 0", n59, n60, n51)
	}
	var entries int
	if err := h.QueryRow("SELECT count(*) FROM kisflow_state WHERE name = 'pages'").Scan(&entries); err != nil {
		t.Fatal(err)
	}
	if entries != 8 { // u1 and u2: 4 pages each; u0 cleared
		t.Fatalf("%d map entries stored, want 8", entries)
	}
}

// State used outside a Job, or with several workers and no stream key,
// is an error that says why.
func TestStateMisuseErrors(t *testing.T) {
	t.Parallel()
	counts := kisflow.NewValueState[int]("visits")
	dir := stateFlow(t, "  delivery: exactly-once\n  workers: 2\n")
	appendVisits(t, dir, 1, 4, 2)
	var got atomic.Value
	runStateJob(t, dir, func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
		_, _, err := counts.Get(f, rows[0].User)
		if err != nil {
			got.Store(err)
		}
		return nil
	})
	if err, _ := got.Load().(error); !errors.Is(err, kisflow.ErrStateUnkeyed) {
		t.Fatalf("several workers, no key: %v, want ErrStateUnkeyed", err)
	}
	reg := kisflow.NewRegistry()
	reg.MustRegister("Count", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*visit) error {
		return counts.Set(f, "k", 1)
	}))
	eng := dirEngine(t, reg, dir)
	fl, err := eng.Flow(context.Background(), "Visits")
	if err != nil {
		t.Fatal(err)
	}
	_ = fl.CommitRow(`{"id":1,"user":"a"}`)
	if _, err := fl.Run(context.Background()); !errors.Is(err, kisflow.ErrNoState) || !strings.Contains(err.Error(), `state "visits"`) {
		t.Fatalf("outside a job: %v, want ErrNoState naming the state", err)
	}
}

// Exactly-once into PostgreSQL and MySQL: the state commits in the sink's
// database and a new process goes on from it.
func TestStateExactlyOnceInPostgresAndMySQL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ typ, driver string }{{"postgres", "pgx"}, {"mysql", "mysql"}} {
		t.Run(tc.typ, func(t *testing.T) {
			t.Parallel()
			var dsn string
			if tc.typ == "postgres" {
				dsn = testenv.PostgresDatabase(t)
			} else {
				dsn = testenv.MySQLDatabase(t)
			}
			dir := stateFlow(t, "  delivery: exactly-once\n  workers: 2\n  key: user\n")
			writeFiles(t, dir, map[string]string{"conns.yml": `kistype: conn
cname: visits
type: file
params:
  path: visits.jsonl
---
kistype: conn
cname: db
type: ` + tc.typ + `
key: out
params:
  dsn: "` + dsn + `"
  create: "true"
`})
			counts := kisflow.NewValueState[int]("visits")
			appendVisits(t, dir, 1, 200, 6)
			runStateJob(t, dir, countFunc(counts))
			appendVisits(t, dir, 201, 300, 6)
			runStateJob(t, dir, countFunc(counts))
			db, err := sql.Open(tc.driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var rows, pairs, users int
			if err := db.QueryRow("SELECT count(*), count(DISTINCT CONCAT("+quoteCol(tc.typ, "user")+", '/', n)) FROM "+quoteCol(tc.typ, "out")).Scan(&rows, &pairs); err != nil {
				t.Fatal(err)
			}
			if rows != 300 || pairs != 300 {
				t.Fatalf("%d rows, %d distinct counts; want 300 and 300", rows, pairs)
			}
			stored := map[string]string{}
			r, err := db.Query("SELECT skey, value FROM kisflow_state WHERE name = 'visits'")
			if err != nil {
				t.Fatal(err)
			}
			for r.Next() {
				var k, v string
				if err := r.Scan(&k, &v); err != nil {
					t.Fatal(err)
				}
				stored[k] = v
				users++
			}
			r.Close()
			if users != 6 || stored["u0"] != "50" || stored["u5"] != "50" {
				t.Fatalf("stored %v, want 50 for each of 6 users", stored)
			}
		})
	}
}

// quoteCol quotes an identifier for the dialect typ.
func quoteCol(typ, c string) string {
	if typ == "mysql" {
		return "`" + c + "`"
	}
	return `"` + c + `"`
}
