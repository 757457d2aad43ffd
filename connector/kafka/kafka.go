// Package kafka provides the connector type kafka (franz-go).
//
//   - The source consumes a topic in a consumer group (one per flow unless
//     params.group names it) and commits a record's offset only after the
//     flow finished with it. Order holds per partition: the partition is the
//     message key the runtime orders by. When partitions are revoked in a
//     rebalance, the revocation waits (up to revoke_timeout) until the
//     records already read from them are processed and committed, so the
//     new owner neither loses them nor repeats them. Records still in
//     flight after revoke_timeout, and those of partitions lost when the
//     session expired, are read again by the new owner (at-least-once; an
//     exactly-once SQL sink skips them by topic/partition/offset).
//   - The source owns partitions (stream.PartitionOwner): a partition is
//     announced as assigned before its first record is returned, and as
//     revoked once its records read are committed (or revoke_timeout
//     passed, or it was lost), so that keyed state follows partitions
//     between the processes of the group.
//   - The sink (and Save) produces each row as JSON with the idempotent
//     producer (acks from all in-sync replicas, retries without
//     duplicates), keyed by the key_field template.
//   - With transactional_id and output_topic, the connector is both the
//     stream's source and its exactly-once sink: each batch's rows, its
//     consumed offsets and its keyed state changes (a changelog topic,
//     state_topic; see state.go) commit in one Kafka transaction.
//
// Its params are declared in Spec (`kisflow list kafka`).
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "kafka"

// Install registers the kafka connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	Group              string        `param:"group" doc:"the consumer group of the source (else one per flow, named after it)"`
	Start              string        `param:"start" default:"earliest" enum:"earliest|latest" doc:"where a new group starts reading"`
	KeyField           string        `param:"key_field" doc:"the record key template of the sink" example:"{user_id}"`
	TransactionalID    string        `param:"transactional_id" doc:"with output_topic: exactly-once from the key topic into output_topic (name this connector as both the stream's source and sink)"`
	OutputTopic        string        `param:"output_topic" doc:"with transactional_id: the topic (template) the flow's rows go to in the transaction that commits the consumed offsets"`
	RevokeTimeout      time.Duration `param:"revoke_timeout" default:"10s" min:"1ms" doc:"how long a revocation waits for the records already read from the revoked partitions to be processed and committed"`
	Heartbeat          time.Duration `param:"heartbeat" default:"3s" min:"1ms" doc:"the group heartbeat: how soon a rebalance is noticed"`
	SessionTimeout     time.Duration `param:"session_timeout" default:"45s" min:"1ms" doc:"how long the group waits for a silent member before it rebalances"`
	RebalanceTimeout   time.Duration `param:"rebalance_timeout" default:"60s" min:"1ms" doc:"how long a rebalance waits for members, dead ones included"`
	TransactionTimeout time.Duration `param:"transaction_timeout" default:"40s" min:"1ms" doc:"how long an open transaction of a crashed process blocks its successor"`
	Timeout            time.Duration `param:"timeout" default:"10s" min:"1ms" doc:"dial and requests"`
	TLS                bool          `param:"tls" default:"false" doc:"connect with TLS"`
	SASLMechanism      string        `param:"sasl_mechanism" enum:"PLAIN|SCRAM-SHA-256|SCRAM-SHA-512" doc:"the SASL mechanism that sends user and password (none when absent)"`
	User               string        `param:"user" alias:"sasl_user" doc:"the SASL user"`
	Password           string        `param:"password" alias:"sasl_password" secret:"true" doc:"the SASL password (from ${VAR}; never printed)"`
	ClientLog          string        `param:"client_log" enum:"info|debug" doc:"franz-go's own log on standard error, for diagnosing group and transaction trouble"`
	StateTopic         string        `param:"state_topic" doc:"with transactional_id: the compacted changelog topic that keeps the flow's keyed state and open windows, in the transaction of each batch (created when missing); default kisflow-state-GROUP-HASH, from the consumer group and the topic"`
}

// Spec declares the kafka connector's addrs, key and params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "Kafka topics: a consumer-group source committing after the flow, an idempotent JSON sink, exactly-once from topic to topic")
	s.Addrs = "the seed brokers (host:port, comma-separated); required"
	s.Key = "the topic; for the sink a template such as orders.{region}; required"
	return s
}()

