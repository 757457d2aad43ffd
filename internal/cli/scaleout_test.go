package cli

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/connector/nats"
	"github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

type broker struct {
	name string
	// conn is the YAML of the source connector "in" for a fresh stream.
	conn func(t *testing.T) (yaml string, publish func(rows []any))
}

var brokers = []broker{
	{"KafkaGroup", func(t *testing.T) (string, func([]any)) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "events"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		addrs := strings.Join(c.ListenAddrs(), ",")
		yaml := fmt.Sprintf("kistype: conn\ncname: in\ntype: kafka\naddrs: %s\nkey: events\nparams:\n  group: shared\n  heartbeat: 100ms\n  session_timeout: 6s\n  rebalance_timeout: 5s\n", addrs)
		d, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "events", Params: map[string]string{"key_field": "{id}"}})
		if err != nil {
			t.Fatal(err)
		}
		k := d.(*kafka.Kafka)
		if err := k.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k.Close(context.Background()) })
		return yaml, func(rows []any) {
			if err := k.Write(context.Background(), rows); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"RedisStreamsGroup", func(t *testing.T) (string, func([]any)) {
		addr := testenv.Redis.Addr(t)
		key := testenv.Name("kisflow-scale-")
		yaml := fmt.Sprintf("kistype: conn\ncname: in\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: stream\n  group: shared\n  claim_idle: 1s\n  block: 200ms\n", addr, key)
		d, err := redis.New(&config.Conn{CName: "pub", Addrs: addr, Key: key, Params: map[string]string{"mode": "stream"}})
		if err != nil {
			t.Fatal(err)
		}
		r := d.(*redis.Redis)
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.Client().Del(context.Background(), key)
			_ = r.Close(context.Background())
		})
		return yaml, func(rows []any) {
			if err := r.Write(context.Background(), rows); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"JetStreamDurable", func(t *testing.T) (string, func([]any)) {
		url := testenv.NATS.Addr(t)
		name := testenv.Name("kf")
		subject, streamName := "kisflow.scale."+name, "KF_"+name
		yaml := fmt.Sprintf("kistype: conn\ncname: in\ntype: nats\naddrs: %s\nkey: %s\nparams:\n  stream: %s\n  durable: shared\n  ack_wait: 1s\n  prefetch: \"200\"\n", url, subject, streamName)
		d, err := nats.New(&config.Conn{CName: "pub", Addrs: url, Key: subject, Params: map[string]string{"stream": streamName, "create": "true"}})
		if err != nil {
			t.Fatal(err)
		}
		n := d.(*nats.NATS)
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = n.JetStream().DeleteStream(context.Background(), streamName)
			_ = n.Close(context.Background())
		})
		return yaml, func(rows []any) {
			for start := 0; start < len(rows); start += 500 {
				if err := n.Write(context.Background(), rows[start:min(start+500, len(rows))]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}},
}

var writtenRE = regexp.MustCompile(`(\d+) written`)

// TestScaleOut runs two kisflow processes on one consumer group of each
// broker with an exactly-once PostgreSQL sink, kills one mid-stream, and
// checks that together they stored every id exactly once.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess scale-out test")
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			const n = 2000
			dsn := testenv.PostgresDatabase(t)
			connYAML, publish := b.conn(t)
			dir := t.TempDir()
			files := map[string]string{
				"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Scale\nflows:\n  - fname: Slow\n  - fname: Keep\n" +
					"stream:\n  source: in\n  sink: db\n  delivery: exactly-once\n  batch_size: 10\n  linger: 5ms\n",
				"funcs.yml": "kistype: func\nfname: Slow\nfmode: Calculate\n---\nkistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n",
				"conns.yml": connYAML + "---\nkistype: conn\ncname: db\ntype: postgres\nkey: out\nparams:\n  dsn: " + dsn + "\n  create: \"true\"\n  columns: id\n",
			}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var rows []any
			for i := 1; i <= n; i++ {
				rows = append(rows, map[string]any{"id": i})
			}
			publish(rows)

			start := func(state string) (*exec.Cmd, *strings.Builder) {
				args := fmt.Sprintf(`["run", %q, "--state", %q, "--log-level", "error"]`, dir, filepath.Join(dir, state))
				c := exec.Command(os.Args[0], "-test.run=^$")
				c.Env = append(os.Environ(), "KISFLOW_TEST_CHILD="+args)
				var out strings.Builder
				c.Stdout, c.Stderr = &out, &out
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				return c, &out
			}
			a, aOut := start("a")
			bProc, bOut := start("b")
			defer func() {
				if t.Failed() {
					_ = bProc.Process.Kill()
					t.Logf("killed process output:\n%s\nsurvivor output:\n%s", aOut.String(), bOut.String())
				}
			}()
			db, err := sql.Open("pgx", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			count := func() (all, distinct int) {
				_ = db.QueryRow("SELECT count(*), count(DISTINCT id) FROM out").Scan(&all, &distinct)
				return
			}
			// Let both work, then kill one in the middle of the stream.
			deadline := time.Now().Add(60 * time.Second)
			for all, _ := count(); all < n/5; all, _ = count() {
				if time.Now().After(deadline) {
					t.Fatalf("no progress: %d rows", all)
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = a.Process.Signal(syscall.SIGKILL)
			_ = a.Wait()
			atKill, _ := count()
			for all, _ := count(); all < n; all, _ = count() {
				if time.Now().After(deadline) {
					t.Fatalf("after killing one process the other stored %d of %d rows", all, n)
				}
				time.Sleep(50 * time.Millisecond)
			}
			_ = bProc.Process.Signal(syscall.SIGTERM)
			if err := bProc.Wait(); err != nil {
				t.Fatalf("survivor: %v\n%s", err, bOut.String())
			}
			all, distinct := count()
			if all != n || distinct != n {
				t.Fatalf("table holds %d rows, %d distinct; want each of %d ids exactly once\n%s", all, distinct, n, bOut.String())
			}
			m := writtenRE.FindStringSubmatch(bOut.String())
			if m == nil {
				t.Fatalf("no summary from the survivor:\n%s", bOut.String())
			}
			if w, _ := strconv.Atoi(m[1]); w >= n || w <= n-atKill-1 {
				t.Fatalf("the survivor wrote %d rows; the killed one had stored part of %d at its death", w, atKill)
			}
			t.Logf("%d rows stored when one process was killed; the survivor wrote %d; every id exactly once", atKill, n-atKill)
		})
	}
}
