package fault

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// cdcSeekRig is a flow Log reading a CDC source into an SQLite log of its
// rows (at-least-once), run to its stop with kisflow run.
type cdcSeekRig struct {
	t          *testing.T
	dir, state string
	log        *sql.DB
}

func newCDCSeekRig(t *testing.T, source string) *cdcSeekRig {
	work := t.TempDir()
	r := &cdcSeekRig{t: t, state: filepath.Join(work, "state")}
	r.dir = Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Log", "cdc", "log", "at-least-once") + "  stop: at_start\n",
		"funcs.yml": passFunc,
		"conns.yml": source + "---\n" + sqliteSinks(work),
	})
	r.log = openSQLite(t, work, "log.db")
	return r
}

// run runs kisflow with args and the rig's state folder.
func (r *cdcSeekRig) run(args ...string) Result {
	n := 1
	if len(args) > 1 && args[0] == "positions" && args[1] == "set" {
		n = 2
	}
	args = append(args[:n:n], append([]string{r.dir, "--state", r.state}, args[n:]...)...)
	return Run(r.t, r.dir, 2*time.Minute, args...)
}

// bounded runs the flow to its stop (exit 0) with extra run flags.
func (r *cdcSeekRig) bounded(what string, flags ...string) {
	r.t.Helper()
	res := r.run(append([]string{"run", "--progress", "never", "--log-level", "info"}, flags...)...)
	if res.Code != 0 {
		r.t.Fatalf("%s: kisflow run exited %d, want 0 (the stop reached)\n%s\n%s", what, res.Code, res.Stdout, tail(res.Stderr, 4000))
	}
}

// expect checks that the log holds each id of want as often as want
// says, and no other.
func (r *cdcSeekRig) expect(what string, want map[int64]int) {
	r.t.Helper()
	got, err := queryIDs(r.log, "SELECT id FROM log")
	if err != nil {
		r.t.Fatal(err)
	}
	var bad []string
	for id := range want {
		if got[id] != want[id] {
			bad = append(bad, fmt.Sprintf("id %d: %d times, want %d", id, got[id], want[id]))
		}
	}
	for id := range got {
		if want[id] == 0 {
			bad = append(bad, fmt.Sprintf("id %d: %d times, want 0", id, got[id]))
		}
	}
	if len(bad) > 0 {
		r.t.Fatalf("%s: the log holds %d ids wrongly: %v", what, len(bad), bad[:min(len(bad), 10)])
	}
}

// oneOffUntil runs the flow once from its committed position until the
// position until, which must read ids from..to, then runs it as usual,
// which must read from..last again: the one-off run left the committed
// position as it was.
func (r *cdcSeekRig) oneOffUntil(want map[int64]int, until string, from, to, last int64) {
	r.t.Helper()
	r.bounded("a one-off run", "--from", "committed", "--until", until)
	r.expect("a one-off run", add(want, from, to))
	r.bounded("the run after the one-off run")
	r.expect("the run after the one-off run", add(want, from, last))
}

// add counts ids from..to once more in want.
func add(want map[int64]int, from, to int64) map[int64]int {
	for id := from; id <= to; id++ {
		want[id]++
	}
	return want
}

var lsnPattern = regexp.MustCompile(`\b[0-9A-F]+/[0-9A-F]+\b`)