// Kafka is the driver. It is safe for concurrent use.
type Kafka struct {
	cfg           *config.Conn
	seeds         []string
	topic         *fields.Template
	keyField      *fields.Template
	group         string
	start         kgo.Offset
	revokeTimeout time.Duration
	timeout       time.Duration
	heartbeat     time.Duration
	session       time.Duration
	rebalance     time.Duration
	txnTimeout    time.Duration
	tls           bool
	sasl          sasl.Mechanism // nil: no SASL
	txnID         string
	output        *fields.Template
	clientLog     string
	// stateTopicName is the param state_topic ("": derived per stream).
	stateTopicName string

	producer *kgo.Client

	mu          sync.Mutex
	sessions    map[string]*kgo.GroupTransactSession // by stream name, in transactional mode
	stateTopics map[string]bool                      // keyed state topics known to exist
}

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("kafka connector %q: %s", cfg.CName, fmt.Sprintf(format, args...))
	}
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	k := &Kafka{cfg: cfg, seeds: cfg.AddrList(), group: p.Group, tls: p.TLS, start: kgo.NewOffset().AtStart(),
		txnID: p.TransactionalID, clientLog: p.ClientLog, sessions: map[string]*kgo.GroupTransactSession{},
		stateTopicName: p.StateTopic, stateTopics: map[string]bool{},
		revokeTimeout: p.RevokeTimeout, timeout: p.Timeout, heartbeat: p.Heartbeat, session: p.SessionTimeout,
		rebalance: p.RebalanceTimeout, txnTimeout: p.TransactionTimeout}
	if len(k.seeds) == 0 {
		return nil, bad("addrs (the seed brokers) is required")
	}
	if cfg.Key == "" {
		return nil, bad("key (the topic) is required")
	}
	var err error
	if k.topic, err = fields.ParseTemplate(cfg.Key); err != nil {
		return nil, bad("%v", err)
	}
	if p.KeyField != "" {
		if k.keyField, err = fields.ParseTemplate(p.KeyField); err != nil {
			return nil, bad("%v", err)
		}
	}
	if p.OutputTopic != "" {
		if k.output, err = fields.ParseTemplate(p.OutputTopic); err != nil {
			return nil, bad("%v", err)
		}
	}
	if (k.txnID == "") != (k.output == nil) {
		return nil, bad("transactional_id and output_topic go together (exactly-once from the key topic into output_topic)")
	}
	if k.stateTopicName != "" && k.txnID == "" {
		return nil, bad("state_topic keeps the keyed state of an exactly-once flow: it needs transactional_id and output_topic")
	}
	user, pass := p.User, p.Password
	switch p.SASLMechanism {
	case "":
		if user != "" || pass != "" {
			return nil, bad("user and password need sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
	case "PLAIN":
		k.sasl = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		k.sasl = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		k.sasl = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	if p.Start == "latest" {
		k.start = kgo.NewOffset().AtEnd()
	}
	return k, nil
}

func (k *Kafka) common() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.seeds...),
		kgo.DialTimeout(k.timeout),
		kgo.RequestTimeoutOverhead(k.timeout),
		kgo.ClientID("kisflow-" + k.cfg.CName),
	}
	if k.tls {
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if k.sasl != nil {
		opts = append(opts, kgo.SASL(k.sasl))
	}
	switch k.clientLog {
	case "debug":
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(k.cfg.Redactor().Writer(os.Stderr), kgo.LogLevelDebug, nil)))
	case "info":
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(k.cfg.Redactor().Writer(os.Stderr), kgo.LogLevelInfo, nil)))
	}
	return opts
}

