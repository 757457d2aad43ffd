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

// noSnapshotFirstStop is a scenario for CDC sources without a snapshot:
// flows Log (exactly-once into SQLite) and ByFile (at-least-once into
// another SQLite file) on sources cdc and cdcfile (conns) run, are stopped
// before they read a row, the table changes while they are stopped (ids
// 101..103), and they run again: the changes made while stopped are read.
type noSnapshotFirstStop struct {
	system   string // postgres_cdc or mysql_cdc
	conns    string // the sources cdc and cdcfile
	db       *sql.DB
	anchored bool     // the first run commits its start (mysql_cdc); a slot keeps it otherwise
	posWant  []string // in kisflow positions after the first run
}

func runNoSnapshotFirstStop(t *testing.T, c noSnapshotFirstStop) {
	work := t.TempDir()
	// log2: sqliteSinks' log, in log2.db.
	log2 := strings.NewReplacer("cname: log\n", "cname: log2\n", "log.db", "log2.db").Replace(strings.SplitN(sqliteSinks(work), "---\n", 2)[1])
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Log", "cdc", "log", "exactly-once") + "---\n" + cdcFlow("ByFile", "cdcfile", "log2", "at-least-once"),
		"funcs.yml": passFunc,
		"conns.yml": c.conns + "---\n" + sqliteSinks(work) + "---\n" + log2,
	})
	state := filepath.Join(work, "state")
	run := func() *Proc {
		p := Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never", "--log-level", "info")
		Eventually(t, time.Minute, "both sources streaming", func() bool {
			return strings.Count(p.Output(), c.system+" streams changes") >= 2
		})
		return p
	}
	p := run()
	for _, f := range []string{"Log", "ByFile"} {
		if want := "flow " + f + ": no position: starting at the source's end, position "; c.anchored != strings.Contains(p.Output(), want) {
			t.Errorf("first run: %q in the output: %t, want %t\n%s", want, !c.anchored, c.anchored, tail(p.Output(), 3000))
		}
	}
	stopCleanly(t, p)
	res := Run(t, dir, time.Minute, "positions", dir, "--state", state)
	for _, w := range c.posWant {
		if res.Code != 0 || !strings.Contains(res.Stdout, w) {
			t.Fatalf("kisflow positions after a run that read nothing: exit %d, want %q\n%s\n%s", res.Code, w, res.Stdout, res.Stderr)
		}
	}
	for _, q := range []string{"INSERT INTO src VALUES (101, 'a', 101)", "INSERT INTO src VALUES (102, 'b', 102)", "INSERT INTO src VALUES (103, 'c', 103)"} {
		if _, err := c.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	p = run()
	if c.anchored && strings.Contains(p.Output(), "no position") {
		t.Errorf("second run: it had no position\n%s", tail(p.Output(), 3000))
	}
	for _, name := range []string{"log.db", "log2.db"} {
		lg := openSQLite(t, work, name)
		Eventually(t, time.Minute, "the changes made while stopped in "+name, func() bool {
			got, err := queryIDs(lg, "SELECT id FROM log")
			return err == nil && len(got) == 3 && got[101] == 1 && got[102] == 1 && got[103] == 1
		})
	}
	stopCleanly(t, p)
}

// TestMySQLCDCNoSnapshotFirstStop is the scenario noSnapshotFirstStop on
// MariaDB (GTID and file positions): the first run commits where it
// starts (the binlog's end then) before reading.
func TestMySQLCDCNoSnapshotFirstStop(t *testing.T) {
	t.Parallel()
	_, dsn, db := binlogMariaDB(t, 5)
	runNoSnapshotFirstStop(t, noSnapshotFirstStop{system: "mysql_cdc", db: db, anchored: true,
		conns:   mysqlCDCConn("cdc", dsn, 4501, false, "gtid") + "---\n" + mysqlCDCConn("cdcfile", dsn, 4502, false, "file"),
		posWant: []string{"gtid:0-1-", "file:mysql-bin."}})
}

// TestPostgresCDCNoSnapshotFirstStop is the scenario noSnapshotFirstStop on
// PostgreSQL: the slots the first run created keep the changes made while
// stopped, though nothing was committed.
func TestPostgresCDCNoSnapshotFirstStop(t *testing.T) {
	t.Parallel()
	_, url, db := logicalPostgres(t, 5)
	runNoSnapshotFirstStop(t, noSnapshotFirstStop{system: "postgres_cdc", db: db,
		conns: cdcConn("cdc", url, "kisflow_nosnap1", false) + "---\n" + cdcConn("cdcfile", url, "kisflow_nosnap2", false)})
}

