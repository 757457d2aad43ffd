package fault

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
kistype: conn
cname: lite
type: sqlite
key: replica
params:
  path: ` + filepath.Join(work, "replica.db") + `
  mode: apply
  upsert_key: id
  create: "true"
`,
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

// TestMySQLCDCSIGKILL kills a job replicating a changing MariaDB table
// with SIGKILL at random points, several times: the exactly-once replica
// (mode apply) ends equal to the source, and a log of the changes (insert
// mode, exactly-once) and one in a Redis list (exactly-once) hold each
// committed change once and no change of a transaction rolled back.
func TestMySQLCDCSIGKILL(t *testing.T) {
	t.Parallel()
	const initial = 2000
	_, dsn, db := binlogMariaDB(t, initial)
	work := t.TempDir()
	redisAddr := testenv.Redis.Addr(t)
	rdb := redisClient(t, redisAddr)
	redisKey := testenv.Name("kisflow-mycdc-")
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, redisKey+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	dir := Dir(t, map[string]string{
		"replica.yml": cdcFlow("Replica", "cdc", "replica", "exactly-once"),
		"log.yml":     cdcFlow("Log", "cdclog", "log", "exactly-once"),
		"redis.yml":   cdcFlow("RedisLog", "cdcredis", "redislog", "exactly-once"),
		"funcs.yml":   passFunc,
		"conns.yml": mysqlCDCConn("cdc", dsn, 4101, true, "gtid") + "---\n" + mysqlCDCConn("cdclog", dsn, 4102, false, "gtid") +
			"---\n" + mysqlCDCConn("cdcredis", dsn, 4103, false, "file") + `---
kistype: conn
cname: redislog
type: redis
addrs: ` + redisAddr + `
key: ` + redisKey + `:log
params:
  mode: list
  state_prefix: "` + redisKey + `:"
---
kistype: conn
cname: replica
type: sqlite
key: replica
params:
  path: ` + filepath.Join(work, "replica.db") + `
  mode: apply
  upsert_key: id
  create: "true"
---
kistype: conn
cname: log
type: sqlite
key: log
params:
  path: ` + filepath.Join(work, "log.db") + `
  create: "true"
  columns: id,n,op=_op
`,
	})
	Throttle(t, dir, 1500) // the kills land mid-stream
	open := func(name string) *sql.DB {
		d, err := sql.Open("sqlite", "file:"+filepath.Join(work, name)+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	replicaDB, logDB := open("replica.db"), open("log.db")
	replica := func() (map[int64]string, error) { return tableRows(replicaDB, rowText+"replica") }
	logged := func() (map[int64]int, error) {
		return queryIDs(logDB, "SELECT n*4 + CASE op WHEN 'insert' THEN 0 WHEN 'update' THEN 1 WHEN 'delete' THEN 2 ELSE 3 END FROM log")
	}
	redisLogged := func() (map[int64]int, error) {
		entries, err := rdb.LRange(context.Background(), redisKey+":log", 0, -1).Result()
		if err != nil {
			return nil, err
		}
		out := map[int64]int{}
		for _, e := range entries {
			var row struct {
				N  int64  `json:"n"`
				Op string `json:"_op"`
			}
			if err := json.Unmarshal([]byte(e), &row); err != nil {
				return nil, fmt.Errorf("entry %q: %w", e, err)
			}
			out[row.N*4+int64(strings.Index("insert update delete", row.Op)/7)]++
		}
		return out, nil
	}
	state := filepath.Join(work, "state")
	run := func() *Proc {
		return Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never", "--log-level", "info")
	}
	// A first run is killed while it reads the snapshot: the next one
	// reads it again, and the changes since bring it up to date.
	p := run()
	p.WaitFor("mysql_cdc reads the snapshot", time.Minute)
	Eventually(t, time.Minute, "some snapshot rows reach the replica", func() bool {
		got, err := replica()
		return err == nil && len(got) > 0
	})
	p.Kill()
	if got, err := replica(); err == nil && len(got) >= initial {
		t.Logf("the kill landed after the snapshot (%d rows)", len(got))
	}
	p = run()
	Eventually(t, time.Minute, "the three flows stream", func() bool {
		if p.Exited() {
			t.Fatalf("kisflow exited; output:\n%s", tail(p.Output(), 4000))
		}
		return strings.Count(p.Output(), "mysql_cdc streams changes") >= 3
	})
	w := startWriter(t, db, initial, 2*time.Millisecond)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	kills := 6
	for k := 1; k <= kills; k++ {
		time.Sleep(time.Duration(500+rnd.IntN(1500)) * time.Millisecond)
		p.Kill()
		t.Logf("kill %d: %d transactions committed at the source", k, w.commits.Load())
		p = run()
	}
	w.halt()
	if w.err != nil {
		t.Logf("writer's last error: %v", w.err)
	}
	waitEqual(t, p, db, replica, 3*time.Minute)
	w.mu.Lock()
	want := w.want
	w.mu.Unlock()
	reads := []struct {
		name string
		read func() (map[int64]int, error)
	}{{"SQLite log", logged}, {"Redis log", redisLogged}}
	for _, l := range reads {
		Eventually(t, 2*time.Minute, "the "+l.name+" holds every change", func() bool {
			got, err := l.read()
			if err != nil {
				return false
			}
			for k := range want {
				if got[k] == 0 {
					return false
				}
			}
			return true
		})
	}
	stopCleanly(t, p)
	for _, l := range reads {
		got, err := l.read()
		if err != nil {
			t.Fatal(err)
		}
		if bad := changesDiff(want, got); len(bad) > 0 {
			t.Errorf("after %d SIGKILLs, the %s holds %d changes wrongly: %v", kills, l.name, len(bad), bad[:min(len(bad), 10)])
		}
	}
	t.Logf("%d changes logged once each after %d SIGKILLs", len(want), kills)
}

// changesDiff lists the changes logged a wrong number of times.
func changesDiff(want, got map[int64]int) []string {
	var bad []string
	for k, c := range got {
		if want[k] != c {
			bad = append(bad, fmt.Sprintf("change %d/%d: %d times, want %d", k/4, k%4, c, want[k]))
		}
	}
	for k, c := range want {
		if _, ok := got[k]; !ok {
			bad = append(bad, fmt.Sprintf("change %d/%d: 0 times, want %d", k/4, k%4, c))
		}
	}
	return bad
}

// TestMySQLCDCServerRestart restarts the source's MariaDB while a job
// replicates a changing table: the job reports the outage and goes on from
// where it was. The replica (mode apply) ends equal to the source, and a
// log of the changes (exactly-once, no snapshot) holds each committed
// change once: the reconnected stream neither skips nor repeats.
func TestMySQLCDCServerRestart(t *testing.T) {
	t.Parallel()
	srv, dsn, db := binlogMariaDB(t, 500)
	work := t.TempDir()
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replica", "cdc", "replica", "at-least-once"),
		"log.yml":   cdcFlow("Log", "cdclog", "log", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": mysqlCDCConn("cdc", dsn, 4201, true, "gtid") + "---\n" + mysqlCDCConn("cdclog", dsn, 4202, false, "gtid") + `---
