package fault

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// logicalPostgres starts a private PostgreSQL with logical replication on
// and returns its URL and a pool on it, holding the table src (id, v, n)
// with REPLICA IDENTITY FULL and rows 1..initial (n = id).
func logicalPostgres(t *testing.T, initial int) (*testenv.Server, string, *sql.DB) {
	t.Helper()
	srv := testenv.PrivatePostgres(t, "wal_level=logical", "max_replication_slots=10", "max_wal_senders=10")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{
		"CREATE TABLE src (id BIGINT PRIMARY KEY, v TEXT, n BIGINT NOT NULL)",
		"ALTER TABLE src REPLICA IDENTITY FULL",
		fmt.Sprintf("INSERT INTO src SELECT g, 'v' || g, g FROM generate_series(1, %d) g", initial),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return srv, url, db
}

// cdcConn is the YAML of a postgres_cdc connector on src.
func cdcConn(name, url, slot string, snapshot bool) string {
	return fmt.Sprintf(`kistype: conn
cname: %s
type: postgres_cdc
addrs: "%s"
key: src
params:
  slot: %s
  publication: kisflow_src
  snapshot: "%t"
  status_interval: 500ms
`, name, url, slot, snapshot)
}

// cdcFlow is a flow reading source into sink.
func cdcFlow(name, source, sink, delivery string) string {
	return fmt.Sprintf(`kistype: flow
status: 1
flow_name: %s
flows:
  - fname: Pass
stream:
  source: %s
  sink: %s
  delivery: %s
  batch_size: 37
  linger: 5ms
`, name, source, sink, delivery)
}

const passFunc = `kistype: func
fname: Pass
fmode: Calculate
calc:
  seen: true
`

// tableRows reads query's (id, text) rows as a map.
func tableRows(db *sql.DB, query string) (map[int64]string, error) {
	rows, err := db.Query(query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, rows.Err()
}

const rowText = "SELECT id, coalesce(v, '') || '|' || n FROM "

// diff describes how two tables differ ("" when they are equal).
func diff(want, got map[int64]string) string {
	var d []string
	for id, w := range want {
		if g, ok := got[id]; !ok {
			d = append(d, fmt.Sprintf("id %d missing", id))
		} else if g != w {
			d = append(d, fmt.Sprintf("id %d: %q, want %q", id, g, w))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			d = append(d, fmt.Sprintf("id %d should be deleted", id))
		}
		if len(d) > 10 {
			break
		}
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprintf("%d differences: %s", len(d), strings.Join(d[:min(len(d), 10)], "; "))
}

// waitEqual waits until the replica (read by replica) equals src.
func waitEqual(t *testing.T, p *Proc, src *sql.DB, replica func() (map[int64]string, error), timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p != nil && p.Exited() {
			t.Fatalf("kisflow exited (code %d) before the replica equalled the source; output:\n%s", exitCode(p.err), tail(p.Output(), 4000))
		}
		want, err := tableRows(src, rowText+"src")
		if err != nil {
			t.Fatal(err)
		}
		got, err := replica()
		d := ""
		if err == nil {
			if d = diff(want, got); d == "" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica does not equal the source after %v (err %v): %s", timeout, err, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// changeWriter changes src at random in transactions (most small, some
// of up to 200 changes) until stopped:
// inserts, updates and deletes, and transactions rolled back. Each insert
// and update sets n to a new number; the changes it committed are
// recorded as n*4 + op (0 insert, 1 update, 2 delete, with a delete's n
// the deleted row's).
type changeWriter struct {
	db      *sql.DB
	rnd     *rand.Rand
	next    int64 // the next n
	maxID   int64
	mu      sync.Mutex
	want    map[int64]int
	stop    chan struct{}
	done    chan struct{}
	commits atomic.Int64
	err     error
	// maria writes MariaDB's SQL (? placeholders, no UPDATE ... RETURNING).
	maria bool
}

func startWriter(t *testing.T, db *sql.DB, initial int64, pause time.Duration) *changeWriter {
	return startWriterAt(t, db, initial, 1_000_000, pause)
}

// startWriterAt starts a writer whose rows have ids above maxID and whose
// numbers n start above next.
func startWriterAt(t *testing.T, db *sql.DB, maxID, next int64, pause time.Duration) *changeWriter {
	seed := uint64(time.Now().UnixNano())
	t.Logf("writer seed %d", seed)
	w := &changeWriter{db: db, rnd: rand.New(rand.NewPCG(seed, 1)), next: next, maxID: maxID, want: map[int64]int{},
		stop: make(chan struct{}), done: make(chan struct{}), maria: strings.Contains(fmt.Sprintf("%T", db.Driver()), "mysql")}
	go w.run(pause)
	t.Cleanup(w.halt)
	return w
}

func (w *changeWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *changeWriter) run(pause time.Duration) {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(pause):
		}
		if err := w.tx(); err != nil {
			w.err = err
			time.Sleep(100 * time.Millisecond) // the server may be restarting
		}
	}
}

// sql is q in the writer's dialect.
func (w *changeWriter) sql(q string) string {
	if w.maria {
		for i := 3; i >= 1; i-- {
			q = strings.ReplaceAll(q, fmt.Sprintf("$%d", i), "?")
		}
	}
	return q
}

func (w *changeWriter) tx() error {
	ctx := context.Background()
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	done := map[int64]int{}
	ops := 1 + w.rnd.IntN(5)
	if w.rnd.IntN(20) == 0 {
		ops = 50 + w.rnd.IntN(150) // a large transaction: batches end inside it
	}
	for range ops {
		switch op := w.rnd.IntN(10); {
		case op < 4:
			w.maxID++
			w.next++
			if _, err := tx.ExecContext(ctx, w.sql("INSERT INTO src VALUES ($1, $2, $3)"), w.maxID, fmt.Sprintf("i%d", w.next), w.next); err != nil {
				return err
			}
			done[w.next*4]++
		case op < 8:
			w.next++
			var n int64
			var err error
			if w.maria {
				var id int64
				if err = tx.QueryRowContext(ctx, "SELECT id FROM src WHERE id >= ? ORDER BY id LIMIT 1 FOR UPDATE", 1+w.rnd.Int64N(w.maxID)).Scan(&id); err == nil {
					_, err = tx.ExecContext(ctx, "UPDATE src SET n = ?, v = ? WHERE id = ?", w.next, fmt.Sprintf("u%d", w.next), id)
				}
			} else {
				err = tx.QueryRowContext(ctx, "UPDATE src SET n = $1, v = $2 WHERE id = (SELECT id FROM src WHERE id >= $3 ORDER BY id LIMIT 1) RETURNING n", w.next, fmt.Sprintf("u%d", w.next), 1+w.rnd.Int64N(w.maxID)).Scan(&n)
			}
			if err == sql.ErrNoRows {
				continue
			}
			if err != nil {
				return err
			}
			done[w.next*4+1]++
		default:
			var n int64
			var err error
			if w.maria {
				var id int64
				if err = tx.QueryRowContext(ctx, "SELECT id, n FROM src WHERE id >= ? ORDER BY id LIMIT 1 FOR UPDATE", 1+w.rnd.Int64N(w.maxID)).Scan(&id, &n); err == nil {
					_, err = tx.ExecContext(ctx, "DELETE FROM src WHERE id = ?", id)
				}
			} else {
				err = tx.QueryRowContext(ctx, "DELETE FROM src WHERE id = (SELECT id FROM src WHERE id >= $1 ORDER BY id LIMIT 1) RETURNING n", 1+w.rnd.Int64N(w.maxID)).Scan(&n)
			}
			if err == sql.ErrNoRows {
				continue
			}
			if err != nil {
				return err
			}
			done[n*4+2]++
		}
	}
	if w.rnd.IntN(10) == 0 {
		return tx.Rollback() // never seen downstream
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.mu.Lock()
	for k, v := range done {
		w.want[k] += v
	}
	w.mu.Unlock()
	w.commits.Add(1)
	return nil
}

// TestPostgresCDCApply replicates a PostgreSQL table into another
// PostgreSQL table through postgres_cdc and mode apply: the snapshot, then
// inserts, updates and deletes; the replica ends equal to the source. A
// dry-run before creates no slot and no publication.
func TestPostgresCDCApply(t *testing.T) {
	t.Parallel()
	_, url, db := logicalPostgres(t, 300)
	if _, err := db.Exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v TEXT, n BIGINT)"); err != nil {
		t.Fatal(err)
	}
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replicate", "cdc", "out", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": cdcConn("cdc", url, "kisflow_replica", true) + `---
kistype: conn
cname: out
type: postgres
key: replica
params:
  dsn: "` + url + `"
  mode: apply
`,
	})
	// dry-run checks the source and creates nothing.
	if r := Run(t, dir, time.Minute, "dry-run", dir); r.Code != 0 || !strings.Contains(r.Stdout, "connector cdc (type postgres_cdc, source): ok") {
		t.Fatalf("dry-run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var objects int
	if err := db.QueryRow("SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)").Scan(&objects); err != nil || objects != 0 {
		t.Fatalf("dry-run created %d slots and publications (err %v)", objects, err)
	}
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "info")
	replica := func() (map[int64]string, error) { return tableRows(db, rowText+"replica") }
	waitEqual(t, p, db, replica, time.Minute)
	var before string // the WAL's end before the changes
	if err := db.QueryRow("SELECT pg_current_wal_lsn()::text").Scan(&before); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO src VALUES (1001, 'new', 1001)",
		"UPDATE src SET v = 'changed', n = n + 1 WHERE id % 7 = 0",
		"DELETE FROM src WHERE id % 5 = 0",
		"UPDATE src SET id = 2001 WHERE id = 1", // the key changes
		"BEGIN; INSERT INTO src VALUES (3001, 'rolled back', 0); ROLLBACK",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	waitEqual(t, p, db, replica, time.Minute)
	var n int
	if err := db.QueryRow("SELECT count(*) FROM replica WHERE id = 3001").Scan(&n); err != nil || n != 0 {
		t.Fatalf("a rolled back insert reached the replica (count %d, err %v)", n, err)
	}
	// The committed position is reported to the server: the slot no
	// longer keeps the WAL of the changes.
	Eventually(t, 30*time.Second, "the slot's flush position passes the changes", func() bool {
		var passed bool
		err := db.QueryRow("SELECT confirmed_flush_lsn > $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'kisflow_replica'", before).Scan(&passed)
		return err == nil && passed
	})
	stopCleanly(t, p)
}

// TestPostgresCDCSIGKILL kills a job replicating a changing table with
// SIGKILL at random points, several times: the exactly-once replica (mode
// apply) ends equal to the source, and a log of the changes (insert mode,
// exactly-once, a second slot) and one in a Redis list (exactly-once, a
// third slot) hold each committed change once and no change of a
// transaction rolled back.
func TestPostgresCDCSIGKILL(t *testing.T) {
	t.Parallel()
	const initial = 2000
	_, url, db := logicalPostgres(t, initial)
	work := t.TempDir()
	redisAddr := testenv.Redis.Addr(t)
	rdb := redisClient(t, redisAddr)
	redisKey := testenv.Name("kisflow-cdc-")
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
		"conns.yml": cdcConn("cdc", url, "kisflow_kill_replica", true) + "---\n" + cdcConn("cdclog", url, "kisflow_kill_log", false) +
			"---\n" + cdcConn("cdcredis", url, "kisflow_kill_redis", false) + `---
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
	p.WaitFor("postgres_cdc reads the snapshot", time.Minute)
	Eventually(t, time.Minute, "some snapshot rows reach the replica", func() bool {
		got, err := replica()
		return err == nil && len(got) > 0
	})
	p.Kill()
	if got, err := replica(); err == nil && len(got) >= initial {
		t.Logf("the kill landed after the snapshot (%d rows)", len(got))
	}
	p = run()
	// The logs' slots exist (they read no snapshot) once all three stream.
	Eventually(t, time.Minute, "the three flows stream", func() bool {
		if p.Exited() {
			t.Fatalf("kisflow exited; output:\n%s", tail(p.Output(), 4000))
		}
		return strings.Count(p.Output(), "postgres_cdc streams changes") >= 3
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
	for _, l := range []struct {
		name string
		read func() (map[int64]int, error)
	}{{"SQLite log", logged}, {"Redis log", redisLogged}} {
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
	for _, l := range []struct {
		name string
		read func() (map[int64]int, error)
	}{{"SQLite log", logged}, {"Redis log", redisLogged}} {
		got, err := l.read()
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for k, c := range got {
			if want[k] != c {
				bad = append(bad, fmt.Sprintf("change %d/%d: %d times, want %d", k/4, k%4, c, want[k]))
			}
		}
		for k, c := range want {
			if _, ok := got[k]; !ok {
				bad = append(bad, fmt.Sprintf("change %d/%d: %d times, want %d", k/4, k%4, got[k], c))
			}
		}
		if len(bad) > 0 {
			t.Errorf("after %d SIGKILLs, the %s holds %d changes wrongly: %v", kills, l.name, len(bad), bad[:min(len(bad), 10)])
		}
	}
	t.Logf("%d changes logged once each after %d SIGKILLs", len(want), kills)
}

// TestPostgresCDCServerRestart restarts the source's PostgreSQL while a
// job replicates a changing table: the job reports the outage and goes on
// from where it was. The replica (mode apply) ends equal to the source, and
// a log of the changes (exactly-once, a slot with no snapshot) holds each
// committed change once: the reconnected stream neither skips nor repeats.
func TestPostgresCDCServerRestart(t *testing.T) {
	t.Parallel()
	srv, url, db := logicalPostgres(t, 500)
	work := t.TempDir()
	dir := Dir(t, map[string]string{
		"flow.yml":  cdcFlow("Replica", "cdc", "replica", "at-least-once"),
		"log.yml":   cdcFlow("Log", "cdclog", "log", "exactly-once"),
		"funcs.yml": passFunc,
		"conns.yml": cdcConn("cdc", url, "kisflow_restart", true) + "---\n" + cdcConn("cdclog", url, "kisflow_restart_log", false) + `---
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
		return strings.Count(p.Output(), "postgres_cdc streams changes") >= 2
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
	stopCleanly(t, p)
	got, err := logged()
	if err != nil {
		t.Fatal(err)
	}
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
	if len(bad) > 0 {
		t.Fatalf("across the server restart, the log holds %d changes wrongly: %v", len(bad), bad[:min(len(bad), 10)])
	}
	t.Logf("%d changes logged once each across the restart", len(want))
}
