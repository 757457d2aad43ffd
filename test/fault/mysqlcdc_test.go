package fault

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// binlogMariaDB starts a private MariaDB writing a row-format binlog and
// returns it, the DSN of its database cdc and a pool on it (with || as
// concatenation, as rowText writes it), holding the table src (id, v, n)
// with rows 1..initial (n = id).
func binlogMariaDB(t *testing.T, initial int) (*testenv.Server, string, *sql.DB) {
	t.Helper()
	srv := testenv.PrivateMariaDB(t, "--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1")
	root := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
	boot, err := sql.Open("mysql", root)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	if _, err := boot.Exec("CREATE DATABASE cdc"); err != nil {
		t.Fatal(err)
	}
	dsn := root + "cdc"
	db, err := sql.Open("mysql", dsn+"?sql_mode=%27PIPES_AS_CONCAT%27")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec("CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(64), n BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("INSERT INTO src SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_%d", initial)); err != nil {
		t.Fatal(err)
	}
	return srv, dsn, db
}

// mysqlCDCConn is the YAML of a mysql_cdc connector on src.
func mysqlCDCConn(name, dsn string, serverID int, snapshot bool, positions string) string {
	return fmt.Sprintf(`kistype: conn
cname: %s
type: mysql_cdc
addrs: "%s"
key: src
params:
  server_id: "%d"
  snapshot: "%t"
  positions: %s
  heartbeat: 500ms
`, name, dsn, serverID, snapshot, positions)
}

// TestMySQLCDCApply replicates a MariaDB table into a MariaDB table (mode
// apply) and a SQLite table through mysql_cdc: the snapshot, then
// inserts, updates (one changing the key) and deletes; both replicas end
// equal to the source and a rolled back transaction never appears. The
// SQLite replica's flow keeps file:offset positions.
func TestMySQLCDCApply(t *testing.T) {
	t.Parallel()
	_, dsn, db := binlogMariaDB(t, 300)
	if _, err := db.Exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v VARCHAR(64), n BIGINT)"); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replicate", "cdc", "out", "exactly-once"),
		"file.yml":  cdcFlow("ByFile", "cdcfile", "lite", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": mysqlCDCConn("cdc", dsn, 4001, true, "gtid") + "---\n" + mysqlCDCConn("cdcfile", dsn, 4002, true, "file") + `---
kistype: conn
cname: out
type: mysql
key: replica
params:
  dsn: "` + dsn + `"
  mode: apply
  upsert_key: id
---
` + strings.Replace(sqliteReplica(work), "cname: replica", "cname: lite", 1),
	})
	if r := Run(t, dir, time.Minute, "dry-run", dir); r.Code != 0 || !strings.Contains(r.Stdout, "connector cdc (type mysql_cdc, source): ok") {
		t.Fatalf("dry-run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	lite, err := sql.Open("sqlite", "file:"+filepath.Join(work, "replica.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "state"), "--progress", "never", "--log-level", "info")
	replica := func() (map[int64]string, error) { return tableRows(db, rowText+"replica") }
	liteReplica := func() (map[int64]string, error) { return tableRows(lite, rowText+"replica") }
	waitEqual(t, p, db, replica, time.Minute)
	waitEqual(t, p, db, liteReplica, time.Minute)
	// The flow's position cannot move while it runs (an exactly-once run
	// takes no lock: the server's list of replicas tells).
	if r := Run(t, dir, time.Minute, "positions", "set", dir, "Replicate", "--latest", "--state", filepath.Join(work, "state")); r.Code == 0 || !strings.Contains(r.Stderr, "a reader with server_id 4001 is connected") {
		t.Fatalf("positions set while the flow runs: exit %d, want a refusal naming the server_id\n%s", r.Code, r.Stderr)
	}
	for _, q := range []string{
		"INSERT INTO src VALUES (1001, 'new', 1001)",
		"UPDATE src SET v = 'changed', n = n + 1 WHERE id % 7 = 0",
		"DELETE FROM src WHERE id % 5 = 0",
		"UPDATE src SET id = 2001 WHERE id = 1", // the key changes
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO src VALUES (3001, 'rolled back', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO src VALUES (3002, 'after', 3002)"); err != nil {
		t.Fatal(err)
	}
	waitEqual(t, p, db, replica, time.Minute)
	waitEqual(t, p, db, liteReplica, time.Minute)
	for _, r := range []*sql.DB{db, lite} {
		var n int
		if err := r.QueryRow("SELECT count(*) FROM replica WHERE id = 3001").Scan(&n); err != nil || n != 0 {
			t.Fatalf("a rolled back insert reached the replica (count %d, err %v)", n, err)
		}
	}
	stopCleanly(t, p)
	// The committed positions: a GTID set and a binlog file:offset.
	r := Run(t, dir, time.Minute, "positions", dir, "--state", filepath.Join(work, "state"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "gtid:0-1-") || !strings.Contains(r.Stdout, "file:mysql-bin.") {
		t.Errorf("kisflow positions: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("kisflow positions:\n%s", r.Stdout)
}

// TestMySQLCDCSIGKILL is the SIGKILL scenario (runCDCKill) on MariaDB:
// GTID positions for the replica and the SQLite log, file positions for
// the Redis log.
func TestMySQLCDCSIGKILL(t *testing.T) {
	t.Parallel()
	const initial = 2000
	_, dsn, db := binlogMariaDB(t, initial)
	runCDCKill(t, cdcKill{system: "mysql_cdc", db: db, initial: initial,
		replica: mysqlCDCConn("cdc", dsn, 4101, true, "gtid"), log: mysqlCDCConn("cdclog", dsn, 4102, false, "gtid"),
		redis: mysqlCDCConn("cdcredis", dsn, 4103, false, "file")})
}

// TestMySQLCDCServerRestart is the restart scenario (runCDCRestart) on
// MariaDB.
func TestMySQLCDCServerRestart(t *testing.T) {
	t.Parallel()
	srv, dsn, db := binlogMariaDB(t, 500)
	runCDCRestart(t, cdcRestart{system: "mysql_cdc", srv: srv, db: db, initial: 500,
		replica: mysqlCDCConn("cdc", dsn, 4201, true, "gtid"), log: mysqlCDCConn("cdclog", dsn, 4202, false, "gtid")})
}
