package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestConnectorExamples runs each examples/connectors folder as a user
// would (kisflow run), one after another from the same current folder and
// with the default state, against the real service, until the consumer
// stored every order; then stops it like Ctrl-C and checks each order
// arrived exactly once. The examples share flow names (ProduceOrders,
// ConsumeOrders): each keeps its positions in its own folder's .kisflow.
func TestConnectorExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every connector example against its service")
	}
	setup := map[string]func(t *testing.T, prefix string){
		// Each removes what its run leaves on the shared service.
		"redis": func(t *testing.T, prefix string) {
			addr := testenv.Redis.Addr(t)
			t.Setenv("KISFLOW_REDIS_ADDR", addr)
			t.Cleanup(func() {
				cl := goredis.NewClient(&goredis.Options{Addr: addr})
				defer cl.Close()
				cl.Del(context.Background(), prefix+"_orders")
			})
		},
		"nats": func(t *testing.T, prefix string) {
			url := testenv.NATS.Addr(t)
			t.Setenv("KISFLOW_NATS_URL", url)
			t.Cleanup(func() {
				nc, err := natsgo.Connect(url)
				if err != nil {
					return
				}
				defer nc.Close()
				if js, err := jetstream.New(nc); err == nil {
					_ = js.DeleteStream(context.Background(), prefix)
				}
			})
		},
		"rabbitmq": func(t *testing.T, prefix string) {
			url := testenv.RabbitMQ.Addr(t)
			t.Setenv("KISFLOW_AMQP_URL", url)
			t.Cleanup(func() {
				conn, err := amqp.Dial(url)
				if err != nil {
					return
				}
				defer conn.Close()
				if ch, err := conn.Channel(); err == nil {
					_, _ = ch.QueueDelete(prefix+"_orders", false, false, false)
				}
			})
		},
		"mqtt":     func(t *testing.T, _ string) { t.Setenv("KISFLOW_MQTT_URL", testenv.MQTT.Addr(t)) },
		"postgres": func(t *testing.T, _ string) { t.Setenv("KISFLOW_PG_URL", testenv.PostgresDatabase(t)) },
		"mysql":    func(t *testing.T, _ string) { t.Setenv("KISFLOW_MYSQL_DSN", testenv.MySQLDatabase(t)) },
		"kafka": func(t *testing.T, prefix string) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, prefix+"_orders"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			t.Setenv("KISFLOW_KAFKA_BROKERS", strings.Join(c.ListenAddrs(), ","))
		},
	}
	dirs, err := filepath.Glob("../../examples/connectors/*")
	if err != nil || len(dirs) != len(setup) {
		t.Fatalf("examples: %v %v", dirs, err)
	}
	// Copies of the examples, so that their state (DIR/.kisflow) stays
	// out of the source tree; all run from one current folder.
	for i, d := range dirs {
		if dirs[i], err = filepath.Abs(d); err != nil {
			t.Fatal(err)
		}
	}
	cwd := t.TempDir()
	t.Chdir(cwd)
	for _, dir := range dirs {
		sys := filepath.Base(dir)
		dir = copyDir(t, dir, filepath.Join(cwd, "examples", sys))
		t.Run(sys, func(t *testing.T) {
			prefix := testenv.Name("kf_")
			tmp := t.TempDir()
			db := filepath.Join(tmp, "consumed.db")
			t.Setenv("KISFLOW_EXAMPLE_PREFIX", prefix)
			t.Setenv("KISFLOW_EXAMPLE_DB", db)
			setup[sys](t, prefix)

			reg := kisflow.NewRegistry()
			if err := all.Install(reg); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out, errOut strings.Builder
			done := make(chan int, 1)
			go func() {
				done <- MainContext(ctx, reg, []string{"run", filepath.Join("examples", sys)}, &out, &errOut)
			}()
			deadline := time.Now().Add(60 * time.Second)
			for {
				if n, _ := countIfExists(db); n >= 1000 {
					break
				}
				select {
				case code := <-done:
					t.Fatalf("run ended early with %d\n%s\n%s", code, out.String(), errOut.String())
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					n, _ := countIfExists(db)
					t.Fatalf("%d of 1000 orders consumed after 60s\n%s", n, errOut.String())
				}
			}
			cancel()
			if code := <-done; code != ExitOK {
				t.Fatalf("exit %d after stop\n%s\n%s", code, out.String(), errOut.String())
			}
			n, distinct := tableCount(t, db, "orders", "id")
			if n != 1000 || distinct != 1000 {
				t.Fatalf("consumed %d orders, %d distinct; want 1000 exactly once", n, distinct)
			}
			if !strings.Contains(out.String(), "flow ProduceOrders: no position: reading from the start\n") ||
				!strings.Contains(out.String(), "flow ProduceOrders: 1000 rows read") {
				t.Fatalf("summary:\n%s", out.String())
			}
			consume := "flow ConsumeOrders: no position stored: source " + sys + "-orders keeps its own (a consumer group) or has none\n"
			if sys == "postgres" || sys == "mysql" { // a poller: the sink keeps its position
				consume = "flow ConsumeOrders: no position: reading from the start\n"
			}
			if !strings.Contains(out.String(), consume) {
				t.Fatalf("the consumer does not say where it starts, want %q:\n%s", consume, out.String())
			}
			if _, err := os.Stat(filepath.Join(dir, ".kisflow", "checkpoints.db")); err != nil {
				t.Fatalf("the example's state is not in its folder: %v", err)
			}
		})
	}
}

