package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"

	gojson "github.com/goccy/go-json"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// LoadLookup is the body of a Load function with no Go body (the
// kisflow.Loader capability). Its key template is the function's load_key
// param, else the connector's key; its mode the function's load_mode, else
// the connector's mode: string (each key holds a JSON object, read with
// one MGET per run) or hash (one pipelined HGETALL per key, in one round
// trip per run). The fields stored under a row's key are merged into it.
func (r *Redis) LoadLookup(params map[string]string) (kisflow.Lookup, error) {
	key, err := r.key, error(nil)
	if t := params["load_key"]; t != "" {
		if key, err = fields.ParseTemplate(t); err != nil {
			return nil, &driver.ParamError{Param: "load_key", Msg: err.Error()}
		}
	}
	if key.Static() {
		return nil, fmt.Errorf("give it a key template with a {field}, such as user:{user_id} (load_key, or the key of connector %q)", r.cfg.CName)
	}
	modes := []string{"hash", "string"}
	mode := params["load_mode"]
	switch {
	case mode == "":
		if mode = r.mode; !slices.Contains(modes, mode) {
			return nil, fmt.Errorf("give it load_mode hash or string (connector %q has mode %s, which a YAML load cannot read)", r.cfg.CName, mode)
		}
	case !slices.Contains(modes, mode):
		return nil, &driver.ParamError{Param: "load_mode", Msg: fmt.Sprintf("%q is not one of hash, string%s", mode, config.SuggestName(mode, modes))}
	}
	return &redisLookup{r: r, key: key, mode: mode}, nil
}

type redisLookup struct {
	r    *Redis
	key  *fields.Template
	mode string
}

// Key is the row's key, the template filled from its fields.
func (l *redisLookup) Key(row map[string]any) (any, error) {
	k, err := l.key.Expand(row)
	if err != nil {
		return nil, fmt.Errorf("redis connector %q: %w", l.r.cfg.CName, err)
	}
	return k, nil
}

// Fetch reads keys in one round trip: MGET in string mode (pipelined GETs
// on a cluster, whose keys may lie in several slots), pipelined HGETALLs
// in hash mode. A missing key, or an empty hash, has no record.
func (l *redisLookup) Fetch(ctx context.Context, keys []any) ([]map[string]any, error) {
	r := l.r
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.(string)
	}
	out := make([]map[string]any, len(keys))
	fail := func(err error) error {
		return fmt.Errorf("redis connector %q: load: %w", r.cfg.CName, classify(err, true))
	}
	if l.mode == "hash" {
		cmds := make([]*goredis.MapStringStringCmd, len(names))
		pipe := r.client.Pipeline()
		for i, k := range names {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fail(err)
		}
		for i, c := range cmds {
			if h := c.Val(); len(h) > 0 {
				rec := make(map[string]any, len(h))
				for f, v := range h {
					rec[f] = v
				}
				out[i] = rec
			}
		}
		return out, nil
	}
	vals := make([]any, len(names))
	if _, cluster := r.client.(*goredis.ClusterClient); cluster {
		cmds := make([]*goredis.StringCmd, len(names))
		pipe := r.client.Pipeline()
		for i, k := range names {
			cmds[i] = pipe.Get(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return nil, fail(err)
		}
		for i, c := range cmds {
			if c.Err() == nil {
				vals[i] = c.Val()
			}
		}
	} else {
		var err error
		if vals, err = r.client.MGet(ctx, names...).Result(); err != nil {
			return nil, fail(err)
		}
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var rec map[string]any
		if err := gojson.Unmarshal([]byte(s), &rec); err != nil {
			return nil, stream.Permanent(fmt.Errorf("redis connector %q: load: key %s holds no JSON object: %v", r.cfg.CName, names[i], err))
		}
		out[i] = rec
	}
	return out, nil
}

// LoadParams lists the function params LoadLookup reads.
func (r *Redis) LoadParams() []string { return []string{"load_key", "load_mode"} }
