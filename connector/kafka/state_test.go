package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// eosConn starts a transactional connector (input -> output) with params
// added, and opens its source for the stream S, so that it can commit.
func eosConn(t *testing.T, addrs string, more map[string]string) (*Kafka, stream.Source) {
	t.Helper()
	params := map[string]string{"transactional_id": "tx-state", "output_topic": "output", "heartbeat": "100ms",
		"session_timeout": "6s", "rebalance_timeout": "5s", "transaction_timeout": "5s"}
	for k, v := range more {
		params[k] = v
	}
	k := start(t, addrs, "input", params)
	src, err := k.OpenSource(context.Background(), stream.SourceOptions{Name: "S", StateKey: "S@kafka:x"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return k, src
}

// loadKafka returns the stream's loaded state as name/key/field -> value.
func loadKafka(t *testing.T, k *Kafka, streamName string) map[string]string {
	t.Helper()
	got := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.LoadState(ctx, streamName, func(c stream.StateChange) error {
		got[c.Name+"/"+c.Key+"/"+c.Field] = string(c.Value)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// Keyed state commits to a compacted changelog topic, created when
// missing, in the transaction of the batch; it is loaded back last value
// winning (the topic is not compacted in between), without tombstoned or
// expired entries nor another stream's; a transaction left open by a
// crashed process neither holds the load back nor shows in it; a fenced
// commit expecting a position fails.
func TestCommitStateThroughAChangelogTopic(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "input", "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := strings.Join(c.ListenAddrs(), ",")
	ctx := context.Background()
	pub := start(t, addrs, "input", nil)
	if err := pub.Write(ctx, []any{map[string]any{"id": 1}, map[string]any{"id": 2}}); err != nil {
		t.Fatal(err)
	}

	k, src := eosConn(t, addrs, nil)
	topic := k.stateTopic("S@kafka:x")
	if !strings.HasPrefix(topic, "kisflow-state-S-") {
		t.Fatalf("state topic %q", topic)
	}
	if got := loadKafka(t, k, "S@kafka:x"); len(got) != 0 {
		t.Fatalf("state before any commit: %v", got)
	}
	adm := kadm.NewClient(pub.producer)
	if tds, _ := adm.ListTopics(ctx, topic); tds.Has(topic) {
		t.Fatal("loading no state created the topic")
	}

	msgs := readN(t, src, 2)
	past, future := time.Now().Add(-time.Hour).UnixMilli(), time.Now().Add(time.Hour).UnixMilli()
	var changes []stream.StateChange
	for i := range 300 {
		changes = append(changes, stream.StateChange{Name: "n", Key: fmt.Sprint(i), Value: []byte(fmt.Sprint(i))})
	}
	changes = append(changes,
		stream.StateChange{Name: "m", Key: `a"b`, Field: `"f"`, Value: []byte(`{"x":1}`)},
		stream.StateChange{Name: "m", Key: `a"b`, Field: `"g"`, Value: []byte(`2`)},
		stream.StateChange{Name: "ttl", Key: "k", Value: []byte(`3`), ExpiresAt: future},
		stream.StateChange{Name: "old", Key: "k", Value: []byte(`4`), ExpiresAt: past})
	if err := k.CommitState(ctx, "S@kafka:x", "", nil, []any{map[string]any{"id": 10}}, changes); err != nil {
		t.Fatal(err)
	}
	if err := src.Ack(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	// A load while the session is open (a partition assigned later) does
	// not fence the session: its next commit succeeds.
	if got := loadKafka(t, k, "S@kafka:x"); len(got) != 303 {
		t.Fatalf("%d entries loaded after the first commit, want 303", len(got))
	}
	// Update one, delete one (a tombstone), delete and put back another.
	if err := k.CommitState(ctx, "S@kafka:x", "", nil, nil, []stream.StateChange{
		{Name: "n", Key: "5", Value: []byte("50")},
		{Name: "m", Key: `a"b`, Field: `"g"`, Deleted: true},
		{Name: "n", Key: "7", Deleted: true},
		{Name: "n", Key: "7", Value: []byte("70")},
	}); err != nil {
		t.Fatal(err)
	}
	// A fenced commit expecting a position: Kafka keeps none.
	err = k.CommitStateAfter(ctx, "S@kafka:x", "p1", "", nil, nil, []stream.StateChange{{Name: "n", Key: "6", Value: []byte("60")}})
	var fe *stream.FenceError
	if !errors.As(err, &fe) || !stream.IsFatal(err) {
		t.Fatalf("a commit fenced on a position: %v", err)
	}
	if err := k.CommitStateAfter(ctx, "S@kafka:x", "", "", nil, nil, []stream.StateChange{{Name: "n", Key: "8", Value: []byte("80")}}); err != nil {
		t.Fatal(err)
	}

	// The topic is compacted, with one partition.
	cfgs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	policy := ""
	for _, rc := range cfgs {
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				policy = *c.Value
			}
		}
	}
	if policy != "compact" {
		t.Fatalf("state topic cleanup.policy %q, want compact", policy)
	}

	// Another stream's entry in the same topic, and a transaction a
	// crashed process left open under the connector's transactional ID.
	raw, err := kgo.NewClient(kgo.SeedBrokers(addrs), kgo.TransactionalID("tx-state"), kgo.TransactionTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	open := k.stateRecords("S@kafka:x", []stream.StateChange{{Name: "n", Key: "9", Value: []byte("999")}})
	other := k.stateRecords("T", []stream.StateChange{{Name: "n", Key: "1", Value: []byte("1")}})
	other[0].Topic = topic
	open = append(open, other...)
	if err := raw.ProduceSync(ctx, open...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// ... the process dies here, its transaction open.

	fresh := start(t, addrs, "input", map[string]string{"transactional_id": "tx-state", "output_topic": "output", "transaction_timeout": "5s"})
	began := time.Now()
	got := loadKafka(t, fresh, "S@kafka:x")
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("the load took %v: it waited for the open transaction to time out", d)
	}
	want := map[string]string{"n/5/": "50", "n/6/": "6", "n/7/": "70", "n/8/": "80", "n/9/": "9", `m/a"b/"f"`: `{"x":1}`, "ttl/k/": "3"}
	for key, v := range want {
		if got[key] != v {
			t.Errorf("entry %s = %q, want %q", key, got[key], v)
		}
	}
	if len(got) != 302 {
		t.Errorf("loaded %d entries, want 302 (300 n, m/f, ttl)", len(got))
	}
	// A broker added to addrs changes the state key, not the group's
	// offsets: the state goes with the offsets.
	if again := loadKafka(t, fresh, "S@kafka:127.0.0.1:1,x"); len(again) != len(got) || again["n/5/"] != "50" {
		t.Errorf("under a state key with other addrs, %d entries load, want %d", len(again), len(got))
	}
	for _, gone := range []string{`m/a"b/"g"`, "old/k/"} {
		if _, ok := got[gone]; ok {
			t.Errorf("entry %s was loaded", gone)
		}
	}
}

// A shared state_topic keeps each stream's entries apart, and the output
// of a batch with state commits once.
func TestStateTopicParamIsSharedByStreams(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := strings.Join(c.ListenAddrs(), ",")
	ctx := context.Background()
	k, _ := eosConn(t, addrs, map[string]string{"state_topic": "my-state"})
	if k.stateTopic("anything") != "my-state" {
		t.Fatalf("state_topic ignored: %q", k.stateTopic("anything"))
	}
	if err := k.CommitState(ctx, "S@kafka:x", "", nil, []any{map[string]any{"id": 1}}, []stream.StateChange{{Name: "a", Key: "k", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	// Another flow's state in the same topic, through a transaction of
	// the same producer.
	k.mu.Lock()
	k.sessions["U"] = k.sessions["S@kafka:x"]
	k.mu.Unlock()
	if err := k.CommitState(ctx, "U", "", nil, nil, []stream.StateChange{{Name: "a", Key: "k", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if got := loadKafka(t, k, "S@kafka:x"); len(got) != 1 || got["a/k/"] != "1" {
		t.Fatalf("stream S loads %v", got)
	}
	if got := loadKafka(t, k, "U"); len(got) != 1 || got["a/k/"] != "2" {
		t.Fatalf("stream U loads %v", got)
	}
}

// Each entry keeps its source partition, and LoadPartitionState gives back
// the entries of the partitions asked for ("" for those without one).
func TestKafkaLoadPartitionState(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	k, _ := eosConn(t, strings.Join(c.ListenAddrs(), ","), nil)
	if err := k.CommitState(ctx, "S@kafka:x", "", nil, nil, []stream.StateChange{
		{Name: "n", Key: "a", Value: []byte("1"), Partition: "input/0"},
		{Name: "n", Key: "b", Value: []byte("2"), Partition: "input/1"},
		{Name: "w", Value: []byte("3")},
	}); err != nil {
		t.Fatal(err)
	}
	load := func(parts []string) map[string]string {
		got := map[string]string{}
		if err := k.LoadPartitionState(ctx, "S@kafka:x", parts, func(c stream.StateChange) error {
			got[c.Name+"/"+c.Key+"@"+c.Partition] = string(c.Value)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := load([]string{"input/0", ""}); len(got) != 2 || got["n/a@input/0"] != "1" || got["w/@"] != "3" {
		t.Fatalf("partitions input/0 and none: %v", got)
	}
	if got := load([]string{"input/1"}); len(got) != 1 || got["n/b@input/1"] != "2" {
		t.Fatalf("partition input/1: %v", got)
	}
	if got := load([]string{}); len(got) != 0 {
		t.Fatalf("no partitions: %v", got)
	}
	// The session still commits after those loads.
	if err := k.CommitState(ctx, "S@kafka:x", "", nil, nil, []stream.StateChange{{Name: "n", Key: "a", Value: []byte("4"), Partition: "input/0"}}); err != nil {
		t.Fatalf("commit after loads: %v", err)
	}
	if got := load([]string{"input/0"}); got["n/a@input/0"] != "4" {
		t.Fatalf("after the update: %v", got)
	}
}

// state_topic without transactional_id is a configuration error.
func TestStateTopicNeedsTransactionalID(t *testing.T) {
	t.Parallel()
	_, err := New(&config.Conn{CName: "k", Type: Type, Addrs: "127.0.0.1:1", Key: "in", Params: map[string]string{"state_topic": "s"}})
	if err == nil || !strings.Contains(err.Error(), "needs transactional_id") {
		t.Fatalf("state_topic alone: %v", err)
	}
}

// readN reads n messages from src.
func readN(t *testing.T, src stream.Source, n int) []*stream.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*stream.Message
	for len(out) < n {
		msgs, err := src.Read(ctx, n-len(out))
		if err != nil {
			t.Fatalf("read %d of %d: %v", len(out), n, err)
		}
		out = append(out, msgs...)
	}
	return out
}