// copyDir copies the files of folder src into dst and returns dst.
func copyDir(t *testing.T, src, dst string) string {
	t.Helper()
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func countIfExists(path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRow("SELECT count(*) FROM orders").Scan(&n)
	return n, err
}

// TestRunWindowsExample runs examples/windows as a user would and checks
// the SQLite table against revenue per user per minute computed here from
// the same file, and the dead letters against the orders that came after
// their minute closed (30 s of lateness).
func TestRunWindowsExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"flow.yml", "funcs.yml", "conns.yml", "orders.jsonl"} {
		data, err := os.ReadFile(filepath.Join("../../examples/windows", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The reference: a late order's minute ended at or before the largest
	// time seen before it, less the lateness.
	type key struct {
		user  int64
		start string
	}
	type agg struct {
		n   int64
		sum float64
	}
	want := map[key]agg{}
	late := 0
	data, err := os.ReadFile(filepath.Join(dir, "orders.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var maxTS time.Time
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var o struct {
			TS     time.Time `json:"ts"`
			User   int64     `json:"user_id"`
			Amount float64   `json:"amount"`
		}
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatal(err)
		}
		start := o.TS.Truncate(time.Minute)
		if !maxTS.IsZero() && !start.Add(time.Minute).After(maxTS.Add(-30*time.Second)) {
			late++
			continue
		}
		if o.TS.After(maxTS) {
			maxTS = o.TS
		}
		k := key{o.User, start.UTC().Format(time.RFC3339)}
		a := want[k]
		a.n++
		a.sum += o.Amount
		want[k] = a
	}
	if late != 3 {
		t.Fatalf("the example's input has %d late orders, want 3", late)
	}
	code, out, stderr := run(t, "run", dir)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if s := fmt.Sprintf("%d written, %d dead-lettered", len(want), late); !strings.Contains(out, s) {
		t.Fatalf("summary does not say %q:\n%s", s, out)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "revenue.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT user_id, window_start, window_end, orders, revenue FROM revenue_per_minute")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var k key
		var end string
		var a agg
		if err := rows.Scan(&k.user, &k.start, &end, &a.n, &a.sum); err != nil {
			t.Fatal(err)
		}
		got++
		w, ok := want[k]
		start, _ := time.Parse(time.RFC3339, k.start)
		switch {
		case !ok:
			t.Errorf("unexpected row %+v", k)
		case w.n != a.n || math.Abs(w.sum-a.sum) > 1e-6:
			t.Errorf("%+v: %d orders, revenue %v; want %d, %v", k, a.n, a.sum, w.n, w.sum)
		case end != start.Add(time.Minute).Format(time.RFC3339):
			t.Errorf("%+v: window_end %s", k, end)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != len(want) {
		t.Errorf("%d rows, want %d", got, len(want))
	}
	dead, err := os.ReadFile(filepath.Join(dir, ".kisflow", "dead-letter", "Revenue.jsonl"))
	if err != nil || strings.Count(string(dead), "late row: its window already closed") != late {
		t.Errorf("dead letters (%v):\n%s", err, dead)
	}
}

// TestOrdersExampleTests runs the tests written beside examples/orders as
// the README shows them: kisflow test examples/orders passes, touching no
// file of the example (the source and the SQLite sink are doubles).
func TestOrdersExampleTests(t *testing.T) {
	t.Parallel()
	code, out, errs := run(t, "test", "../../examples/orders")
	if code != 0 || !strings.Contains(out+errs, "ok: 2 test(s) passed") {
		t.Fatalf("kisflow test examples/orders: exit %d\n%s%s", code, out, errs)
	}
}
