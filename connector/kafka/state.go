package kafka

// Keyed state of an exactly-once Kafka-to-Kafka flow (stream.StateSink).
//
// Why a changelog topic, as Kafka Streams does, and not a database: the
// state must commit atomically with the batch, and the only transaction
// such a flow has is Kafka's, which covers the output records and the
// consumed offsets. A database would need a second transaction and a
// two-phase protocol between them; a record in a topic of the same cluster
// joins the Kafka transaction like the output does. So each batch's state
// changes are produced to a compacted topic in the transaction that
// produces its rows and commits its offsets: a crash before the commit
// aborts all three, a commit makes all three visible to read-committed
// readers. At start the state is read back from that topic, from its start
// to its last stable offset, last record per entry winning; compaction
// only bounds the topic's size (the loader does not rely on it: a topic
// never compacted loads the same state, only slower).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kisflow-go/kisflow/stream"
)

// expiresHeader carries a state entry's expiry (Unix milliseconds) on its
// changelog record; absent: never.
const expiresHeader = "kisflow-expires-at"

// partitionHeader carries a state entry's source partition
// (StateChange.Partition) on its changelog record; absent: none.
const partitionHeader = "kisflow-partition"

// unsafeTopic matches what a topic name cannot hold.
var unsafeTopic = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// stateOwner is what a stream's keyed state belongs to: the consumer
// group and the topic whose committed offsets it goes with (the group is
// the param group, else the flow's name, the state key up to its @). Not
// the whole state key, which holds the seed brokers: a broker added to
// addrs keeps the group's offsets, so it must keep the state too.
func (k *Kafka) stateOwner(streamName string) string {
	group := k.group
	if group == "" {
		group, _, _ = strings.Cut(streamName, "@")
	}
	return group + "/" + k.cfg.Key
}

// stateTopic is the changelog topic of the stream's keyed state: the param
// state_topic, else kisflow-state-GROUP-HASH, GROUP the consumer group
// made a legal topic name and HASH a hash of stateOwner, so that flows
// reading other topics keep apart.
func (k *Kafka) stateTopic(streamName string) string {
	if k.stateTopicName != "" {
		return k.stateTopicName
	}
	owner := k.stateOwner(streamName)
	group, _, _ := strings.Cut(owner, "/")
	group = unsafeTopic.ReplaceAllString(group, "_")
	if len(group) > 180 {
		group = group[:180]
	}
	sum := sha256.Sum256([]byte(owner))
	return "kisflow-state-" + group + "-" + hex.EncodeToString(sum[:6])
}

// stateRecordKey is the changelog record key of an entry: the JSON array
// [owner, name, key, field], owner the stateOwner. Compaction keeps the
// last record per key, and the loader skips the records of other owners
// (a state_topic shared by several flows).
func stateRecordKey(owner string, c stream.StateChange) []byte {
	b, _ := gojson.Marshal([4]string{owner, c.Name, c.Key, c.Field}) // strings always marshal
	return b
}

// stateRecords are the changelog records of changes: the entry's JSON
// value, or a tombstone (a null value) for a deletion.
func (k *Kafka) stateRecords(streamName string, changes []stream.StateChange) []*kgo.Record {
	topic, owner := k.stateTopic(streamName), k.stateOwner(streamName)
	recs := make([]*kgo.Record, len(changes))
	for i, c := range changes {
		r := &kgo.Record{Topic: topic, Key: stateRecordKey(owner, c)}
		if !c.Deleted {
			r.Value = c.Value
			if r.Value == nil {
				r.Value = []byte{} // nil would be a tombstone
			}
			if c.ExpiresAt > 0 {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: expiresHeader, Value: []byte(strconv.FormatInt(c.ExpiresAt, 10))})
			}
			if c.Partition != "" {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: partitionHeader, Value: []byte(c.Partition)})
			}
		}
		recs[i] = r
	}
	return recs
}

