// Package redis provides the connector type redis (go-redis v9):
//
//   - Save and the stream sink write each row under a key built from the
//     connector's key template over the row's fields ("user:{user_id}"), as
//     a hash, a string (JSON), a list entry (JSON) or a stream entry, with
//     an optional TTL.
//   - Load reads the row's key (hash or string) and returns the row with
//     the stored fields merged in.
//   - The source reads a Redis Stream in a consumer group (XREADGROUP),
//     acknowledges with XACK after the flow, re-reads its own pending
//     entries once after a restart, and claims the pending entries of a
//     consumer that died (XAUTOCLAIM) once they are idle for claim_idle:
//     passes every claim_idle/10 (at most 1s), each filling whole reads.
//     Entries it holds in flight are kept from claims (XCLAIM to itself
//     every claim_idle/3) and never handed out twice. A group Redis lost is
//     created again, with a warning.
//
// Errors: a lost connection is transient (retried by the runtime);
// WRONGTYPE on the stream, NOAUTH, WRONGPASS, NOPERM and CROSSSLOT are
// marked stream.Fatal; WRONGTYPE on a sink's key and a row the key
// template cannot place are marked stream.Permanent (dead-lettered).
//
// Config: addrs (host:port or a redis:// or rediss:// URL, whose
// credentials never show in errors; several addrs make a cluster client,
// and so does the param cluster: true; with the param master_name they are
// sentinels), key (the key template; for the source, the stream's key). Its
// params are declared in Spec (`kisflow list redis`). Hash and string
// saves are idempotent by nature; list and stream saves with dedup_key.
//
// As an exactly-once sink (stream.delivery: exactly-once) a batch's rows,
// the stream's position (PREFIXpos:FLOW) and the IDs of the messages it
// consumed (PREFIXinbox:FLOW, kept dedup_ttl) commit in one MULTI/EXEC:
// saves are idempotent by source position, whatever the mode. The flow's
// keyed state and open windows (stream.StateSink) commit in the same
// MULTI/EXEC, in the hash PREFIXstate:FLOW (see state.go).
package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "redis"

// Install registers the driver and the shared client plugin type in reg.
func Install(reg *kisflow.Registry) error {
	if err := reg.RegisterConnector(Spec, New); err != nil {
		return err
	}
	return reg.RegisterPlugin(PluginSpec)
}

// Redis is the driver. It is safe for concurrent use.
type Redis struct {
	cfg       *config.Conn
	opts      *goredis.UniversalOptions
	client    goredis.UniversalClient
	shared    *ClientPlugin // set by UsePlugins: the client is the plugin's
	key       *fields.Template
	mode      string
	ttl       time.Duration
	group     string
	consumer  string
	claimIdle time.Duration
	block     time.Duration
	field     string
	dedup     *fields.Template
	dedupTTL  time.Duration
	plugin    string // the shared client plugin's name (param client)
	// statePrefix starts the keys of exactly-once state (state_prefix,
	// default "kisflow:").
	statePrefix string
}

// saveOnce writes a list or stream entry only if its marker key is new,
// atomically: a replayed save (at-least-once redelivery) is a no-op.
var saveOnce = goredis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  if ARGV[2] == 'list' then
    redis.call('RPUSH', KEYS[2], ARGV[3])
  else
    redis.call('XADD', KEYS[2], '*', ARGV[4], ARGV[3])
  end
  if tonumber(ARGV[5]) > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
  return 1
