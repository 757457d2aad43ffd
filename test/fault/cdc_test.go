package fault

import (
	"context"
	"database/sql"
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
	changes atomic.Int64 // committed
	limit   atomic.Int64 // stop once this many changes are committed (0: no limit)
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

// finished reports whether the writer reached its limit.
func (w *changeWriter) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *changeWriter) run(pause time.Duration) {
	defer close(w.done)
	for {
		if l := w.limit.Load(); l > 0 && w.changes.Load() >= l {
			return
		}
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
	n := 0
	for k, v := range done {
		w.want[k] += v
		n += v
	}
	w.mu.Unlock()
	w.commits.Add(1)
	w.changes.Add(int64(n))
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
	// The flow's position cannot move while it runs (an exactly-once run
	// takes no lock: the slot tells).
	if r := Run(t, dir, time.Minute, "positions", "set", dir, "Replicate", "--latest", "--state", filepath.Join(dir, "state")); r.Code == 0 || !strings.Contains(r.Stderr, "replication slot kisflow_replica is being read") {
		t.Fatalf("positions set while the flow runs: exit %d, want a refusal naming the slot\n%s", r.Code, r.Stderr)
	}
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

// TestPostgresCDCSIGKILL is the SIGKILL scenario (runCDCKill) on
// PostgreSQL: four slots, two read with a snapshot, one of them into a
// PostgreSQL replica at-least-once.
func TestPostgresCDCSIGKILL(t *testing.T) {
	t.Parallel()
	const initial = 2000
	_, url, db := logicalPostgres(t, initial)
	runCDCKill(t, cdcKill{system: "postgres_cdc", db: db, initial: initial,
		replica: cdcConn("cdc", url, "kisflow_kill_replica", true), log: cdcConn("cdclog", url, "kisflow_kill_log", false),
		redis: cdcConn("cdcredis", url, "kisflow_kill_redis", false),
		pg: cdcConn("cdcpg", url, "kisflow_kill_pg", true) + `---
kistype: conn
cname: pgreplica
type: postgres
key: pg_replica
params:
  dsn: "` + url + `"
  mode: apply
`})
}

// TestPostgresCDCServerRestart is the restart scenario (runCDCRestart) on
// PostgreSQL.
func TestPostgresCDCServerRestart(t *testing.T) {
	t.Parallel()
	srv, url, db := logicalPostgres(t, 500)
	runCDCRestart(t, cdcRestart{system: "postgres_cdc", srv: srv, db: db, initial: 500,
		replica: cdcConn("cdc", url, "kisflow_restart", true), log: cdcConn("cdclog", url, "kisflow_restart_log", false)})
}