// ensureStateTopic creates the stream's changelog topic, compacted, when
// it does not exist yet; once per topic and process.
func (k *Kafka) ensureStateTopic(ctx context.Context, streamName string) error {
	topic := k.stateTopic(streamName)
	k.mu.Lock()
	done := k.stateTopics[topic]
	k.mu.Unlock()
	if done {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	adm := kadm.NewClient(k.producer)
	compact := "compact"
	res, err := adm.CreateTopic(cctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafka connector %q: create the keyed state topic %s (create it with cleanup.policy=compact, or name another with state_topic): %w", k.cfg.CName, topic, err)
	}
	k.mu.Lock()
	k.stateTopics[topic] = true
	k.mu.Unlock()
	return nil
}

// CommitState is CommitBatch with the batch's keyed state changes,
// produced to the stream's changelog topic (state_topic) in the same Kafka
// transaction as the rows and the consumed offsets; see stream.StateSink.
func (k *Kafka) CommitState(ctx context.Context, streamName, _ string, _ []string, rows []any, state []stream.StateChange) error {
	if len(state) > 0 {
		if k.txnID == "" {
			return k.commit(ctx, streamName, rows, nil) // fails: no session
		}
		if err := k.ensureStateTopic(ctx, streamName); err != nil {
			return err
		}
	}
	return k.commit(ctx, streamName, rows, k.stateRecords(streamName, state))
}

// CommitStateAfter is CommitState: a Kafka transaction is fenced by its
// transactional ID instead (a newer process with the same ID makes an
// older one's commit fail), and the position is always "", so a commit
// expecting another position fails with a *stream.FenceError. See
// stream.StateSink.
func (k *Kafka) CommitStateAfter(ctx context.Context, streamName, from, position string, ids []string, rows []any, state []stream.StateChange) error {
	if from != "" {
		return stream.Fatal(&stream.FenceError{Stream: streamName, Found: "", Expected: from})
	}
	return k.CommitState(ctx, streamName, position, ids, rows, state)
}

// LoadState reads the stream's changelog topic from its start to its last
// stable offset (what committed transactions wrote, read-committed) and
// calls fn with the last value of each entry that is neither deleted (a
// tombstone) nor expired. A topic that does not exist holds no state.
//
// Before it reads, it initialises the transactional ID once (which aborts
// the open transaction of a process that crashed with this ID), so the
// last stable offset is not held back by it, and a commit that was under
// way is complete. See stream.StateLoader.
func (k *Kafka) LoadState(ctx context.Context, streamName string, fn func(stream.StateChange) error) error {
	return k.loadState(ctx, streamName, nil, fn)
}

// LoadPartitionState is LoadState for the entries whose source partition
// is one of partitions ("" for those without one): the changelog is read
// whole and the others are skipped. See stream.PartitionStateLoader.
func (k *Kafka) LoadPartitionState(ctx context.Context, streamName string, partitions []string, fn func(stream.StateChange) error) error {
	if partitions == nil {
		partitions = []string{}
	}
	return k.loadState(ctx, streamName, partitions, fn)
}

// loadState loads the entries of partitions, or all of them when
// partitions is nil.
func (k *Kafka) loadState(ctx context.Context, streamName string, partitions []string, fn func(stream.StateChange) error) error {
	if k.txnID == "" {
		return nil // not exactly-once from Kafka: CommitBatch says why
	}
	topic, owner := k.stateTopic(streamName), k.stateOwner(streamName)
	fail := func(err error) error {
		return fmt.Errorf("kafka connector %q: load keyed state from %s: %w", k.cfg.CName, topic, err)
	}
	// Metadata and offsets are asked of the brokers directly: the client's
	// cached metadata may not know a topic this process just created.
	id, leaders, err := k.topicMeta(ctx, topic)
	if err != nil {
		return fail(err)
	}
	if leaders == nil {
		return nil // no topic: no state
	}
	if err := k.fenceTransactions(ctx, streamName); err != nil {
		return fail(err)
	}
	type entry struct {
		value     []byte
		expires   int64
		partition string
	}
	last := map[string]entry{}
	for p, leader := range leaders {
		start, err := k.listOffset(ctx, topic, p, leader, -2)
		if err != nil {
			return fail(fmt.Errorf("partition %d: start offset: %w", p, err))
		}
		end, err := k.listOffset(ctx, topic, p, leader, -1) // read committed: the last stable offset
		if err != nil {
			return fail(fmt.Errorf("partition %d: last stable offset: %w", p, err))
		}
		err = k.readPartition(ctx, id, topic, p, leader, start, end, func(r *kgo.Record) {
			e := entry{value: r.Value}
			for _, h := range r.Headers {
				switch h.Key {
				case expiresHeader:
					e.expires, _ = strconv.ParseInt(string(h.Value), 10, 64)
				case partitionHeader:
					e.partition = string(h.Value)
				}
			}
			last[string(r.Key)] = e
		})
		if err != nil {
			return fail(fmt.Errorf("partition %d: %w", p, err))
		}
	}
	now := time.Now().UnixMilli()
	for key, e := range last {
		if e.value == nil || e.expires > 0 && e.expires <= now {
			continue // deleted, or expired
		}
		if partitions != nil && !slices.Contains(partitions, e.partition) {
			continue
		}
		var parts [4]string
		if err := gojson.Unmarshal([]byte(key), &parts); err != nil {
			return fail(fmt.Errorf("record key %q is not a [group/topic, name, key, field] array: %w", key, err))
		}
		if parts[0] != owner {
			continue // another flow's state, in a shared state_topic
		}
		if err := fn(stream.StateChange{Name: parts[1], Key: parts[2], Field: parts[3], Value: e.value, ExpiresAt: e.expires, Partition: e.partition}); err != nil {
			return err
		}
	}
	return nil
}

// fenceTransactions initialises the connector's transactional ID: the
// broker aborts a transaction a crashed process left open under it (or
// waits for one it was committing), so that the last stable offset of the
// state topic covers every committed transaction. With the stream's
// session open (the job opens its source before it loads state, and a
// partition assigned later loads it again) this is the session's own
// producer ID, initialised once: it never fences the session. Before the
// session, a short-lived producer with the same ID does it.
func (k *Kafka) fenceTransactions(ctx context.Context, streamName string) error {
	k.mu.Lock()
	sess := k.sessions[streamName]
	k.mu.Unlock()
	var cl *kgo.Client
	if sess != nil {
		cl = sess.Client()
	} else {
		var err error
		if cl, err = kgo.NewClient(append(k.common(), kgo.TransactionalID(k.txnID), kgo.TransactionTimeout(k.txnTimeout))...); err != nil {
			return err
		}
		defer cl.Close()
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("initialise transactional ID %s: %w", k.txnID, err)
	}
	return nil
}

// readPartition fetches partition p of topic from offset from up to (not
// including) end, read-committed, with plain fetch requests: the offset to
// fetch next is known exactly, past control records, aborted transactions
// and the gaps compaction leaves, so reading stops at end whatever the
// last record there is. Leadership changes are followed.
func (k *Kafka) readPartition(ctx context.Context, id [16]byte, topic string, p, leader int32, from, end int64, each func(*kgo.Record)) error {
	offset, idle := from, 0
	for offset < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		if idle > 50 { // 10 s of empty answers below the last stable offset
			return fmt.Errorf("no records at offset %d, below the last stable offset %d", offset, end)
		}
		req := kmsg.NewPtrFetchRequest()
		// Defaults: a consumer's fetch (replica -1), no fetch session.
		req.MaxWaitMillis = 200
		req.MinBytes = 1
		req.MaxBytes = 16 << 20
		req.IsolationLevel = 1 // read committed
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, offset, 8<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		rctx, cancel := context.WithTimeout(ctx, k.timeout)
		kresp, err := k.producer.Broker(int(leader)).Request(rctx, req)
		cancel()
		if err != nil {
			return err
		}
		resp := kresp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return fmt.Errorf("fetch answered %d topics, want 1", len(resp.Topics))
		}
		part := &resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(part.ErrorCode); err != nil {
			if errors.Is(err, kerr.NotLeaderForPartition) || errors.Is(err, kerr.FencedLeaderEpoch) || errors.Is(err, kerr.UnknownLeaderEpoch) || errors.Is(err, kerr.LeaderNotAvailable) {
				if leader, err = k.leaderOf(ctx, topic, p); err != nil {
					return err
				}
				continue
			}
			return err
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset: offset, IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: p,
		}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return fp.Err
		}
		for _, r := range fp.Records {
			if r.Offset < end {
				each(r)
			}
		}
		if next <= offset {
			idle++ // nothing yet (the broker waited MaxWaitMillis)
			continue
		}
		offset, idle = next, 0
	}
	return nil
}

