package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// seen counts the messages of each key in the timer scale-out test's child.
var seen = kisflow.NewValueState[int]("seen")

// quiet is the timer of the timer scale-out test: an hour of event time
// after a key's last message.
var quiet = kisflow.NewTimer("quiet")

// armRow is a message of the timer scale-out test: a key and its event
// time (Unix milliseconds); Close marks the records that only move the
// watermark.
type armRow struct {
	Key   string `json:"k"`
	TS    int64  `json:"ts"`
	Close bool   `json:"close"`
}

// firedRow is what the timer's callback commits: the key and the count of
// its messages when the timer fired.
type firedRow struct {
	Key string `json:"k"`
	N   int    `json:"n"`
}

// armKey counts each key's messages and moves its timer to an hour after
// the message.
func armKey(ctx context.Context, f kisflow.Flow, rows []*armRow) error {
	for _, r := range rows {
		if r.Close {
			continue
		}
		n, _, err := seen.Get(f, r.Key)
		if err != nil {
			return err
		}
		if err := seen.Set(f, r.Key, n+1); err != nil {
			return err
		}
		if err := quiet.SetEventTime(f, r.Key, time.UnixMilli(r.TS).Add(time.Hour)); err != nil {
			return err
		}
	}
	return nil
}

// firedKey commits the key and its count.
func firedKey(ctx context.Context, f kisflow.Flow, t kisflow.FiredTimer) error {
	n, _, err := seen.Get(f, t.Key)
	if err != nil {
		return err
	}
	return f.CommitRow(firedRow{Key: t.Key, N: n})
}

// TestTimersFollowPartitions runs two processes of a Go flow that keeps a
// count and an event-time timer per key (an hour after the key's last
// message), on one Kafka consumer group of a topic of 4 partitions, two
// workers each, exactly once into PostgreSQL, and SIGKILLs one mid-stream.
// Once every data record was consumed, a record per partition 3 hours
// later moves the watermark past every timer: each key's timer fires
// once, in the survivor, with the key's total count, as in one
// uninterrupted process.
func TestTimersFollowPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess scale-out test")
	}
	t.Parallel()
	const n, keys = 3000, 40
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "arms"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	pub, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "arms", Params: map[string]string{"key_field": "{k}"}})
	if err != nil {
		t.Fatal(err)
	}
	k := pub.(*kafka.Kafka)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close(context.Background()) })
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic("arms"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	admin := kadm.NewClient(adm)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	total := map[string]int{}
	var rows []any
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("k%02d", i*7%keys)
		total[key]++
		rows = append(rows, armRow{Key: key, TS: base + int64(i)*100})
	}
	for start := 0; start < n; start += 500 {
		if err := k.Write(context.Background(), rows[start:min(start+500, n)]); err != nil {
			t.Fatal(err)
		}
	}

	dsn := testenv.PostgresDatabase(t)
	dir := t.TempDir()
	files := map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Quiet\nflows:\n  - fname: Slow\n  - fname: ArmKey\n" +
			"stream:\n  source: in\n  sink: db\n  key: k\n  workers: 2\n  delivery: exactly-once\n  batch_size: 10\n  linger: 5ms\n  time_field: ts\n",
		"funcs.yml": "kistype: func\nfname: Slow\nfmode: Calculate\n---\nkistype: func\nfname: ArmKey\nfmode: Calculate\n",
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: in\ntype: kafka\naddrs: %s\nkey: arms\nparams:\n  group: quiet\n  heartbeat: 100ms\n  session_timeout: 6s\n  rebalance_timeout: 5s\n", addrs) +
			"---\nkistype: conn\ncname: db\ntype: postgres\nkey: fired\nparams:\n  dsn: " + dsn + "\n  create: \"true\"\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, atKill, wait := killedPair(t, func(state string) *exec.Cmd {
		args := fmt.Sprintf(`["run", %q, "--state", %q, "--log-level", "info", "--progress", "never"]`, dir, filepath.Join(dir, state))
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "KISFLOW_TEST_CHILD="+args)
		return c
	}, admin, "quiet", n)
	// A record 3 hours later in each partition (a key of each) moves the
	// watermark, the least over the partitions, past every timer.
	for p := int32(0); p < 4; p++ {
		key := fmt.Sprintf("close%d", p)
		v, err := json.Marshal(armRow{Key: key, TS: base + 3*time.Hour.Milliseconds(), Close: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := adm.ProduceSync(context.Background(), &kgo.Record{Key: []byte(key), Value: v, Partition: p}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() int {
		var all int
		_ = db.QueryRow("SELECT count(*) FROM fired").Scan(&all)
		return all
	}
	last, since := -1, time.Now()
	wait("every timer fired", func() bool {
		s := stored()
		if s != last {
			last, since = s, time.Now()
		}
		return s >= keys && time.Since(since) > time.Second || time.Since(since) > 15*time.Second
	})
	_ = b.Process.Signal(syscall.SIGTERM)
	if err := b.Wait(); err != nil {
		t.Fatalf("survivor: %v", err)
	}
	rs, err := db.Query("SELECT k, n FROM fired")
	if err != nil {
		t.Fatal(err)
	}
	fired := map[string]int{}
	for rs.Next() {
		var key string
		var c int
		if err := rs.Scan(&key, &c); err != nil {
			t.Fatal(err)
		}
		if fired[key]++; fired[key] > 1 {
			t.Errorf("timer of key %s fired %d times", key, fired[key])
		}
		if c != total[key] {
			t.Errorf("timer of key %s fired with count %d, want %d", key, c, total[key])
		}
	}
	rs.Close()
	for key := range total {
		if fired[key] == 0 {
			t.Errorf("timer of key %s never fired", key)
		}
	}
	t.Logf("%d of %d records consumed when one process was killed; %d timers fired once each", atKill, n, len(fired))
}