// Start creates the producer and checks a broker answers.
func (k *Kafka) Start(ctx context.Context) error {
	cl, err := kgo.NewClient(append(k.common(), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	pctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	k.producer = cl
	return nil
}

// Close flushes and closes the producer.
func (k *Kafka) Close(ctx context.Context) error {
	if k.producer == nil {
		return nil
	}
	err := k.producer.Flush(ctx)
	k.producer.Close()
	return err
}

// Write produces rows and waits until every one is acknowledged.
func (k *Kafka) Write(ctx context.Context, rows []any) error {
	var hdrs []kgo.RecordHeader
	stream.InjectTrace(ctx, func(key, value string) { hdrs = append(hdrs, kgo.RecordHeader{Key: key, Value: []byte(value)}) })
	recs := make([]*kgo.Record, 0, len(rows))
	for i, row := range rows {
		m, topic, value, err := fields.Encode(row, k.topic)
		if err != nil {
			return stream.Permanent(fmt.Errorf("kafka connector %q: row %d: %w", k.cfg.CName, i, err))
		}
		r := &kgo.Record{Topic: topic, Value: value, Headers: hdrs}
		if k.keyField != nil {
			key, err := k.keyField.Expand(m)
			if err != nil {
				return stream.Permanent(fmt.Errorf("kafka connector %q: row %d: %w", k.cfg.CName, i, err))
			}
			r.Key = []byte(key)
		}
		recs = append(recs, r)
	}
	if err := k.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return refused(fmt.Errorf("kafka connector %q: produce: %w", k.cfg.CName, err))
	}
	return nil
}

// refused marks as permanent the produce errors a record causes by itself
// (too large, invalid, a topic name the broker refuses), so the runtime
// dead-letters that record instead of retrying the batch as an outage.
func refused(err error) error {
	for _, e := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage, kerr.InvalidTopicException} {
		if errors.Is(err, e) {
			return stream.Permanent(err)
		}
	}
	return err
}

// OpenSource joins the consumer group.
func (k *Kafka) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if !k.topic.Static() {
		return nil, fmt.Errorf("kafka connector %q: a source needs a plain topic, not the template %q", k.cfg.CName, k.cfg.Key)
	}
	group := k.group
	if group == "" {
		group = opts.Name
	}
	s := &source{k: k, group: group, inflight: map[partition]int{}, log: opts.Logger}
	s.cond = sync.NewCond(&s.mu)
	var extra []kgo.Opt
	if !opts.Start.IsZero() || !opts.Stop.IsZero() || opts.Detached {
		b, err := k.newBounds(ctx, opts)
		if err != nil {
			return nil, err
		}
		s.bounds = b
		extra = append(extra, kgo.AdjustFetchOffsetsFn(b.adjust))
	}
	if k.txnID != "" {
		if opts.Detached {
			return nil, fmt.Errorf("kafka connector %q: a transactional source cannot make a one-off run (its transactions commit the group's offsets)", k.cfg.CName)
		}
		key := opts.StateKey
		if key == "" {
			key = opts.Name
		}
		return k.openTransactional(s, group, key, extra...) // CommitBatch finds it by the state key
	}
	var copts []kgo.Opt
	if opts.Detached {
		// A one-off run: no group, nothing committed.
		offs, err := k.detachedOffsets(ctx, group, s.bounds)
		if err != nil {
			return nil, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
		}
		s.detached = true
		s.bounds.mu.Lock()
		for p, o := range offs[k.cfg.Key] {
			at := o.EpochOffset().Offset
			if at < 0 {
				m, err := k.resolve(ctx, s.bounds.adm, stream.Bound{Kind: map[bool]stream.BoundKind{true: stream.Latest, false: stream.Earliest}[at == -1]})
				if err != nil {
					s.bounds.mu.Unlock()
					return nil, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
				}
				at = m[p]
			}
			s.bounds.reached(p, at)
		}
		s.bounds.mu.Unlock()
		copts = append(k.common(), kgo.ConsumePartitions(offs))
	} else {
		copts = append(append(k.common(),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(k.cfg.Key),
			kgo.ConsumeResetOffset(k.start),
			kgo.DisableAutoCommit(),
			kgo.RequireStableFetchOffsets(),
			kgo.OnPartitionsRevoked(s.onRevoked),
			kgo.OnPartitionsLost(s.onLost),
			kgo.HeartbeatInterval(k.heartbeat),
			kgo.SessionTimeout(k.session),
			kgo.RebalanceTimeout(k.rebalance),
		), extra...)
	}
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		return nil, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	s.cl = cl
	return s, nil
}