end
return 0`)

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("redis connector %q: %s", cfg.CName, fmt.Sprintf(format, args...))
	}
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	opts, err := clientOptions(cfg, &p)
	if err != nil {
		return nil, bad("%v", err)
	}
	r := &Redis{cfg: cfg, opts: opts, mode: p.Mode, group: p.Group, consumer: p.Consumer, field: p.Field, plugin: p.Client,
		ttl: p.TTL, claimIdle: p.ClaimIdle, block: p.Block, dedupTTL: p.DedupTTL, statePrefix: p.StatePrefix}
	if cfg.Key == "" {
		return nil, bad("key (a key template such as user:{id}) is required")
	}
	if r.key, err = fields.ParseTemplate(cfg.Key); err != nil {
		return nil, bad("%v", err)
	}
	if p.DedupKey != "" {
		if r.dedup, err = fields.ParseTemplate(p.DedupKey); err != nil {
			return nil, bad("dedup_key: %v", err)
		}
	}
	return r, nil
}

// Start connects and checks the server answers.
func (r *Redis) Start(ctx context.Context) error {
	if r.shared != nil {
		r.client = r.shared.Client()
		return nil
	}
	r.client = goredis.NewUniversalClient(r.opts)
	if err := r.client.Ping(ctx).Err(); err != nil {
		r.client.Close()
		return fmt.Errorf("redis connector %q: %s: %w", r.cfg.CName, r.where(), classify(err, false))
	}
	return nil
}

// where names the servers for messages: host:port only, never credentials.
func (r *Redis) where() string {
	kind := "server"
	switch {
	case r.opts.MasterName != "":
		kind = "sentinels of master " + r.opts.MasterName
	case len(r.opts.Addrs) > 1 || r.opts.IsClusterMode:
		kind = "cluster"
	}
	return kind + " " + strings.Join(r.opts.Addrs, ",")
}

// Close disconnects.
func (r *Redis) Close(context.Context) error {
	if r.client == nil || r.shared != nil {
		return nil
	}
	return r.client.Close()
}

// Client is the go-redis client, for commands of the caller's own: a
// cluster or sentinel-backed client when addrs and params ask for one.
func (r *Redis) Client() goredis.UniversalClient { return r.client }

// Write saves rows by the connector's mode: the stream sink and Save.
func (r *Redis) Write(ctx context.Context, rows []any) error {
	writes, err := r.plan(rows)
	if err != nil {
		return err
	}
	pipe := r.client.Pipeline()
	r.queue(ctx, pipe, writes)
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		if other := batchFailure(cmds); other != nil {
			err = other
		}
		return fmt.Errorf("redis connector %q: write: %w", r.cfg.CName, classify(err, true))
	}
	return nil
}

// batchFailure returns the first error of cmds that is not a row's own (a
// key of another type, which the runtime dead-letters): a lost connection,
// refused credentials. Nil when every failure is a row's own.
func batchFailure(cmds []goredis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !goredis.HasErrorPrefix(err, "WRONGTYPE") {
			return err
		}
	}
	return nil
}

// write is one row's save: its key and what goes there.
type write struct {
	key    string
	fields []any  // hash mode: field, value, ...
	data   []byte // the other modes: the row as JSON
	marker string // dedup_key: the key marking the row saved
}

// plan encodes rows into writes; a row that cannot be saved fails the
// whole batch before anything is sent.
func (r *Redis) plan(rows []any) ([]write, error) {
	writes := make([]write, len(rows))
	for i, row := range rows {
		m, err := fields.Of(row)
		if err != nil {
			return nil, r.rowError(i, err)
		}
		w := &writes[i]
		if w.key, err = r.key.Expand(m); err != nil {
			return nil, r.rowError(i, err)
		}
		if r.mode == "hash" {
			w.fields = make([]any, 0, 2*len(m))
			for k, v := range m {
				w.fields = append(w.fields, k, scalar(v))
			}
			continue
		}
		if w.data, err = gojson.Marshal(m); err != nil {
			return nil, r.rowError(i, err)
		}
		if r.dedup != nil && (r.mode == "list" || r.mode == "stream") {
			id, err := r.dedup.Expand(m)
			if err != nil {
				return nil, r.rowError(i, fmt.Errorf("dedup_key: %w", err))
			}
			w.marker = "kisflow:saved:" + r.cfg.CName + ":" + w.key + ":" + id
		}
	}
	return writes, nil
}

// rowError is the failure of row i that no retry mends (a field the key
// needs is missing, a value JSON cannot hold): the runtime dead-letters it.
func (r *Redis) rowError(i int, err error) error {
	return stream.Permanent(fmt.Errorf("redis connector %q: row %d: %w", r.cfg.CName, i, err))
}

// queue adds the commands of writes to pipe.
func (r *Redis) queue(ctx context.Context, pipe goredis.Pipeliner, writes []write) {
	for _, w := range writes {
		switch {
		case r.mode == "hash":
			pipe.HSet(ctx, w.key, w.fields...)
		case r.mode == "string":
			pipe.Set(ctx, w.key, w.data, r.ttl)
			continue // SET carries the TTL
		case w.marker != "":
			saveOnce.Eval(ctx, pipe, []string{w.marker, w.key}, r.dedupTTL.Milliseconds(), r.mode, w.data, r.field, r.ttl.Milliseconds())
			continue // the script sets the TTL
		case r.mode == "list":
			pipe.RPush(ctx, w.key, w.data)
		default:
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: w.key, Values: []any{r.field, w.data}})
		}
		if r.ttl > 0 {
			pipe.Expire(ctx, w.key, r.ttl)
		}
	}
}

// positionKey and inboxKey hold a stream's exactly-once state: its last
// committed position, and the IDs of the messages it consumed (a sorted
// set scored by commit time, kept for dedup_ttl).
func (r *Redis) positionKey(stream string) string { return r.statePrefix + "pos:" + stream }
func (r *Redis) inboxKey(stream string) string    { return r.statePrefix + "inbox:" + stream }

// positionAtKey holds when the stream's position was committed (RFC 3339,
// UTC).
func (r *Redis) positionAtKey(stream string) string { return r.statePrefix + "pos-at:" + stream }

// stateKeys are the keys of a stream's exactly-once state: its position,
// inbox, position time and keyed state.
func (r *Redis) stateKeys(stream string) []string {
	return []string{r.positionKey(stream), r.inboxKey(stream), r.positionAtKey(stream), r.stateHashKey(stream)}
}

// CommitBatch saves rows, the stream's position and the IDs of the
// messages the batch consumed in one MULTI/EXEC transaction: Redis runs it
// whole, with no other client's command in between, so a redelivered
// message is recognised by its source position (its ID) and not saved
// again. This makes the connector an exactly-once sink (stream.delivery:
// exactly-once).
//
// Redis does not roll a transaction back when one of its commands fails
// (a key of another type: WRONGTYPE), which would record the IDs of rows
// not saved. So the keys are WATCHed and their types checked first: a
// mismatch fails the batch before anything is written, and a key changed
// by another client in between makes Redis refuse the transaction, which
// is tried again.
func (r *Redis) CommitBatch(ctx context.Context, stream, position string, ids []string, rows []any) error {
	return r.commit(ctx, false, stream, "", position, ids, rows, nil)
}

// CommitBatchAfter is CommitBatch fenced on the position from: the
// stream's position key is WATCHed with the batch's keys and read first,
// and nothing is written, with a *stream.FenceError, unless it still holds
// from ("": none); a change in between makes Redis refuse the transaction,
// which is tried again and reads the new position. See
// stream.FencedTxSink.
func (r *Redis) CommitBatchAfter(ctx context.Context, stream, from, position string, ids []string, rows []any) error {
	return r.commit(ctx, true, stream, from, position, ids, rows, nil)
}

// commit is CommitBatch, fenced on from when fence is set, with the keyed
// state changes (stream.StateSink) in the same MULTI/EXEC. The state hash
// is WATCHed and its type checked with the rows' keys, so that a key of
// another type there fails the batch before anything is written.
func (r *Redis) commit(ctx context.Context, fence bool, streamName, from, position string, ids []string, rows []any, state []stream.StateChange) error {
	writes, err := r.plan(rows)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(writes))
	seen := make(map[string]bool, len(writes))
	for _, w := range writes {
		if !seen[w.key] {
			seen[w.key] = true
			keys = append(keys, w.key)
		}
	}
	watch := keys
	if fence {
		watch = append(watch[:len(watch):len(watch)], r.positionKey(streamName))
	}
	if len(state) > 0 {
		watch = append(watch[:len(watch):len(watch)], r.stateHashKey(streamName))
	}
	commit := func(tx *goredis.Tx) error {
		if fence {
			found, err := tx.Get(ctx, r.positionKey(streamName)).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return err
			}
			if found != from {
				return &stream.FenceError{Stream: streamName, Found: found, Expected: from}
			}
		}
		if err := r.checkTypes(ctx, tx, keys); err != nil {
			return err
		}
		if len(state) > 0 {
			if err := r.checkStateType(ctx, tx, streamName); err != nil {
				return err
			}
		}
		_, err := tx.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
			r.queue(ctx, pipe, writes)
			r.queueState(ctx, pipe, streamName, state)
			if len(ids) > 0 {
				now := time.Now()
				members := make([]goredis.Z, len(ids))
				for i, id := range ids {
					members[i] = goredis.Z{Score: float64(now.UnixMilli()), Member: id}
				}
				inbox := r.inboxKey(streamName)
				pipe.ZAdd(ctx, inbox, members...)
				pipe.ZRemRangeByScore(ctx, inbox, "-inf", "("+strconv.FormatInt(now.Add(-r.dedupTTL).UnixMilli(), 10))
			}
			if position != "" {
				pipe.Set(ctx, r.positionKey(streamName), position, 0)
				pipe.Set(ctx, r.positionAtKey(streamName), time.Now().UTC().Format(time.RFC3339Nano), 0)
			}
			return nil
		})
		return err
	}
	for attempt := 0; ; attempt++ {
		err = r.client.Watch(ctx, commit, watch...)
		if !errors.Is(err, goredis.TxFailedErr) || attempt == 9 {
			break
		}
	}
	if err != nil && crossSlot(err) {
		err = fmt.Errorf("on a Redis cluster the keys of an exactly-once batch (its rows', %s) must share one slot: %w", strings.Join(r.stateKeys(streamName), ", "), err)
	}
	if err != nil {
		return fmt.Errorf("redis connector %q: commit batch: %w", r.cfg.CName, classify(err, true))
	}
	return nil
}

// checkTypes fails when a key holds another type than the mode writes.
func (r *Redis) checkTypes(ctx context.Context, tx *goredis.Tx, keys []string) error {
	cmds, err := tx.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for _, k := range keys {
			pipe.Type(ctx, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		if got := c.(*goredis.StatusCmd).Val(); got != "none" && got != r.mode {
			return stream.Permanent(fmt.Errorf("key %s holds a %s, not a %s: nothing of the batch was written", keys[i], got, r.mode))
		}
	}
	return nil
}

// checkStateType fails, with a fatal error, when the stream's state key
// holds something else than a hash.
func (r *Redis) checkStateType(ctx context.Context, tx *goredis.Tx, streamName string) error {
	key := r.stateHashKey(streamName)
	got, err := tx.Type(ctx, key).Result()
	if err != nil {
		return err
	}
	if got != "none" && got != "hash" {
		return stream.Fatal(fmt.Errorf("the keyed state key %s holds a %s, not a hash: nothing of the batch was written (delete it, or set state_prefix)", key, got))
	}
	return nil
}

// rekeyScript renames the first half of KEYS (the old state keys) to the
// second half when one of the old exists and none of the new does, and
// answers 1 if it did.
var rekeyScript = goredis.NewScript(`
local n = #KEYS / 2
for i = n + 1, 2 * n do
  if redis.call("EXISTS", KEYS[i]) == 1 then return 0 end
