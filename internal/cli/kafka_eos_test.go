package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// groupMembers is how many members the group has, as the broker tells.
func groupMembers(t *testing.T, addrs, group string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(addrs, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := groups[group]
	if !ok || g.Err != nil {
		t.Fatalf("describe group %s: %v", group, g.Err)
	}
	t.Logf("group %s at the stall: state %s, members %d", group, g.State, len(g.Members))
	return len(g.Members)
}

// TestKafkaExactlyOnceSurvivesSIGKILL kills a Kafka-to-Kafka exactly-once
// job at random points; the output topic, read committed, holds each id once.
func TestKafkaExactlyOnceSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := strings.Join(c.ListenAddrs(), ",")
	d, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "input", Params: map[string]string{"key_field": "{id}"}})
	if err != nil {
		t.Fatal(err)
	}
	pub := d.(*kafka.Kafka)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())
	const n = 3000
	var rows []any
	for i := 1; i <= n; i++ {
		rows = append(rows, map[string]any{"id": i})
	}
	if err := pub.Write(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: ETL\nflows:\n  - fname: Slow\n  - fname: Keep\nstream:\n  source: k\n  sink: k\n  delivery: exactly-once\n  batch_size: 20\n  linger: 5ms\n",
		"funcs.yml": "kistype: func\nfname: Slow\nfmode: Calculate\n---\nkistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n",
		"conn.yml":  fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  transactional_id: etl\n  output_topic: output\n  key_field: \"{id}\"\n  heartbeat: 100ms\n  session_timeout: 6s\n  rebalance_timeout: 5s\n  transaction_timeout: 5s\n", addrs),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	const kills = 3
	for k := 0; k <= kills; k++ {
		cmd := child(t, dir)
		if k < kills {
			time.Sleep(time.Duration(300+r.IntN(700)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			continue
		}
		// The last run goes on until everything is in the output. A
		// process that makes no progress for 25s is replaced, as a
		// supervisor would, but only for the known cause: kfake never
		// expires a member whose JoinGroup answer it could not deliver (its
		// process was killed while joining), so that dead member keeps its
		// partitions until another rebalance. Real Kafka expires it after
		// the session timeout. A stall with no dead member in the group
		// fails the test. Exactly-once must hold across the restart too.
		deadline := time.Now().Add(150 * time.Second)
		last, lastAt, replaced := -1, time.Now(), 0
		for {
			seen := testenv.KafkaCommittedIDs(t, addrs, "output")
			if len(seen) == n {
				break
			}
			if len(seen) != last {
				last, lastAt = len(seen), time.Now()
			} else if time.Since(lastAt) > 25*time.Second {
				if members := groupMembers(t, addrs, "ETL"); members <= 1 {
					_ = cmd.Process.Kill()
					t.Fatalf("the run stalled with %d of %d ids and %d member(s) in the group: not the known kfake defect", len(seen), n, members)
				}
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				cmd = child(t, dir)
				replaced++
				lastAt = time.Now()
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("after %d SIGKILLs (and %d replaced stalled runs) the output holds %d of %d ids", kills, replaced, len(seen), n)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if replaced > 0 {
			t.Logf("replaced %d stalled run(s): a killed process's member held partitions in kfake's group", replaced)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("last run: %v", err)
		}
	}
	seen := testenv.KafkaCommittedIDs(t, addrs, "output")
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("id %d is %d times in the output after %d SIGKILLs", id, c, kills)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d ids in the output", len(seen), n)
	}
	t.Logf("%d SIGKILLs: each of %d ids exactly once in the output", kills, n)
}
