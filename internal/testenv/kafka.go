package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaCommittedIDs reads topic from the start as a read-committed
// consumer until it goes quiet (three empty polls), and counts each row's
// "id": what committed transactions wrote, with repeats counted.
func KafkaCommittedIDs(t testing.TB, addrs, topic string) map[int]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(addrs, ",")...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[int]int{}
	for idle := 0; idle < 3; {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		if fetches.NumRecords() == 0 {
			idle++
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var row struct {
				ID int `json:"id"`
			}
			if err := json.Unmarshal(r.Value, &row); err != nil {
				t.Fatalf("record %q: %v", r.Value, err)
			}
			seen[row.ID]++
		})
	}
	return seen
}

// Kafka is a kfake cluster running in the test's process that keeps its
// data in a folder and listens on a fixed port, so that Down can stop it
// and bring the same cluster back, as a broker restart would.
type Kafka struct {
	dir    string
	port   int
	topics []string
	c      *kfake.Cluster
}

// PrivateKafka starts a one-broker kfake cluster with topics of 4
// partitions each; it is closed when the test ends.
func PrivateKafka(t *testing.T, topics ...string) *Kafka {
	t.Helper()
	k := &Kafka{dir: t.TempDir(), port: freePort(t), topics: topics}
	k.start(t)
	t.Cleanup(func() { k.c.Close() })
	return k
}

// Addr is the broker's host:port.
func (k *Kafka) Addr() string { return fmt.Sprintf("127.0.0.1:%d", k.port) }

func (k *Kafka) start(t *testing.T) {
	t.Helper()
	var err error
	// The port may still be held for a moment after Close.
	for range 50 {
		k.c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, k.topics...), kfake.DataDir(k.dir), kfake.Ports(k.port))
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kfake on port %d: %v", k.port, err)
}

// Down closes the cluster, keeps it closed for d, and starts it again from
// its data folder on the same port.
func (k *Kafka) Down(t *testing.T, d time.Duration) {
	t.Helper()
	k.c.Close()
	time.Sleep(d)
	k.start(t)
}