// openTransactional consumes in a GroupTransactSession: the connector is
// then also the stream's exactly-once sink, producing the flow's rows to
// output_topic and committing the consumed offsets in one transaction. A
// rebalance before the commit aborts it; the records are read again.
func (k *Kafka) openTransactional(s *source, group, streamName string, extra ...kgo.Opt) (stream.Source, error) {
	sess, err := kgo.NewGroupTransactSession(append(append(k.common(),
		kgo.TransactionalID(k.txnID),
		kgo.TransactionTimeout(k.txnTimeout),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(k.cfg.Key),
		kgo.ConsumeResetOffset(k.start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.OnPartitionsRevoked(s.onRevokedTx),
		kgo.OnPartitionsLost(s.onLost),
		kgo.HeartbeatInterval(k.heartbeat),
		kgo.SessionTimeout(k.session),
		kgo.RebalanceTimeout(k.rebalance),
	), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	s.cl, s.sess = sess.Client(), sess
	k.mu.Lock()
	k.sessions[streamName] = sess
	k.mu.Unlock()
	return s, nil
}

// CommitsAllRead tells the runtime that a transaction commits every offset
// the session read, so it must keep one batch in flight.
func (k *Kafka) CommitsAllRead() bool { return true }

// CommitBatch produces rows to output_topic and commits the offsets the
// stream's session consumed, in one Kafka transaction.
func (k *Kafka) CommitBatch(ctx context.Context, streamName, _ string, _ []string, rows []any) error {
	return k.commit(ctx, streamName, rows, nil)
}

// commit produces rows to output_topic and the records extra (keyed
// state changes), and commits the offsets the stream's session consumed,
// in one Kafka transaction.
func (k *Kafka) commit(ctx context.Context, streamName string, rows []any, extra []*kgo.Record) error {
	k.mu.Lock()
	sess := k.sessions[streamName]
	k.mu.Unlock()
	if sess == nil {
		return fmt.Errorf("kafka connector %q: exactly-once needs the stream's source to be this connector, with transactional_id", k.cfg.CName)
	}
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("kafka connector %q: begin transaction: %w", k.cfg.CName, err)
	}
	recs := make([]*kgo.Record, 0, len(rows))
	for i, row := range rows {
		m, topic, value, err := fields.Encode(row, k.output)
		if err != nil {
			_, _ = sess.End(ctx, kgo.TryAbort) // the row's error is the one to report
			return fmt.Errorf("kafka connector %q: row %d: %w", k.cfg.CName, i, err)
		}
		r := &kgo.Record{Topic: topic, Value: value}
		if k.keyField != nil {
			key, err := k.keyField.Expand(m)
			if err != nil {
				_, _ = sess.End(ctx, kgo.TryAbort)
				return fmt.Errorf("kafka connector %q: row %d: %w", k.cfg.CName, i, err)
			}
			r.Key = []byte(key)
		}
		recs = append(recs, r)
	}
	recs = append(recs, extra...)
	if err := sess.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		_, _ = sess.End(ctx, kgo.TryAbort)
		return fmt.Errorf("kafka connector %q: produce in transaction: %w", k.cfg.CName, err)
	}
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil {
		return fmt.Errorf("kafka connector %q: end transaction: %w", k.cfg.CName, err)
	}
	if !committed {
		// A rebalance aborted it: the records are consumed again, by this
		// session or by the partitions' new owner.
		return fmt.Errorf("kafka connector %q: transaction aborted by a rebalance: %w", k.cfg.CName, stream.ErrAlreadyCommitted)
	}
	return nil
}

// Position is empty: the consumed offsets live in Kafka.
func (k *Kafka) Position(context.Context, string) (string, error) { return "", nil }

// Seen is empty: Kafka transactions never commit a record's offset without
// its output, so there is nothing to skip.
func (k *Kafka) Seen(context.Context, string, []string) (map[string]bool, error) { return nil, nil }

type partition struct {
	topic string
	p     int32
}

type source struct {
	k     *Kafka
	group string
	cl    *kgo.Client
	sess  *kgo.GroupTransactSession // transactional mode
	log   *slog.Logger
	mu    sync.Mutex
	cond  *sync.Cond
	// inflight counts the records read and not yet acknowledged per
	// partition; a revocation waits for its partitions to reach zero.
	inflight map[partition]int
	warned   time.Time
	// owner is told which partitions this process owns (set once, before
	// the first Read); owned holds those announced as assigned (as
	// "topic/N"), held the messages of a Read whose assignment failed.
	owner stream.PartitionHandler
	owned map[string]bool
	held  []*stream.Message
	// bounds, when the source was opened with a start or a stop
	// (stream.start, stream.stop); detached for a one-off run, which
	// reads without the group and commits nothing.
	bounds   *bounds
	detached bool
}

// OwnPartitions registers h; see stream.PartitionOwner.
func (s *source) OwnPartitions(h stream.PartitionHandler) {
	s.mu.Lock()
	s.owner, s.owned = h, map[string]bool{}
	s.mu.Unlock()
}

// assign announces the partitions of msgs this process did not own yet,
// before they are returned.
func (s *source) assign(ctx context.Context, msgs []*stream.Message) error {
	s.mu.Lock()
	h := s.owner
	var fresh []string
	if h != nil {
		for _, m := range msgs {
			if !s.owned[m.Partition] && !slices.Contains(fresh, m.Partition) {
				fresh = append(fresh, m.Partition)
			}
		}
	}
	s.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	if err := h.Assigned(ctx, fresh); err != nil {
		return err
	}
	s.mu.Lock()
	for _, p := range fresh {
		s.owned[p] = true
	}
	s.mu.Unlock()
	return nil
}

// disown tells the handler that partitions are no longer this process's;
// s.mu is held.
func (s *source) disown(parts map[string][]int32) {
	if s.owner == nil {
		return
	}
	var names []string
	for topic, ps := range parts {
		for _, p := range ps {
			name := topic + "/" + strconv.Itoa(int(p))
			if s.owned[name] {
				delete(s.owned, name)
				names = append(names, name)
			}
		}
	}
	if len(names) > 0 {
		slices.Sort(names)
		s.owner.Revoked(names)
	}
}

// Lag is the consumer group's lag: records of the topic past the group's
// committed offsets, summed over partitions (kadm's calculation). Records
// read but not yet committed count as lag until their batch commits.
func (s *source) Lag(ctx context.Context) (int64, error) {
	lags, err := kadm.NewClient(s.cl).Lag(ctx, s.group)
	if err != nil {
		return 0, fmt.Errorf("kafka source %s: group lag: %w", s.group, err)
	}
	l, ok := lags[s.group]
	if !ok {
		return 0, fmt.Errorf("kafka source %s: group lag: group not described", s.group)
	}
	if err := l.Error(); err != nil {
		return 0, fmt.Errorf("kafka source %s: group lag: %w", s.group, err)
	}
	return l.Lag.Total(), nil
}

// onRevoked finishes the revoked partitions' records before they go.
func (s *source) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	deadline := time.Now().Add(s.k.revokeTimeout)
	timer := time.AfterFunc(s.k.revokeTimeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.disown(revoked) // their records are committed: their state is in the store
	for {
		busy := 0
		for topic, ps := range revoked {
			for _, p := range ps {
				busy += s.inflight[partition{topic, p}]
			}
		}
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if s.log != nil {
				s.log.Warn("kafka partitions revoked before their records finished; the new owner repeats them", "records", busy)
			}
			return
		}
		s.cond.Wait()
	}
}