// TestPostgresCDCStartStop drives a postgres_cdc flow's start and stop
// positions through kisflow: runs with stop: at_start end with exit 0
// after the rows committed before they began; kisflow positions shows the
// committed LSN, the WAL's head and the lag; a one-off run (--from
// committed --until LSN) reads up to the LSN and leaves the committed
// position (and the slot) as they were; a start before the slot's
// confirmed position is refused, naming it; positions set --latest skips
// what was written before, --earliest reads a new snapshot, --time is
// refused with the reason; a one-off run from a time until a time reads
// exactly the transactions committed between.
func TestPostgresCDCStartStop(t *testing.T) {
	t.Parallel()
	_, url, db := logicalPostgres(t, 100)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(from, to int64) {
		exec("INSERT INTO src SELECT g, 'v' || g, g FROM generate_series($1::bigint, $2::bigint) g", from, to)
	}
	lsn := func() string {
		var s string
		if err := db.QueryRow("SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := lsn() // before the slot exists
	r := newCDCSeekRig(t, cdcConn("cdc", url, "kisflow_seek", true))
	want := map[int64]int{}

	r.bounded("the snapshot")
	r.expect("the snapshot", add(want, 1, 100))
	insert(101, 150)
	r.bounded("the changes since")
	r.expect("the changes since", add(want, 101, 150))

	res := r.run("positions")
	line := ""
	for _, l := range strings.Split(res.Stdout, "\n") {
		if strings.HasPrefix(l, "Log ") {
			line = l
		}
	}
	if res.Code != 0 || len(lsnPattern.FindAllString(line, -1)) != 2 || !strings.Contains(line, "bytes of WAL") {
		t.Fatalf("kisflow positions: exit %d, want the committed LSN, the head and the lag in bytes of WAL on the line of Log\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("kisflow positions:\n%s", res.Stdout)

	// A one-off run to an LSN: the changes before it, and the committed
	// position stays (the next run reads them again).
	insert(151, 200)
	until := lsn()
	insert(201, 250)
	r.oneOffUntil(want, until, 151, 200, 250)

	// Nothing before the slot's confirmed position can be read again.
	res = r.run("run", "--progress", "never", "--from", before, "--until", "at_start")
	if res.Code == 0 || !strings.Contains(res.Stderr, "is before replication slot kisflow_seek's confirmed position") {
		t.Fatalf("a start before the slot's position: exit %d, want a refusal naming the slot's position\n%s", res.Code, tail(res.Stderr, 4000))
	}
	res = r.run("positions", "set", "Log", "--time", "2026-01-01")
	if res.Code == 0 || !strings.Contains(res.Stderr, "keeps no index of commit times") {
		t.Fatalf("positions set --time: exit %d, want a refusal with the reason\n%s", res.Code, res.Stderr)
	}

	insert(300, 309) // skipped by --latest
	if res = r.run("positions", "set", "Log", "--latest"); res.Code != 0 {
		t.Fatalf("positions set --latest: exit %d\n%s", res.Code, res.Stderr)
	}
	insert(251, 260)
	r.bounded("after positions set --latest")
	r.expect("after positions set --latest", add(want, 251, 260))

	// Two times between three transactions; a one-off run between them.
	insert(400, 409)
	time.Sleep(50 * time.Millisecond)
	t1 := time.Now()
	time.Sleep(50 * time.Millisecond)
	insert(410, 419)
	time.Sleep(50 * time.Millisecond)
	t2 := time.Now()
	time.Sleep(50 * time.Millisecond)
	insert(420, 429)
	r.bounded("a one-off run between two times", "--from", t1.UTC().Format(time.RFC3339Nano), "--until", t2.UTC().Format(time.RFC3339Nano))
	r.expect("a one-off run between two times", add(want, 410, 419))
	r.bounded("the run after")
	add(want, 400, 409)
	add(want, 410, 419)
	r.expect("the run after", add(want, 420, 429))

	// Earliest: a new snapshot of the table.
	if res = r.run("positions", "set", "Log", "--earliest"); res.Code != 0 || !strings.Contains(res.Stdout, "to snapshot:") {
		t.Fatalf("positions set --earliest: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	r.bounded("after positions set --earliest")
	// Every row once more, from the snapshot; the changes the slot still
	// holds (those after its confirmed position) may come again too.
	got, err := queryIDs(r.log, "SELECT id FROM log")
	if err != nil {
		t.Fatal(err)
	}
	add(want, 1, 260)
	add(want, 300, 309)
	add(want, 400, 429)
	for id, n := range want {
		if got[id] < n {
			t.Errorf("after positions set --earliest: id %d is in the log %d times, want at least %d", id, got[id], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("after positions set --earliest: the log holds %d ids, want %d", len(got), len(want))
	}
}

// TestMySQLCDCStartStop drives a mysql_cdc flow's start and stop
// positions through kisflow: runs with stop: at_start end with exit 0; a
// one-off run until a GTID position reads the transactions up to it and
// leaves the committed position; a one-off run from latest reads nothing
// written before; a stop at a time ends before the transactions written
// at or after it.
func TestMySQLCDCStartStop(t *testing.T) {
	t.Parallel()
	_, dsn, db := binlogMariaDB(t, 100)
	insert := func(from, to int64) {
		t.Helper()
		if _, err := db.Exec(fmt.Sprintf("INSERT INTO src SELECT seq, CONCAT('v', seq), seq FROM seq_%d_to_%d", from, to)); err != nil {
			t.Fatal(err)
		}
	}
	gtid := func() string {
		var s string
		if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return "gtid:" + s
	}
	r := newCDCSeekRig(t, mysqlCDCConn("cdc", dsn, 4301, true, "gtid"))
	want := map[int64]int{}
	r.bounded("the snapshot")
	r.expect("the snapshot", add(want, 1, 100))

	insert(101, 150)
	insert(151, 160)
	until := gtid()
	insert(161, 200)
	r.oneOffUntil(want, until, 101, 160, 200)

	insert(300, 309)
	r.bounded("a one-off run from latest", "--from", "latest", "--until", "at_start")
	r.expect("a one-off run from latest", want)

	// The binlog's timestamps are seconds: a time a second after a
	// transaction, and one a second before the next.
	time.Sleep(1100 * time.Millisecond)
	stop := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(stop) + 100*time.Millisecond)
	insert(310, 319)
	r.bounded("a run until a time", "--from", "committed", "--until", stop.UTC().Format(time.RFC3339))
	r.expect("a run until a time", add(want, 300, 309))

	res := r.run("positions")
	if res.Code != 0 || !strings.Contains(res.Stdout, "gtid:0-1-") {
		t.Fatalf("kisflow positions: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestCDCLintStartStop checks that lint refuses, at the line of start: or
// stop:, what a CDC source cannot do: mysql_cdc cannot start at a time.
func TestCDCLintStartStop(t *testing.T) {
	t.Parallel()
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Log", "cdc", "log", "at-least-once") + "  start: {time: 2026-11-30}\n  stop: at_start\n",
		"funcs.yml": passFunc,
		"conns.yml": mysqlCDCConn("cdc", "root@tcp(127.0.0.1:3306)/test", 4401, true, "gtid") + `---
kistype: conn
cname: log
type: stdout
`,
	})
	res := Run(t, dir, time.Minute, "lint", dir)
	out := res.Stdout + res.Stderr
	if res.Code == 0 || !regexp.MustCompile(`flow\.yml:1[0-9]`).MatchString(out) || !strings.Contains(out, "cannot start at time") || !strings.Contains(out, "gtid:SET or file:NAME:OFFSET") {
		t.Fatalf("lint: exit %d, want the line of stream.start and what mysql_cdc can do\n%s", res.Code, out)
	}
}