// leaderOf looks up the leader of partition p of topic again.
func (k *Kafka) leaderOf(ctx context.Context, topic string, p int32) (int32, error) {
	_, leaders, err := k.topicMeta(ctx, topic)
	if err != nil {
		return 0, err
	}
	leader, ok := leaders[p]
	if !ok {
		return 0, fmt.Errorf("partition %d of %s has no leader", p, topic)
	}
	return leader, nil
}

// topicMeta asks the brokers (not the client's cache) for topic's ID and
// the leader of each partition; nil leaders when the topic does not exist.
func (k *Kafka) topicMeta(ctx context.Context, topic string) ([16]byte, map[int32]int32, error) {
	var id [16]byte
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, k.producer)
	if err != nil {
		return id, nil, err
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return id, nil, nil
		}
		if err != nil {
			return id, nil, err
		}
		leaders := make(map[int32]int32, len(t.Partitions))
		for _, p := range t.Partitions {
			leaders[p.Partition] = p.Leader
		}
		return t.TopicID, leaders, nil
	}
	return id, nil, nil
}

// listOffset asks the leader of partition p of topic for its start
// (timestamp -2) or, read committed, its last stable offset (-1).
func (k *Kafka) listOffset(ctx context.Context, topic string, p, leader int32, timestamp int64) (int64, error) {
	for attempt := 0; ; attempt++ {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		req.IsolationLevel = 1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, timestamp
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		rctx, cancel := context.WithTimeout(ctx, k.timeout)
		kresp, err := k.producer.Broker(int(leader)).Request(rctx, req)
		cancel()
		if err != nil {
			return 0, err
		}
		resp := kresp.(*kmsg.ListOffsetsResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, fmt.Errorf("list offsets answered %d topics, want 1", len(resp.Topics))
		}
		part := resp.Topics[0].Partitions[0]
		err = kerr.ErrorForCode(part.ErrorCode)
		if err == nil {
			return part.Offset, nil
		}
		if attempt < 5 && (errors.Is(err, kerr.NotLeaderForPartition) || errors.Is(err, kerr.LeaderNotAvailable) || errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.OffsetNotAvailable)) {
			time.Sleep(200 * time.Millisecond)
			if leader, err = k.leaderOf(ctx, topic, p); err != nil {
				return 0, err
			}
			continue
		}
		return 0, err
	}
}