// warn logs a polling error, at most every five seconds.
func (s *source) warn(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil || time.Since(s.warned) < 5*time.Second {
		return
	}
	s.warned = time.Now()
	s.log.Warn("kafka source: polling failed; retrying", "err", err)
}

func (s *source) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if s.log != nil {
		s.log.Warn("kafka partitions lost (session expired); their unacknowledged records will be repeated", "partitions", fmt.Sprint(lost))
	}
	s.mu.Lock()
	s.disown(lost)
	s.mu.Unlock()
}

// onRevokedTx, in transactional mode, forgets revoked partitions: the
// session aborts the transaction of their records, read again by the
// next owner.
func (s *source) onRevokedTx(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	s.mu.Lock()
	s.disown(revoked)
	s.mu.Unlock()
}

// Read polls up to max records; the partition is the message key, so the
// runtime keeps each partition's records in order.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	if held != nil {
		return s.announced(ctx, held)
	}
	for {
		if s.bounds.finished() {
			return nil, io.EOF // every partition reached the stop
		}
		pctx, cancel := s.bounds.pollContext(ctx)
		var fetches kgo.Fetches
		if s.sess != nil {
			fetches = s.sess.PollRecords(pctx, max)
		} else {
			fetches = s.cl.PollRecords(pctx, max)
		}
		cancel()
		if ctx.Err() != nil && fetches.NumRecords() == 0 {
			return nil, ctx.Err()
		}
		if fetches.IsClientClosed() {
			return nil, errors.New("kafka source: client closed")
		}
		var firstErr error
		fetches.EachError(func(topic string, p int32, err error) {
			if firstErr == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				firstErr = fmt.Errorf("kafka source %s[%d]: %w", topic, p, err)
			}
		})
		recs := s.bounds.keep(fetches.Records())
		if len(recs) == 0 {
			if s.bounds.finished() {
				return nil, io.EOF
			}
			if firstErr != nil {
				// Group and fetch errors are retried by the client (a join
				// waiting on dead members, a broker moving): report, go on.
				s.warn(firstErr)
			}
			continue
		}
		out := make([]*stream.Message, len(recs))
		slab := make([]stream.Message, len(recs))
		s.mu.Lock()
		for i, r := range recs {
			s.inflight[partition{r.Topic, r.Partition}]++
			m := &slab[i]
			m.Payload = r.Value
			m.Key = r.Topic + "/" + strconv.Itoa(int(r.Partition))
			m.Partition = m.Key
			m.ID = m.Key + "/" + strconv.FormatInt(r.Offset, 10)
			m.Handle = r
			if len(r.Headers) > 0 {
				m.Headers = make(map[string]string, len(r.Headers))
				for _, h := range r.Headers {
					m.Headers[h.Key] = string(h.Value)
				}
			}
			out[i] = m
		}
		s.mu.Unlock()
		return s.announced(ctx, out)
	}
}