kistype: conn
cname: replica
type: sqlite
key: replica
params:
  path: ` + filepath.Join(work, "replica.db") + `
  mode: apply
  upsert_key: id
  create: "true"
---
kistype: conn
cname: log
type: sqlite
key: log
params:
  path: ` + filepath.Join(work, "log.db") + `
  create: "true"
  columns: id,n,op=_op
`,
	})
	open := func(name string) *sql.DB {
		d, err := sql.Open("sqlite", "file:"+filepath.Join(work, name)+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	replicaDB, logDB := open("replica.db"), open("log.db")
	replica := func() (map[int64]string, error) { return tableRows(replicaDB, rowText+"replica") }
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "state"), "--progress", "never", "--log-level", "info")
	Eventually(t, time.Minute, "both flows stream", func() bool {
		if p.Exited() {
			t.Fatalf("kisflow exited; output:\n%s", tail(p.Output(), 4000))
		}
		return strings.Count(p.Output(), "mysql_cdc streams changes") >= 2
	})
	// The writer stops before the restart: a commit cut off by it has an
	// unknown outcome, which the expected changes could not count.
	w := startWriter(t, db, 500, 2*time.Millisecond)
	time.Sleep(time.Second)
	w.halt()
	srv.Down(t, 2*time.Second)
	var maxID int64
	if err := db.QueryRow("SELECT coalesce(max(id), 0) FROM src").Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	w2 := startWriterAt(t, db, maxID, 2_000_000, 2*time.Millisecond)
	time.Sleep(time.Second)
	w2.halt()
	if w.err != nil || w2.err != nil {
		t.Fatalf("writers: %v, %v", w.err, w2.err)
	}
	waitEqual(t, p, db, replica, 2*time.Minute)
	want := w.want
	for k, v := range w2.want {
		want[k] += v
	}
	logged := func() (map[int64]int, error) {
		return queryIDs(logDB, "SELECT n*4 + CASE op WHEN 'insert' THEN 0 WHEN 'update' THEN 1 WHEN 'delete' THEN 2 ELSE 3 END FROM log")
	}
	Eventually(t, time.Minute, "the log holds every change", func() bool {
		got, err := logged()
		return err == nil && len(got) >= len(want)
	})
	if !strings.Contains(p.Output(), "unavailable") {
		t.Errorf("the outage was not reported; output:\n%s", tail(p.Output(), 4000))
	}
	if strings.Count(p.Output(), "mysql_cdc streams changes") < 4 {
		t.Errorf("the flows did not stream again after the restart; output:\n%s", tail(p.Output(), 4000))
	}
	stopCleanly(t, p)
	got, err := logged()
	if err != nil {
		t.Fatal(err)
	}
	if bad := changesDiff(want, got); len(bad) > 0 {
		t.Fatalf("across the server restart, the log holds %d changes wrongly: %v", len(bad), bad[:min(len(bad), 10)])
	}
	t.Logf("%d changes logged once each across the restart", len(want))
}
