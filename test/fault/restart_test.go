package fault

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the database/sql driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/amqp"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/connector/mqtt"
	"github.com/kisflow-go/kisflow/connector/nats"
	"github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// rig is a job's surroundings for an outage test: a source connector "in"
// and a sink connector "out", the service that goes down, a producer and a
// way to read the ids the sink holds.
type rig struct {
	// source and sink are the YAML of the connectors "in" and "out". Each
	// ends inside its params block, so a test may append params.
	source, sink string
	// exact: the delivery is exactly-once (the source's messages carry IDs
	// or positions), else at-least-once.
	exact bool
	// publish writes rows {"id": i} for i in [from, to] into the source,
	// with a client of its own.
	publish func(from, to int) error
	// down stops the service, keeps it down for d and starts it again;
	// it returns once the service accepts connections.
	down func(t *testing.T, d time.Duration)
	// ids counts the ids in the sink; an error while the sink's server
	// is down or restarting.
	ids func() (map[int64]int, error)
	// queued: the broker holds at most about this many messages for a
	// consumer and drops the rest (Mosquitto's max_queued_messages, for a
	// connected client too); 0 for no such limit.
	queued int
}

// idFlow is a config folder with the flow Ids: source "in" -> Keep (a
// calc) -> sink "out", with the given delivery and conns.
func idFlow(t testing.TB, delivery, conns string) string {
	t.Helper()
	return Dir(t, map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Ids
flows:
  - fname: Keep
stream:
  source: in
  sink: out
  delivery: ` + delivery + `
  batch_size: 50
  linger: 5ms
`,
		"funcs.yml": `kistype: func
fname: Keep
fmode: Calculate
calc:
  seen: true
keep: [id]
`,
		"conns.yml": conns,
	})
}

// sqliteSink is the YAML of an SQLite sink "out" (table out(id)) at path,
// and a reader of its ids that tolerates the job's concurrent writes.
func sqliteSink(path string) (string, func() (map[int64]int, error)) {
	yaml := fmt.Sprintf("kistype: conn\ncname: out\ntype: sqlite\nkey: out\nparams:\n  path: %s\n  create: \"true\"\n  columns: id\n", path)
	return yaml, func() (map[int64]int, error) {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return queryIDs(db, "SELECT id FROM out")
	}
}

// queryIDs counts each value of query's one integer column; a missing
// table is empty.
func queryIDs(db *sql.DB, query string) (map[int64]int, error) {
	// 5s was too short in CI for SQLite's file at a load average of 30.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "no such table") || strings.Contains(msg, "does not exist") || strings.Contains(msg, "doesn't exist") {
			return map[int64]int{}, nil
		}
		return nil, err
	}
	defer rows.Close()
	counts := map[int64]int{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		counts[v]++
	}
	return counts, rows.Err()
}

// produce starts the driver built from cfg, writes rows {"id": i} for i in
// [from, to] in slices of 500, and closes it.
func produce(build kisflow.DriverFactory, cfg *config.Conn, from, to int) error {
	d, err := build(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer d.Close(context.Background())
	for start := from; start <= to; start += 500 {
		var rows []any
		for i := start; i <= min(start+499, to); i++ {
			rows = append(rows, map[string]any{"id": i})
		}
		if err := d.(stream.Sink).Write(ctx, rows); err != nil {
			return fmt.Errorf("producer: %w", err)
		}
	}
	return nil
}

// outages are the systems whose server goes down under a running job.
var outages = []struct {
	name   string
	short  bool // part of the -short subset
	serial bool // one length at a time: three nodes booting at once time out
	rig    func(t *testing.T, dir string) rig
}{
	{"redis", true, false, func(t *testing.T, dir string) rig {
		srv := testenv.PrivateRedis(t)
		addr := fmt.Sprintf("127.0.0.1:%d", srv.Port())
		sink, ids := sqliteSink(filepath.Join(dir, "out.db"))
		return rig{
			source: fmt.Sprintf("kistype: conn\ncname: in\ntype: redis\naddrs: %s\nkey: ids\nparams:\n  mode: stream\n  group: g\n  block: 200ms\n", addr), sink: sink,
			exact: true,
			publish: func(from, to int) error {
				return produce(redis.New, &config.Conn{CName: "pub", Addrs: addr, Key: "ids", Params: map[string]string{"mode": "stream"}}, from, to)
			},
			down: srv.Down, ids: ids,
		}
	}},
	{"nats", true, false, func(t *testing.T, dir string) rig {
		srv := testenv.PrivateNATS(t)
		url := fmt.Sprintf("nats://127.0.0.1:%d", srv.Port())
		sink, ids := sqliteSink(filepath.Join(dir, "out.db"))
		r := rig{
			source: fmt.Sprintf("kistype: conn\ncname: in\ntype: nats\naddrs: %s\nkey: ids.all\nparams:\n  stream: IDS\n  durable: g\n", url), sink: sink,
			exact: true,
			publish: func(from, to int) error {
				return produce(nats.New, &config.Conn{CName: "pub", Addrs: url, Key: "ids.all", Params: map[string]string{"stream": "IDS", "create": "true"}}, from, to)
			},
			down: srv.Down, ids: ids,
		}
		return r
	}},
	{"rabbitmq", false, true, func(t *testing.T, dir string) rig {
		srv := testenv.PrivateRabbitMQ(t)
		url := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", srv.Port())
		sink, ids := sqliteSink(filepath.Join(dir, "out.db"))
		return rig{
			source: fmt.Sprintf("kistype: conn\ncname: in\ntype: rabbitmq\naddrs: %s\nkey: ids\nparams:\n  create: \"true\"\n", url), sink: sink,
			exact: true,
			publish: func(from, to int) error {
				return produce(amqp.New, &config.Conn{CName: "pub", Addrs: url, Key: "ids", Params: map[string]string{"create": "true"}}, from, to)
			},
			down: srv.Down, ids: ids,
		}
	}},
	{"mqtt", false, false, func(t *testing.T, dir string) rig {
		srv := testenv.PrivateMosquitto(t)
		url := fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())
		sink, ids := sqliteSink(filepath.Join(dir, "out.db"))
		// The job's persistent session exists before anything is
		// published, so the broker queues the rows for it.
		d, err := mqtt.New(&config.Conn{CName: "in", Addrs: url, Key: "ids/all", Params: map[string]string{"client_id": "fault-ids"}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		src, err := d.(stream.SourceDriver).OpenSource(ctx, stream.SourceOptions{Name: "Ids"})
		if err != nil {
			t.Fatal(err)
		}
		_ = src.Close(ctx)
		_ = d.Close(ctx)
		return rig{
			source: fmt.Sprintf("kistype: conn\ncname: in\ntype: mqtt\naddrs: %s\nkey: ids/all\nparams:\n  client_id: fault-ids\n", url), sink: sink,
			publish: func(from, to int) error {
				return produce(mqtt.New, &config.Conn{CName: "pub", Addrs: url, Key: "ids/all"}, from, to)
			},
			down: srv.Down, ids: ids, queued: 1000,
		}
	}},
	{"kafka", false, false, func(t *testing.T, dir string) rig {
		k := testenv.PrivateKafka(t, "ids")
		sink, ids := sqliteSink(filepath.Join(dir, "out.db"))
		return rig{
			source: fmt.Sprintf("kistype: conn\ncname: in\ntype: kafka\naddrs: %s\nkey: ids\nparams:\n  group: g\n", k.Addr()), sink: sink,
			exact: true,
			publish: func(from, to int) error {
				return produce(kafka.New, &config.Conn{CName: "pub", Addrs: k.Addr(), Key: "ids", Params: map[string]string{"key_field": "{id}"}}, from, to)
			},
			down: k.Down, ids: ids,
		}
	}},
	{"postgres-sink", false, false, func(t *testing.T, dir string) rig {
		srv := testenv.PrivatePostgres(t)
		dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
		return sqlSinkRig(t, dir, "pgx", dsn, fmt.Sprintf("type: postgres\nkey: ids_out\nparams:\n  dsn: %s\n", dsn), srv.Down)
	}},
	{"mariadb-sink", false, false, func(t *testing.T, dir string) rig {
		srv := testenv.PrivateMariaDB(t)
		dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("CREATE DATABASE fault"); err != nil {
			t.Fatal(err)
		}
		dsn += "fault"
		return sqlSinkRig(t, dir, "mysql", dsn, fmt.Sprintf("type: mysql\nkey: ids_out\nparams:\n  dsn: %s\n", dsn), srv.Down)
	}},
}

// rigOf is the rig builder of the named system in outages.
func rigOf(t *testing.T, name string) func(*testing.T, string) rig {
	t.Helper()
	for _, o := range outages {
		if o.name == name {
			return o.rig
		}
	}
	t.Fatalf("no system %q", name)
	return nil
}

// sqlSinkRig is a rig whose server is the sink's: a followed JSON lines
// file (the source, its position committed with the rows) into the table
// ids_out(id) of a private database server (out is a reserved word in
// MySQL).
func sqlSinkRig(t *testing.T, dir, driver, dsn, sinkYAML string, down func(*testing.T, time.Duration)) rig {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	input := filepath.Join(dir, "ids.jsonl")
	if err := os.WriteFile(input, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return rig{
		source: fmt.Sprintf("kistype: conn\ncname: in\ntype: file\nparams:\n  path: %s\n  follow: \"true\"\n  poll: 20ms\n", input),
		sink:   "kistype: conn\ncname: out\n" + sinkYAML + "  create: \"true\"\n  columns: id\n",
		exact:  true,
		publish: func(from, to int) error {
			f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			var b strings.Builder
			for i := from; i <= to; i++ {
				fmt.Fprintf(&b, "{\"id\":%d}\n", i)
			}
			if _, err := f.WriteString(b.String()); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
		down: down,
		ids:  func() (map[int64]int, error) { return queryIDs(db, "SELECT id FROM ids_out") },
	}
}

// outageLengths are how long the server stays down: -short keeps 1s for
// the short systems, the race detector 1s for all, 60s only in full runs.
func outageLengths() []time.Duration {
	if testing.Short() || raceEnabled {
		return []time.Duration{time.Second}
	}
	return []time.Duration{time.Second, 10 * time.Second, 60 * time.Second}
}

// TestOutage stops the server a running `kisflow run` reads from (or
// writes to) for 1s, 10s and 60s: the job must ride it out, not exit,
// and once the producer is done the sink holds every id (exactly once
// where the source's messages carry IDs, else at least once). It logs the
// reconnection time, from the server accepting connections again to the
// first row committed after it, as
//
//	reconnect system=NAME down=1s reconnect_ms=N first_publish_ms=P complete_ms=C rows_before=B
//
// (first_publish_ms: the producer's own first write after the restart,
// part of reconnect_ms when the job had read everything before the
// outage; complete_ms: until every id is in the sink.) Systems and
// lengths run in parallel, RabbitMQ's lengths one after another; with
// go test -parallel 24 the whole test takes about five minutes, most of
// it the outages themselves.
func TestOutage(t *testing.T) {
	t.Parallel()
	for _, sys := range outages {
		t.Run(sys.name, func(t *testing.T) {
			if testing.Short() && !sys.short {
				t.Skip("-short: only redis and nats, 1s")
			}
			t.Parallel()
			for _, down := range outageLengths() {
				t.Run(down.String(), func(t *testing.T) {
					if !sys.serial {
						t.Parallel()
					}
					outage(t, sys.name, down, sys.rig)
				})
			}
		})
	}
}

func outage(t *testing.T, name string, down time.Duration, build func(*testing.T, string) rig) {
	// The second part stays below 1000 rows: Mosquitto queues at most
	// 1000 messages (max_queued_messages) for a session, and drops the
	// rest; with a queue limit, the second part is published once the
	// first is in the sink, as the job may still be reading it after the
	// outage (Mosquitto sends 20 messages at a time).
	const half, n = 1000, 1800
	work := t.TempDir()
	r := build(t, work)
	delivery := "at-least-once"
	if r.exact {
		delivery = "exactly-once"
	}
	dir := idFlow(t, delivery, r.source+"---\n"+r.sink)
	if err := r.publish(1, half); err != nil {
		t.Fatal(err)
	}
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "state"), "--progress", "never", "--log-level", "info")
	count := func() int { return total(r.ids()) }
	waitProgress(t, p, time.Minute, 0, count, "before the job stored its first row")
	r.down(t, down)
	up := time.Now()
	at := count()
	if p.Exited() {
		t.Fatalf("kisflow run exited (code %d) during a %v outage of %s; output:\n%s", exitCode(p.err), down, name, tail(p.Output(), 4000))
	}
	// One row first: how long the producer itself needs to reconnect is
	// part of the figure when the job had nothing left to read.
	if err := r.publish(half+1, half+1); err != nil {
		t.Fatal(err)
	}
	published := time.Since(up)
	rest := make(chan error, 1)
	publishRest := func() { go func() { rest <- r.publish(half+2, n) }() }
	if r.queued == 0 {
		publishRest()
	}
	waitProgress(t, p, 3*time.Minute, at, count, fmt.Sprintf("after a %v outage of %s, while waiting for a row to be committed", down, name))
	reconnect := time.Since(up)
	if r.queued > 0 {
		waitAllIDs(t, p, 3*time.Minute, r.ids, half+1, fmt.Sprintf("after a %v outage of %s, before the second part", down, name))
		publishRest()
	}

	if err := <-rest; err != nil {
		t.Fatal(err)
	}
	waitAllIDs(t, p, 3*time.Minute, r.ids, n, fmt.Sprintf("after a %v outage of %s", down, name))
	t.Logf("reconnect system=%s down=%v reconnect_ms=%d first_publish_ms=%d complete_ms=%d rows_before=%d",
		name, down, reconnect.Milliseconds(), published.Milliseconds(), time.Since(up).Milliseconds(), at)
	stopCleanly(t, p)
	c, err := r.ids()
	if err != nil {
		t.Fatal(err)
	}
	if bad := Check(c, n, r.exact); len(bad) > 0 {
		t.Fatalf("%s after a %v outage of %s: %v", delivery, down, name, bad)
	}
}