// announced returns msgs once their partitions are announced as assigned;
// when that fails it holds them for the next Read.
func (s *source) announced(ctx context.Context, msgs []*stream.Message) ([]*stream.Message, error) {
	if err := s.assign(ctx, msgs); err != nil {
		s.mu.Lock()
		s.held = msgs
		s.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	return msgs, nil
}

// Ack commits the records' offsets (synchronously: a failed commit is an
// error the runtime reports).
func (s *source) Ack(ctx context.Context, msgs []*stream.Message) error {
	recs := make([]*kgo.Record, 0, len(msgs))
	for _, m := range msgs {
		if r, ok := m.Handle.(*kgo.Record); ok {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if s.sess != nil || s.detached {
		s.done(recs) // committed with the transaction, or not at all (a one-off run)
		return nil
	}
	err := s.cl.CommitRecords(ctx, recs...)
	s.done(recs)
	if err != nil {
		return fmt.Errorf("kafka source: commit: %w", err)
	}
	return nil
}

// Nack forgets records that were not processed: they are repeated from the
// last committed offset by whoever owns their partition next.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, _ error) error {
	recs := make([]*kgo.Record, 0, len(msgs))
	for _, m := range msgs {
		if r, ok := m.Handle.(*kgo.Record); ok {
			recs = append(recs, r)
		}
	}
	s.done(recs)
	return nil
}

func (s *source) done(recs []*kgo.Record) {
	s.mu.Lock()
	for _, r := range recs {
		k := partition{r.Topic, r.Partition}
		if s.inflight[k]--; s.inflight[k] <= 0 {
			delete(s.inflight, k)
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Close leaves the group; uncommitted records are repeated by the next
// owner of their partitions.
func (s *source) Close(context.Context) error {
	s.mu.Lock()
	clear(s.inflight)
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.sess != nil {
		s.k.mu.Lock()
		for name, sess := range s.k.sessions {
			if sess == s.sess {
				delete(s.k.sessions, name)
			}
		}
		s.k.mu.Unlock()
		s.sess.Close()
		return nil
	}
	s.cl.Close()
	return nil
}

// Check verifies, for kisflow dry-run, that the topic (and output_topic)
// exists, or that the brokers create topics on first use
// (auto.create.topics.enable). Its metadata request creates no topic.
func (k *Kafka) Check(ctx context.Context, use config.ConnUse) error {
	if use.Source && !k.topic.Static() {
		return stream.Fatal(fmt.Errorf("a source needs a plain topic, not the template %q", k.cfg.Key))
	}
	var topics []string
	if k.topic.Static() {
		topics = append(topics, k.cfg.Key)
	}
	if k.output != nil && k.output.Static() {
		topics = append(topics, k.cfg.Params["output_topic"])
	}
	if len(topics) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	adm := kadm.NewClient(k.producer)
	tds, err := adm.ListTopics(cctx, topics...)
	if err != nil {
		return fmt.Errorf("read topic metadata: %w", err)
	}
	var missing []string
	for _, t := range topics {
		td, ok := tds[t]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case td.Err != nil:
			return fmt.Errorf("topic %s: %w", t, td.Err)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if rcs, err := adm.DescribeBrokerConfigs(cctx); err == nil {
		for _, rc := range rcs {
			for _, c := range rc.Configs {
				if c.Key == "auto.create.topics.enable" && c.Value != nil && *c.Value == "true" {
					return nil // the first write or subscription creates them
				}
			}
		}
	}
	return stream.Fatal(fmt.Errorf("topic %s does not exist (create it, or let the brokers create topics: auto.create.topics.enable)", strings.Join(missing, ", ")))
}