end
local moved = 0
for i = 1, n do
  if redis.call("EXISTS", KEYS[i]) == 1 then
    redis.call("RENAME", KEYS[i], KEYS[i + n])
    moved = 1
  end
end
return moved
`)

// Rekey moves the position and inbox an earlier version committed under
// the key from to the key to, atomically; see stream.Rekeyer. Old keys are
// looked up first, one by one, so that a Redis cluster, where the four
// keys need not share a slot, runs the script only when there is
// something to move.
func (r *Redis) Rekey(ctx context.Context, from, to string) (bool, error) {
	n := int64(0)
	for _, k := range r.stateKeys(from) {
		c, err := r.client.Exists(ctx, k).Result()
		if err != nil {
			return false, fmt.Errorf("redis connector %q: move state of %s: %w", r.cfg.CName, from, err)
		}
		n += c
	}
	if n == 0 {
		return false, nil
	}
	keys := append(r.stateKeys(from), r.stateKeys(to)...)
	moved, err := rekeyScript.Run(ctx, r.client, keys).Int()
	if err != nil {
		return false, fmt.Errorf("redis connector %q: move state of %s to %s: %w", r.cfg.CName, from, to, err)
	}
	return moved == 1, nil
}

// Position returns the stream's committed position ("" before the first).
func (r *Redis) Position(ctx context.Context, stream string) (string, error) {
	pos, err := r.client.Get(ctx, r.positionKey(stream)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis connector %q: position of %s: %w", r.cfg.CName, stream, err)
	}
	return pos, nil
}

// PositionTime returns when the stream's position was committed: the zero
// time before the first, or for a position committed by a version that
// did not record the time.
func (r *Redis) PositionTime(ctx context.Context, stream string) (time.Time, error) {
	at, err := r.client.Get(ctx, r.positionAtKey(stream)).Result()
	if errors.Is(err, goredis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("redis connector %q: commit time of %s: %w", r.cfg.CName, stream, err)
	}
	t, _ := time.Parse(time.RFC3339Nano, at) // unreadable: unknown
	return t, nil
}

// Seen returns which of ids earlier commits of the stream recorded within
// dedup_ttl.
func (r *Redis) Seen(ctx context.Context, stream string, ids []string) (map[string]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	// ZMSCORE answers nil for a member that is not there; go-redis reads it
	// as 0, and every recorded score is a time after 1970.
	scores, err := r.client.ZMScore(ctx, r.inboxKey(stream), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis connector %q: seen in %s: %w", r.cfg.CName, stream, err)
	}
	seen := make(map[string]bool)
	for i, sc := range scores {
		if sc > 0 {
			seen[ids[i]] = true
		}
	}
	return seen, nil
}

// scalar makes a hash field value: nested values become JSON text.
func scalar(v any) any {
	switch v.(type) {
	case map[string]any, []any:
		b, _ := gojson.Marshal(v)
		return string(b)
	case nil:
		return ""
	}
	return v
}

// Load returns row with the fields stored under its key merged in (hash
// mode: the hash's fields; string mode: the JSON object). A missing key
// returns the row's fields unchanged.
func (r *Redis) Load(ctx context.Context, row any) (map[string]any, error) {
	m, err := fields.Of(row)
	if err != nil {
		return nil, err
	}
	key, err := r.key.Expand(m)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(m)+8)
	for k, v := range m {
		out[k] = v
	}
	switch r.mode {
	case "string":
		data, err := r.client.Get(ctx, key).Bytes()
		if errors.Is(err, goredis.Nil) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: load %s: %w", r.cfg.CName, key, err)
		}
		var stored map[string]any
		if err := gojson.Unmarshal(data, &stored); err != nil {
			return nil, fmt.Errorf("redis connector %q: load %s: %w", r.cfg.CName, key, err)
		}
		for k, v := range stored {
			out[k] = v
		}
	default:
		stored, err := r.client.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: load %s: %w", r.cfg.CName, key, err)
		}
		for k, v := range stored {
			out[k] = v
		}
	}
	return out, nil
}

// Call is the Save and Load target: Save writes args (a row or []any),
// Load returns the row with its stored fields merged in.
func (r *Redis) Call(ctx context.Context, c *kisflow.Connector, f kisflow.Flow, args any) (any, error) {
	switch fn := f.Function(); fn.Mode() {
	case config.Save:
		rows, ok := args.([]any)
		if !ok {
			rows = []any{args}
		}
		return nil, r.Write(ctx, rows)
	case config.Load:
		return r.Load(ctx, args)
	default:
		return nil, fmt.Errorf("redis connector %q: function %q has fmode %s; only Save and Load functions call it", r.cfg.CName, fn.Name(), fn.Mode())
	}
}

// Check verifies, for kisflow dry-run, that the server answers and that a
// plain key holds nothing yet or the type the connector reads or writes
// there: a stream for a source, the mode's type for a sink. It reads
// nothing but the key's type; a source's stream and group are created when
// the source opens.
func (r *Redis) Check(ctx context.Context, use config.ConnUse) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%s: %w", r.where(), classify(err, false))
	}
	if use.Source && !r.key.Static() {
		return stream.Fatal(fmt.Errorf("a source needs a plain stream key, not the template %q", r.cfg.Key))
	}
	if !r.key.Static() {
		return nil
	}
	typ, err := r.client.Type(ctx, r.cfg.Key).Result()
	if err != nil {
		return fmt.Errorf("%s: type of %s: %w", r.where(), r.cfg.Key, classify(err, false))
	}
	want := r.mode
	if use.Source {
		want = "stream"
	}
	if typ != "none" && typ != want {
		return stream.Fatal(fmt.Errorf("key %s holds a %s, not a %s", r.cfg.Key, typ, want))
	}
	return nil
}