// TestCDCApplySeveralTables captures two tables (src, b) with one
// postgres_cdc source into an SQLite replica in mode apply: lint refuses
// it at the line of the sink, unless the sink names the table whose
// changes it applies (params.source_table); then the replica equals src,
// whatever happens to b (rows, a TRUNCATE).
func TestCDCApplySeveralTables(t *testing.T) {
	t.Parallel()
	_, url, db := logicalPostgres(t, 50)
	for _, q := range []string{
		"CREATE TABLE b (id BIGINT PRIMARY KEY, v TEXT, n BIGINT NOT NULL)",
		"INSERT INTO b SELECT g, 'b' || g, g FROM generate_series(1, 80) g",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	conns := func(sourceTable string) string {
		return strings.Replace(cdcConn("cdc", url, "kisflow_two", true), "key: src", "key: src,b", 1) + "---\n" +
			strings.Replace(sqliteReplica(work), "  create: \"true\"\n", "  create: \"true\"\n"+sourceTable, 1)
	}
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replicate", "cdc", "replica", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": conns(""),
	})
	res := Run(t, dir, time.Minute, "lint", dir)
	out := res.Stdout + res.Stderr
	if res.Code == 0 || !regexp.MustCompile(`flow\.yml:[0-9]+`).MatchString(out) || !strings.Contains(out, "captures several tables") || !strings.Contains(out, "source_table") {
		t.Fatalf("lint of two tables into one apply sink: exit %d, want an error at the flow's line naming source_table\n%s", res.Code, out)
	}
	if res := Run(t, dir, time.Minute, "run", dir, "--state", filepath.Join(work, "state")); res.Code == 0 {
		t.Fatalf("run of two tables into one apply sink: exit 0\n%s", tail(res.Stderr, 3000))
	}

	dir = Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replicate", "cdc", "replica", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": conns("  source_table: public.src\n"),
	})
	if res := Run(t, dir, time.Minute, "lint", dir); res.Code != 0 {
		t.Fatalf("lint with source_table: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	lite := openSQLite(t, work, "replica.db")
	replica := func() (map[int64]string, error) { return tableRows(lite, rowText+"replica") }
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "state"), "--progress", "never", "--log-level", "info")
	waitEqual(t, p, db, replica, time.Minute)
	for _, q := range []string{
		"UPDATE b SET v = 'changed' WHERE id <= 60", // ids 1..50 are src's too
		"DELETE FROM b WHERE id % 3 = 0",
		"INSERT INTO src VALUES (1001, 'new', 1001)",
		"UPDATE src SET v = 'src changed' WHERE id % 4 = 0",
		"TRUNCATE b",
		"INSERT INTO src VALUES (1002, 'after the truncate of b', 1002)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, time.Minute, "the change after the TRUNCATE of b in the replica", func() bool {
		got, err := replica()
		return err == nil && got[1002] != ""
	})
	waitEqual(t, p, db, replica, time.Minute)
	stopCleanly(t, p)
}

// TestCDCLintSnapshotInsert checks that lint does not warn of
// exactly-once from a CDC source reading a snapshot into a sink that
// inserts: a snapshot stopped in the middle resumes after its last row
// delivered (TestPostgresCDCSnapshotResume, TestMySQLCDCSnapshotResume);
// where it cannot (a table without a usable key, MySQL rather than
// MariaDB), the source warns when it reads the snapshot, as lint cannot
// tell.
func TestCDCLintSnapshotInsert(t *testing.T) {
	t.Parallel()
	for _, system := range []string{"mysql_cdc", "postgres_cdc"} {
		work := t.TempDir()
		src := mysqlCDCConn("cdc", "root@tcp(127.0.0.1:3306)/test", 4601, true, "gtid")
		if system == "postgres_cdc" {
			src = cdcConn("cdc", "postgres://postgres@127.0.0.1:5432/test", "kisflow_lint", true)
		}
		dir := Dir(t, map[string]string{
			"flow.yml":  cdcFlow("Log", "cdc", "log", "exactly-once"),
			"funcs.yml": passFunc,
			"conns.yml": src + "---\n" + sqliteSinks(work),
		})
		res := Run(t, dir, time.Minute, "lint", dir)
		out := res.Stdout + res.Stderr
		if res.Code != 0 || strings.Contains(out, "snapshot") {
			t.Errorf("%s: lint exit %d, want 0 and no word of the snapshot\n%s", system, res.Code, out)
		}
	}
}

// mysqlPositionsSet runs kisflow positions set FLOW --to pos on dir and
// returns the result.
func mysqlPositionsSet(t *testing.T, dir, state, flow, pos string) Result {
	t.Helper()
	return Run(t, dir, time.Minute, "positions", "set", dir, flow, "--to", pos, "--state", state)
}

// TestMySQLCDCPositionsSetRefuses moves a mysql_cdc flow's position with
// kisflow positions set: a position that is not a GTID set, or one the
// server has not written yet (ahead of its head), is refused with exit 2
// and the committed position stays as it was; one at the head is taken.
func TestMySQLCDCPositionsSetRefuses(t *testing.T) {
	t.Parallel()
	_, dsn, db := binlogMariaDB(t, 20)
	r := newCDCSeekRig(t, mysqlCDCConn("cdc", dsn, 4701, true, "gtid"))
	r.bounded("the snapshot")
	before := r.run("positions")
	if before.Code != 0 {
		t.Fatalf("kisflow positions: exit %d\n%s", before.Code, before.Stderr)
	}
	var head string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&head); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ to, why string }{
		{"gtid:garbage", "not a GTID set"},
		{"gtid:0-1-99999", "ahead of the server"},
		{"file:mysql-bin.000001:4", "keeps gtid positions"},
	} {
		res := mysqlPositionsSet(t, r.dir, r.state, "Log", c.to)
		if res.Code != 2 || !strings.Contains(res.Stderr, c.why) {
			t.Errorf("positions set --to %s: exit %d, want 2 and %q\n%s%s", c.to, res.Code, c.why, res.Stdout, res.Stderr)
		}
	}
	if after := r.run("positions"); after.Stdout != before.Stdout {
		t.Errorf("the refused moves changed the position:\nbefore\n%s\nafter\n%s", before.Stdout, after.Stdout)
	}
	if res := mysqlPositionsSet(t, r.dir, r.state, "Log", "gtid:"+head); res.Code != 0 {
		t.Errorf("positions set --to the head gtid:%s: exit %d\n%s", head, res.Code, res.Stderr)
	}
	if _, err := db.Exec(fmt.Sprintf("INSERT INTO src VALUES (%d, 'x', 1)", 500)); err != nil {
		t.Fatal(err)
	}
	r.bounded("after positions set to the head")
	r.expect("after positions set to the head", add(add(map[int64]int{}, 1, 20), 500, 500))
}
