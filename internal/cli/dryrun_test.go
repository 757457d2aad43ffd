package cli

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestDryRun runs dry-run over connectors of every bundled type against the
// machine's services: those whose table, stream, topic, queue, file or
// address is there pass; those missing it, of the wrong type, or on a
// closed port fail, each named with the reason. Nothing is consumed,
// acknowledged or written: queues, streams and tables hold what they held.
func TestDryRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgURL := testenv.PostgresDatabase(t)
	myDSN := testenv.MySQLDatabase(t)
	redisAddr := testenv.Redis.Addr(t)
	natsURL := testenv.NATS.Addr(t)
	amqpURL := testenv.RabbitMQ.Addr(t)
	mqttURL := testenv.MQTT.Addr(t)
	topic := testenv.Name("dry")
	kf := testenv.PrivateKafka(t, topic)
	// A cluster whose brokers create topics on first use.
	kfAuto, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"auto.create.topics.enable": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	defer kfAuto.Close()

	// PostgreSQL: a table with two rows. MariaDB: an empty table.
	pg, err := sql.Open("pgx", pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if _, err := pg.ExecContext(ctx, "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b')"); err != nil {
		t.Fatal(err)
	}
	my, err := sql.Open("mysql", myDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	if _, err := my.ExecContext(ctx, "CREATE TABLE m (id BIGINT PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}

	// Redis: a stream of three entries, and a string where a stream is wanted.
	rstream, rstring := testenv.Name("dry-stream-"), testenv.Name("dry-string-")
	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr})
	defer rc.Close()
	t.Cleanup(func() { rc.Del(context.Background(), rstream, rstring) })
	for i := range 3 {
		if err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: rstream, Values: []any{"data", fmt.Sprintf(`{"id":%d}`, i)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Set(ctx, rstring, "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}

	// NATS: a stream holding two messages.
	nstream := testenv.Name("DRY")
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: nstream, Subjects: []string{nstream + ".>"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), nstream) })
	for i := range 2 {
		if _, err := js.Publish(ctx, nstream+".in", fmt.Appendf(nil, `{"id":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}

	// RabbitMQ: a queue holding three messages.
	queue := testenv.Name("dry-q-")
	ac, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ach, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ach.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ach.QueueDelete(queue, false, false, false) })
	for i := range 3 {
		if err := ach.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{Body: fmt.Appendf(nil, `{"id":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}

	// Kafka: one record in the topic.
	kc, err := kgo.NewClient(kgo.SeedBrokers(kf.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if err := kc.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(`{"id":1}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// A port in use, and one nothing listens on.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	closed := closedPort(t)
	// A server that takes connections and never answers.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rows.jsonl"), []byte(`{"id":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conns := map[string]string{
		// Good.
		"pg":     "type: postgres\nkey: t\nparams:\n  dsn: " + pgURL + "\n  poll_column: id\n",
		"pgnew":  "type: postgres\nkey: created_later\nparams:\n  dsn: " + pgURL + "\n  create: \"true\"\n",
		"my":     "type: mysql\nkey: m\nparams:\n  dsn: " + myDSN + "\n  columns: id, v\n",
		"rds":    "type: redis\naddrs: " + redisAddr + "\nkey: " + rstream + "\nparams:\n  mode: stream\n",
		"rdsh":   "type: redis\naddrs: " + redisAddr + "\nkey: 'h:{id}'\n",
		"nts":    "type: nats\naddrs: " + natsURL + "\nkey: " + nstream + ".in\nparams:\n  stream: " + nstream + "\n",
		"amq":    "type: rabbitmq\naddrs: " + amqpURL + "\nkey: " + queue + "\n",
		"amqx":   "type: rabbitmq\naddrs: " + amqpURL + "\nkey: anything\nparams:\n  exchange: amq.direct\n",
		"mq":     "type: mqtt\naddrs: " + mqttURL + "\nkey: dry/x\n",
		"kf":     "type: kafka\naddrs: " + kf.Addr() + "\nkey: " + topic + "\n",
		"rows":   "type: file\nparams:\n  path: rows.jsonl\n",
		"out":    "type: file\nparams:\n  path: out/sub/rows.jsonl\n",
		"ingest": "type: http\naddrs: 127.0.0.1:0\n",
		"kfauto": "type: kafka\naddrs: " + kfAuto.ListenAddrs()[0] + "\nkey: " + topic + "-later\n",
		// Bad.
		"pgmissing": "type: postgres\nkey: nosuchtable\nparams:\n  dsn: " + pgURL + "\n  poll_column: id\n",
		"pgcols":    "type: postgres\nkey: t\nparams:\n  dsn: " + pgURL + "\n  columns: id, nope\n  upsert_key: nokey\n  poll_column: nopoll\n",
		"pghang":    "type: postgres\nkey: t\nparams:\n  dsn: postgres://postgres@" + hang.Addr().String() + "/test?sslmode=disable\n  timeout: 3s\n",
		"mybadpw":   "type: mysql\nkey: m\nparams:\n  dsn: " + strings.Replace(myDSN, "root@", "root:Wr0ngPassword@", 1) + "\n",
		"rdshbad":   "type: redis\naddrs: " + redisAddr + "\nkey: " + rstring + "\nparams:\n  mode: hash\n",
		"ntssubj":   "type: nats\naddrs: " + natsURL + "\nkey: other.in\nparams:\n  stream: " + nstream + "\n",
		"amqxbad":   "type: rabbitmq\naddrs: " + amqpURL + "\nkey: anything\nparams:\n  exchange: " + queue + "-nosuch-exchange\n",
		"outbad":    "type: file\nparams:\n  path: rows.jsonl/out.jsonl\n",
		"rdsbad":    "type: redis\naddrs: " + redisAddr + "\nkey: " + rstring + "\nparams:\n  mode: stream\n",
		"rdsdown":   fmt.Sprintf("type: redis\naddrs: 127.0.0.1:%d\nkey: k\nparams:\n  mode: stream\n", closed),
		"ntsbad":    "type: nats\naddrs: " + natsURL + "\nkey: nosuch.in\nparams:\n  stream: " + nstream + "_NOSUCH\n",
		"amqbad":    "type: rabbitmq\naddrs: " + amqpURL + "\nkey: " + queue + "-nosuch\n",
		"kfbad":     "type: kafka\naddrs: " + kf.Addr() + "\nkey: " + topic + "-nosuch\n",
		"rowsbad":   "type: file\nparams:\n  path: nosuch.jsonl\n",
		"ingestbad": "type: http\naddrs: " + busy.Addr().String() + "\n",
	}
	flows := map[string][2]string{ // flow: source, sink
		"GoodPG": {"pg", "pgnew"}, "GoodRedis": {"rds", "rdsh"}, "GoodNATS": {"nts", ""}, "GoodAMQP": {"amq", "amqx"},
		"GoodMQTT": {"mq", "my"}, "GoodKafka": {"kf", "kfauto"}, "GoodFile": {"rows", "out"}, "GoodHTTP": {"ingest", ""},
		"BadPG": {"pgmissing", "pgcols"}, "BadRedis": {"rdsbad", "rdshbad"}, "BadRedisDown": {"rdsdown", ""}, "BadNATS": {"ntsbad", ""},
		"BadNATSSubject": {"ntssubj", ""}, "BadAMQP": {"amqbad", "amqxbad"}, "BadKafka": {"kfbad", ""}, "BadFile": {"rowsbad", "outbad"},
		"BadHTTP": {"ingestbad", ""}, "BadMySQL": {"rows", "mybadpw"}, "BadHang": {"rows", "pghang"},
	}
	var yml strings.Builder
	yml.WriteString("kistype: func\nfname: Mark\nfmode: Calculate\ncalc:\n  seen: 'true'\n")
	for name, body := range conns {
		fmt.Fprintf(&yml, "---\nkistype: conn\ncname: %s\n%s", name, body)
	}
	var good []string
	for name, c := range flows {
		fmt.Fprintf(&yml, "---\nkistype: flow\nstatus: 1\nflow_name: %s\nflows:\n  - fname: Mark\nstream:\n  source: %s\n", name, c[0])
		if c[1] != "" {
			fmt.Fprintf(&yml, "  sink: %s\n", c[1])
		}
		if strings.HasPrefix(name, "Good") {
			good = append(good, "--flow", name)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "all.yml"), []byte(yml.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := run(t, append([]string{"dry-run", dir, "--timeout", "60s"}, good...)...)
	if code != ExitOK {
		t.Fatalf("good flows: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, c := range []string{"pg", "pgnew", "my", "rds", "rdsh", "nts", "amq", "amqx", "mq", "kf", "kfauto", "rows", "out", "ingest"} {
		if !strings.Contains(out, "connector "+c+" (type ") {
			t.Errorf("no line for connector %s:\n%s", c, out)
		}
	}
	if strings.Contains(out, "missing") || strings.Contains(out, "bad (type") {
		t.Errorf("--flow checked connectors of other flows:\n%s", out)
	}

	code, out, stderr = run(t, "dry-run", dir, "--timeout", "60s")
	t.Logf("dry-run:\n%s%s", out, stderr)
	if code != ExitProblem {
		t.Fatalf("all flows: exit %d, want %d\n%s\n%s", code, ExitProblem, out, stderr)
	}
	want := map[string]string{
		"pg": ": ok", "kf": ": ok", "ingest": ": ok",
		"pgmissing": "table nosuchtable does not exist",
		"pgcols":    "table t has no column nope, nokey, nopoll (it has id, v)",
		"pghang":    "FAILED: cannot start: ",
		"mybadpw":   "Access denied",
		"rdshbad":   "holds a string, not a hash",
		"ntssubj":   "stream " + nstream + " takes subjects " + nstream + ".>, not other.in",
		"amqxbad":   "exchange " + queue + "-nosuch-exchange does not exist",
		"outbad":    "rows.jsonl is not a folder",
		"kfauto":    ": ok",
		"rdsbad":    "holds a string, not a stream",
		"rdsdown":   "connection refused",
		"ntsbad":    "stream " + nstream + "_NOSUCH does not exist",
		"amqbad":    "queue " + queue + "-nosuch does not exist",
		"kfbad":     "topic " + topic + "-nosuch does not exist",
		"rowsbad":   "nosuch.jsonl does not exist",
		"ingestbad": "cannot listen on " + busy.Addr().String(),
	}
	lines := strings.Split(out, "\n")
	for c, w := range want {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, "connector "+c+" (") {
				found = true
				if !strings.Contains(l, w) {
					t.Errorf("connector %s: %q lacks %q", c, l, w)
				}
			}
		}
		if !found {
			t.Errorf("no line for connector %s:\n%s", c, out)
		}
	}
	if !strings.Contains(stderr, "15 of 29 connector(s) failed the check") {
		t.Errorf("no count of failures:\n%s", stderr)
	}

	// --timeout bounds a start that gets no answer.
	code, out, _ = run(t, "dry-run", dir, "--flow", "BadHang", "--timeout", "1s")
	if code != ExitProblem || !strings.Contains(out, "connector pghang (type postgres, sink): FAILED: no answer within 1s: ") {
		t.Errorf("--timeout 1s: exit %d\n%s", code, out)
	}

	// Nothing was consumed, acknowledged, written or created.
	var n int
	if err := pg.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Errorf("postgres table t: %d rows, %v", n, err)
	}
	if err := pg.QueryRowContext(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'created_later'").Scan(&n); err != nil || n != 0 {
		t.Errorf("the table a sink creates on first write was created: %d, %v", n, err)
	}
	if err := my.QueryRowContext(ctx, "SELECT count(*) FROM m").Scan(&n); err != nil || n != 0 {
		t.Errorf("mysql table m: %d rows, %v", n, err)
	}
	if l, err := rc.XLen(ctx, rstream).Result(); err != nil || l != 3 {
		t.Errorf("redis stream: %d entries, %v", l, err)
	}
	if g, err := rc.XInfoGroups(ctx, rstream).Result(); err != nil || len(g) != 0 {
		t.Errorf("redis stream has consumer groups %v, %v", g, err)
	}
	if typ, _ := rc.Type(ctx, "h:1").Result(); typ != "none" {
		t.Errorf("redis hash sink wrote h:1 (%s)", typ)
	}
	st, err := js.Stream(ctx, nstream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 2 || info.State.Consumers != 0 {
		t.Errorf("nats stream: %+v, %v", info.State, err)
	}
	if q, err := ach.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil || q.Messages != 3 || q.Consumers != 0 {
		t.Errorf("rabbitmq queue: %+v, %v", q, err)
	}
	if ch2, err := ac.Channel(); err == nil {
		if _, err := ch2.QueueDeclarePassive(queue+"-nosuch", true, false, false, false, nil); err == nil {
			t.Error("the check declared the missing queue")
		}
	}
	groups, err := kadm.NewClient(kc).ListGroups(ctx)
	if err != nil || len(groups) != 0 {
		t.Errorf("kafka consumer groups %v, %v", groups.Groups(), err)
	}
	ka, err := kgo.NewClient(kgo.SeedBrokers(kfAuto.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	if tds, err := kadm.NewClient(ka).ListTopics(ctx); err != nil || len(tds) != 0 {
		t.Errorf("the check created kafka topics %v, %v", tds.Names(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("the file sink's folder was created: %v", err)
	}
}

// closedPort returns a local TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}
