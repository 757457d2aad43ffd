package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/stream"
)

// stateHashKey holds a stream's keyed state (stream.StateSink): a hash
// whose fields are stateField(name, key, field) and whose values are
// stateValue(change). It commits in the MULTI/EXEC of the batch that
// changed it, with the rows, the position and the message IDs.
func (r *Redis) stateHashKey(stream string) string { return r.statePrefix + "state:" + stream }

// stateField is the hash field of a state entry: the JSON array [name,
// key, field], which no two entries share whatever their characters.
func stateField(c stream.StateChange) string {
	b, _ := gojson.Marshal([3]string{c.Name, c.Key, c.Field}) // strings always marshal
	return string(b)
}

// stateValue is the hash value of a state entry: its expiry in Unix
// milliseconds (0: never), a space, its source partition as a JSON string
// ("" for none), a space, then its JSON value.
func stateValue(c stream.StateChange) string {
	part, _ := gojson.Marshal(c.Partition) // a string always marshals
	return strconv.FormatInt(c.ExpiresAt, 10) + " " + string(part) + " " + string(c.Value)
}

// parseState reads back an entry written by stateField and stateValue.
func parseState(field, value string) (stream.StateChange, error) {
	var c stream.StateChange
	var parts [3]string
	if err := gojson.Unmarshal([]byte(field), &parts); err != nil {
		return c, fmt.Errorf("state field %q is not a [name, key, field] array: %w", field, err)
	}
	exp, rest, ok := strings.Cut(value, " ")
	n, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil {
		return c, fmt.Errorf("state field %q: value does not start with its expiry", field)
	}
	dec := gojson.NewDecoder(strings.NewReader(rest))
	if err := dec.Decode(&c.Partition); err != nil || int(dec.InputOffset()) >= len(rest) || rest[dec.InputOffset()] != ' ' {
		return c, fmt.Errorf("state field %q: value has no partition after its expiry", field)
	}
	c.Name, c.Key, c.Field, c.ExpiresAt, c.Value = parts[0], parts[1], parts[2], n, []byte(rest[dec.InputOffset()+1:])
	return c, nil
}

// stateBatch bounds the field-value pairs of one HSET or HDEL.
const stateBatch = 500

// queueState adds the commands that apply changes to the stream's state
// hash to pipe, in their order: consecutive puts in one HSET, consecutive
// deletions in one HDEL.
func (r *Redis) queueState(ctx context.Context, pipe goredis.Pipeliner, streamName string, changes []stream.StateChange) {
	key := r.stateHashKey(streamName)
	var puts []any
	var dels []string
	flush := func() {
		if len(puts) > 0 {
			pipe.HSet(ctx, key, puts...)
			puts = nil
		}
		if len(dels) > 0 {
			pipe.HDel(ctx, key, dels...)
			dels = nil
		}
	}
	for _, c := range changes {
		if c.Deleted {
			if len(puts) > 0 {
				flush()
			}
			dels = append(dels, stateField(c))
		} else {
			if len(dels) > 0 {
				flush()
			}
			puts = append(puts, stateField(c), stateValue(c))
		}
		if len(puts) >= 2*stateBatch || len(dels) >= stateBatch {
			flush()
		}
	}
	flush()
}

// CommitState is CommitBatch with the batch's keyed state changes, written
// in the same MULTI/EXEC to the hash PREFIXstate:STREAM; see
// stream.StateSink.
func (r *Redis) CommitState(ctx context.Context, stream, position string, ids []string, rows []any, state []stream.StateChange) error {
	return r.commit(ctx, false, stream, "", position, ids, rows, state)
}

// CommitStateAfter is CommitBatchAfter with the batch's keyed state
// changes, written in the same MULTI/EXEC; see stream.StateSink.
func (r *Redis) CommitStateAfter(ctx context.Context, stream, from, position string, ids []string, rows []any, state []stream.StateChange) error {
	return r.commit(ctx, true, stream, from, position, ids, rows, state)
}

// dropExpired deletes a state field only if it still holds the expired
// value read (compare and delete): a commit that set it again in between
// keeps its value. KEYS[1] is the hash; ARGV holds field, value pairs.
var dropExpired = goredis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`)

// LoadState calls fn with every live entry of the stream's keyed state
// (HSCAN of its hash); expired entries are skipped, and deleted unless a
// commit changed them since they were read. See stream.StateLoader.
func (r *Redis) LoadState(ctx context.Context, streamName string, fn func(stream.StateChange) error) error {
	return r.loadState(ctx, streamName, nil, fn)
}

// LoadPartitionState is LoadState for the entries whose source partition
// is one of partitions ("" for those without one); see
// stream.PartitionStateLoader. A hash has no index by partition: the
// stream's whole hash is scanned.
func (r *Redis) LoadPartitionState(ctx context.Context, streamName string, partitions []string, fn func(stream.StateChange) error) error {
	if partitions == nil {
		partitions = []string{}
	}
	return r.loadState(ctx, streamName, partitions, fn)
}

// loadState loads the entries of partitions, or all of them when
// partitions is nil.
func (r *Redis) loadState(ctx context.Context, streamName string, partitions []string, fn func(stream.StateChange) error) error {
	key := r.stateHashKey(streamName)
	now := time.Now().UnixMilli()
	var expired []any
	var cursor uint64
	for {
		kv, next, err := r.client.HScan(ctx, key, cursor, "", 1000).Result()
		if err != nil {
			if goredis.HasErrorPrefix(err, "WRONGTYPE") {
				return stream.Fatal(fmt.Errorf("redis connector %q: load state of %s: key %s is not a hash: %w", r.cfg.CName, streamName, key, err))
			}
			return fmt.Errorf("redis connector %q: load state of %s: %w", r.cfg.CName, streamName, classify(err, false))
		}
		for i := 0; i+1 < len(kv); i += 2 {
			c, err := parseState(kv[i], kv[i+1])
			if err != nil {
				return stream.Fatal(fmt.Errorf("redis connector %q: load state of %s from %s: %w (delete the field, or the key to start afresh)", r.cfg.CName, streamName, key, err))
			}
			if c.ExpiresAt > 0 && c.ExpiresAt <= now {
				expired = append(expired, kv[i], kv[i+1])
				continue
			}
			if partitions != nil && !slices.Contains(partitions, c.Partition) {
				continue
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	for start := 0; start < len(expired); start += 2 * stateBatch {
		args := expired[start:min(start+2*stateBatch, len(expired))]
		if err := dropExpired.Run(ctx, r.client, []string{key}, args...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return fmt.Errorf("redis connector %q: drop expired state of %s: %w", r.cfg.CName, streamName, classify(err, false))
		}
	}
	return nil
}
