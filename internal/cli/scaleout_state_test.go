package cli

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// tally counts the messages of each key in the scale-out test's child.
var tally = kisflow.NewValueState[int]("tally")

// keyRow is a message of the scale-out test: an id and its key, and, as
// CountKey commits it, the count of the key's messages so far.
type keyRow struct {
	ID  int    `json:"id"`
	Key string `json:"k"`
	N   int    `json:"n"`
}

// countKey counts the messages of each key in keyed state and commits
// each message with its key's count so far.
func countKey(ctx context.Context, f kisflow.Flow, rows []*keyRow) error {
	for _, r := range rows {
		n, _, err := tally.Get(f, r.Key)
		if err != nil {
			return err
		}
		if err := tally.Set(f, r.Key, n+1); err != nil {
			return err
		}
		if err := f.CommitRow(keyRow{ID: r.ID, Key: r.Key, N: n + 1}); err != nil {
			return err
		}
	}
	return nil
}

// TestKeyedStateFollowsPartitions runs two processes of a Go flow that
// counts messages per key in keyed state, on one Kafka consumer group of a
// topic of 4 partitions (records keyed by the flow's stream key), exactly
// once into PostgreSQL, and SIGKILLs one mid-stream. The survivor takes its
// partitions over, and with them the state of their keys: every message
// is committed once with the count an uninterrupted process gives it (its
// rank among its key's messages), and the state holds each key's total.
func TestKeyedStateFollowsPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess scale-out test")
	}
	t.Parallel()
	const n, keys = 3000, 40
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	pub, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "events", Params: map[string]string{"key_field": "{k}"}})
	if err != nil {
		t.Fatal(err)
	}
	k := pub.(*kafka.Kafka)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close(context.Background()) })
	var rows []any
	want := map[int]int{} // id -> the count an uninterrupted run gives it
	total := map[string]int{}
	for i := 1; i <= n; i++ {
		key := fmt.Sprintf("k%02d", i*7%keys)
		total[key]++
		want[i] = total[key]
		rows = append(rows, map[string]any{"id": i, "k": key})
	}
	for start := 0; start < n; start += 500 {
		if err := k.Write(context.Background(), rows[start:min(start+500, n)]); err != nil {
			t.Fatal(err)
		}
	}

	dsn := testenv.PostgresDatabase(t)
	dir := t.TempDir()
	files := map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Tally\nflows:\n  - fname: Slow\n  - fname: CountKey\n" +
			"stream:\n  source: in\n  sink: db\n  key: k\n  workers: 2\n  delivery: exactly-once\n  batch_size: 10\n  linger: 5ms\n",
		"funcs.yml": "kistype: func\nfname: Slow\nfmode: Calculate\n---\nkistype: func\nfname: CountKey\nfmode: Calculate\n",
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: in\ntype: kafka\naddrs: %s\nkey: events\nparams:\n  group: tally\n  heartbeat: 100ms\n  session_timeout: 6s\n  rebalance_timeout: 5s\n", addrs) +
			"---\nkistype: conn\ncname: db\ntype: postgres\nkey: out\nparams:\n  dsn: " + dsn + "\n  create: \"true\"\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := func(state string) (*exec.Cmd, *strings.Builder) {
		args := fmt.Sprintf(`["run", %q, "--state", %q, "--log-level", "info"]`, dir, filepath.Join(dir, state))
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "KISFLOW_TEST_CHILD="+args)
		var out strings.Builder
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c, &out
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func() int {
		var all int
		_ = db.QueryRow("SELECT count(*) FROM out").Scan(&all)
		return all
	}
	a, aOut := start("a")
	b, bOut := start("b")
	defer func() {
		if t.Failed() {
			t.Logf("killed process output:\n%s\nsurvivor output:\n%s", tailOf(aOut.String()), tailOf(bOut.String()))
		}
	}()
	// Both work (each owns partitions), then one is killed mid-stream.
	deadline := time.Now().Add(90 * time.Second)
	for count() < n/4 {
		if time.Now().After(deadline) {
			t.Fatalf("no progress: %d rows", count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = a.Process.Signal(syscall.SIGKILL)
	_ = a.Wait()
	atKill := count()
	for count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("after killing one process the other stored %d of %d rows", count(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = b.Process.Signal(syscall.SIGTERM)
	if err := b.Wait(); err != nil {
		t.Fatalf("survivor: %v", err)
	}
	if !strings.Contains(aOut.String(), "partitions assigned") || !strings.Contains(bOut.String(), "partitions assigned") {
		t.Fatalf("a process never owned a partition: the test did not scale out")
	}

	got := map[int]int{}
	rs, err := db.Query("SELECT id, n FROM out")
	if err != nil {
		t.Fatal(err)
	}
	all := 0
	for rs.Next() {
		var id, c int
		if err := rs.Scan(&id, &c); err != nil {
			t.Fatal(err)
		}
		all++
		got[id] = c
	}
	rs.Close()
	if all != n || len(got) != n {
		t.Fatalf("%d rows for %d ids, want each of %d ids once", all, len(got), n)
	}
	wrong := 0
	for id, c := range want {
		if got[id] != c {
			if wrong++; wrong <= 5 {
				t.Errorf("id %d: count %d, want %d (as one uninterrupted process counts it)", id, got[id], c)
			}
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d rows carry a count other than an uninterrupted run's", wrong, n)
	}
	state := map[string]int{}
	rs, err = db.Query("SELECT skey, value, spart FROM kisflow_state WHERE name = 'tally'")
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var key, part string
		var v int
		if err := rs.Scan(&key, &v, &part); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(part, "events/") {
			t.Errorf("state of key %s: partition %q, want events/N", key, part)
		}
		state[key] = v
	}
	rs.Close()
	for key, c := range total {
		if state[key] != c {
			t.Errorf("state of key %s: %d, want %d", key, state[key], c)
		}
	}
	t.Logf("%d of %d rows stored when one process was killed; the survivor finished with the same counts as one uninterrupted process", atKill, n)
}

func tailOf(s string) string {
	if len(s) > 6000 {
		return s[len(s)-6000:]
	}
	return s
}
