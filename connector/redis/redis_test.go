package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

func start(t *testing.T, key string, params map[string]string) *Redis {
	t.Helper()
	addr := testenv.Redis.Addr(t)
	d, err := New(&config.Conn{CName: "r", Type: Type, Addrs: addr, Key: key, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	r := d.(*Redis)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Remove what the test wrote: its keys share a unique prefix.
		prefix := strings.SplitN(key, "{", 2)[0]
		if keys, err := r.client.Keys(context.Background(), prefix+"*").Result(); err == nil && len(keys) > 0 {
			r.client.Del(context.Background(), keys...)
		}
		_ = r.Close(context.Background())
	})
	return r
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: interrupt},
		New: func(t *testing.T) conformance.Fixture {
			name := testenv.Name("kisflow-test-")
			r := start(t, name, map[string]string{"mode": "stream", "claim_idle": "500ms", "block": "200ms", "client_name": name})
			return conformance.Fixture{Sink: r, Open: func(ctx context.Context, group string) (stream.Source, error) {
				return r.OpenSource(ctx, stream.SourceOptions{Name: group})
			}}
		},
	})
}

// interrupt kills the connections of the clients the conformance fixtures
// opened (by their client name), leaving other tests' connections alone.
func interrupt(t *testing.T) {
	r := start(t, testenv.Name("kisflow-admin-"), nil)
	list, err := r.client.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, "name=kisflow-test-") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if r.client.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err() == nil {
					killed++
				}
			}
		}
	}
	if killed == 0 {
		t.Fatal("no connection to cut")
	}
}

func TestSaveModesAndLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	for _, mode := range []string{"hash", "string", "list"} {
		r := start(t, prefix+mode+":{user_id}", map[string]string{"mode": mode, "ttl": "1h"})
		rows := []any{map[string]any{"user_id": 7, "name": "ann", "score": 9.5}, map[string]any{"user_id": 8, "name": "bob"}}
		if err := r.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
		key := prefix + mode + ":7"
		if ttl := r.client.TTL(ctx, key).Val(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s: ttl %v", mode, ttl)
		}
		switch mode {
		case "hash", "string":
			got, err := r.Load(ctx, map[string]any{"user_id": 7, "extra": true})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got["name"]) != "ann" || got["extra"] != true {
				t.Errorf("%s load: %v", mode, got)
			}
			missing, err := r.Load(ctx, map[string]any{"user_id": 99})
			if err != nil || len(missing) != 1 {
				t.Errorf("%s load of a missing key: %v %v", mode, missing, err)
			}
		case "list":
			if n := r.client.LLen(ctx, key).Val(); n != 1 {
				t.Errorf("list length %d", n)
			}
		}
	}
	r := start(t, prefix+"x:{user_id}", nil)
	if err := r.Write(ctx, []any{map[string]any{"name": "no id"}}); err == nil || !strings.Contains(err.Error(), `needs field "user_id"`) {
		t.Errorf("missing key field: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []*config.Conn{
		{CName: "r", Params: map[string]string{}},
		{CName: "r", Key: "k", Params: map[string]string{"mode": "set"}},
		{CName: "r", Key: "k{", Params: map[string]string{}},
		{CName: "r", Key: "k", Params: map[string]string{"ttl": "soon"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestDedupMakesListAndStreamSavesIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	for _, mode := range []string{"list", "stream"} {
		r := start(t, prefix+mode+":{user_id}", map[string]string{"mode": mode, "dedup_key": "{order_id}", "ttl": "1h"})
		rows := []any{
			map[string]any{"user_id": 1, "order_id": 10},
			map[string]any{"user_id": 1, "order_id": 11},
		}
		for range 3 { // a batch redelivered twice
			if err := r.Write(ctx, rows); err != nil {
				t.Fatal(err)
			}
		}
		key := prefix + mode + ":1"
		var n int64
		if mode == "list" {
			n = r.client.LLen(ctx, key).Val()
		} else {
			n = r.client.XLen(ctx, key).Val()
		}
		if n != 2 {
			t.Fatalf("%s: %d entries after three saves of two rows, want 2", mode, n)
		}
		if ttl := r.client.TTL(ctx, key).Val(); ttl <= 0 {
			t.Fatalf("%s: ttl %v", mode, ttl)
		}
		r.client.Del(ctx, "kisflow:saved:r:"+key+":10", "kisflow:saved:r:"+key+":11")
	}
}

// TestConformanceAcrossARestart runs the suite against a private Redis that
// the interruption restarts (its data kept in an append-only file).
func TestConformanceAcrossARestart(t *testing.T) {
	srv := testenv.PrivateRedis(t)
	t.Setenv(testenv.Redis.Env, fmt.Sprintf("127.0.0.1:%d", srv.Port()))
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: srv.Restart},
		New: func(t *testing.T) conformance.Fixture {
			name := testenv.Name("kisflow-test-")
			r := start(t, name, map[string]string{"mode": "stream", "claim_idle": "500ms", "block": "200ms"})
			return conformance.Fixture{Sink: r, Open: func(ctx context.Context, group string) (stream.Source, error) {
				return r.OpenSource(ctx, stream.SourceOptions{Name: group})
			}}
		},
	})
}

func TestConnectorsShareAClientPlugin(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis.Addr(t)
	prefix := testenv.Name("kfplug")
	eng, a, b := testenv.SharedClients(t, Install, PluginType,
		"kistype: global\nplugins:\n  redis:\n    main: {addr: \""+addr+"\", db: 0}\n",
		"kistype: conn\ncname: a\ntype: redis\nkey: "+prefix+":a:{id}\nparams: {client: main}\n---\n"+
			"kistype: conn\ncname: b\ntype: redis\nkey: "+prefix+":b:{id}\nparams: {client: main, mode: string}\n---\n"+
			"kistype: conn\ncname: bad\ntype: redis\nkey: x\nparams: {client: nosuch}\n")
	ctx := context.Background()
	ra, rb := a.(*Redis), b.(*Redis)
	p, _ := eng.Plugin(PluginType, "main")
	if ra.Client() != p.(*ClientPlugin).Client() || rb.Client() != ra.Client() {
		t.Fatal("the connectors do not use the plugin's client")
	}
	if err := ra.Write(ctx, []any{map[string]any{"id": 1, "v": "x"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := ra.Client().Exists(ctx, prefix+":a:1").Result(); err != nil || n != 1 {
		t.Fatalf("write through the shared client: %d %v", n, err)
	}
	_ = ra.Client().Del(ctx, prefix+":a:1")
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ra.Client().Ping(ctx).Err(); err == nil {
		t.Fatal("the shared client is still open after the engine closed")
	}
}

// CommitBatch writes rows, the position and the consumed IDs together, and
// writes nothing when a row cannot be saved.
func TestCommitBatchRecordsPositionAndIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	r := start(t, prefix+"list:{user_id}", map[string]string{"mode": "list", "state_prefix": prefix + "list:state:"})
	key := prefix + "list:1"
	rows := []any{map[string]any{"user_id": 1, "n": 1}, map[string]any{"user_id": 1, "n": 2}}
	if err := r.CommitBatch(ctx, "f", "7", []string{"a", "b"}, rows); err != nil {
		t.Fatal(err)
	}
	if n := r.client.LLen(ctx, key).Val(); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	if pos, err := r.Position(ctx, "f"); err != nil || pos != "7" {
		t.Fatalf("position %q %v, want 7", pos, err)
	}
	if pos, err := r.Position(ctx, "other"); err != nil || pos != "" {
		t.Fatalf("position of a stream never committed: %q %v", pos, err)
	}
	seen, err := r.Seen(ctx, "f", []string{"a", "c", "b"})
	if err != nil || !seen["a"] || !seen["b"] || seen["c"] || len(seen) != 2 {
		t.Fatalf("seen %v %v, want a and b", seen, err)
	}
	bad := []any{map[string]any{"user_id": 1, "n": 3}, map[string]any{"n": 4}} // no user_id for the key
	if err := r.CommitBatch(ctx, "f", "9", []string{"c"}, bad); err == nil {
		t.Fatal("a row without its key field committed")
	}
	if n := r.client.LLen(ctx, key).Val(); n != 2 {
		t.Fatalf("a failed batch wrote: %d entries", n)
	}
	if pos, _ := r.Position(ctx, "f"); pos != "7" {
		t.Fatalf("a failed batch moved the position to %q", pos)
	}
	if seen, _ := r.Seen(ctx, "f", []string{"c"}); seen["c"] {
		t.Fatal("a failed batch recorded its IDs")
	}
	// A key of another type would fail one command of the transaction and
	// Redis would run the others: the batch must fail before any runs.
	other := prefix + "list:2"
	r.client.Set(ctx, other, "a string", 0)
	mixed := []any{map[string]any{"user_id": 1, "n": 5}, map[string]any{"user_id": 2, "n": 6}}
	if err := r.CommitBatch(ctx, "f", "11", []string{"d"}, mixed); err == nil || !strings.Contains(err.Error(), "holds a string") {
		t.Fatalf("a batch over a key of another type: %v", err)
	}
	if n := r.client.LLen(ctx, key).Val(); n != 2 {
		t.Fatalf("a batch that failed its type check wrote: %d entries", n)
	}
	if seen, _ := r.Seen(ctx, "f", []string{"d"}); seen["d"] {
		t.Fatal("a batch that failed its type check recorded its IDs")
	}
}

type item struct {
	N int `json:"n"`
}

// A Redis Streams job with an exactly-once Redis sink: when every entry is
// delivered again (the group rewound, as after a crash between commit and
// XACK), the sink recognises each by its entry ID and saves nothing twice.
func TestExactlyOnceIntoRedisSkipsRedeliveredEntries(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis.Addr(t)
	prefix := testenv.Name("kisflow-test-")
	in := start(t, prefix+"in", map[string]string{"mode": "stream"})
	ctx := context.Background()
	t.Cleanup(func() { // the sink's list and state keys
		if keys, err := in.client.Keys(ctx, prefix+"*").Result(); err == nil && len(keys) > 0 {
			in.client.Del(ctx, keys...)
		}
	})
	const n = 20
	rows := make([]any, n)
	for i := range rows {
		rows[i] = map[string]any{"n": i}
	}
	if err := in.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	run := func() kisflow.JobStats {
		t.Helper()
		reg := kisflow.NewRegistry()
		if err := Install(reg); err != nil {
			t.Fatal(err)
		}
		reg.MustRegister("Pass", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*item) error {
			for _, r := range rows {
				_ = f.CommitRow(r)
			}
			return nil
		}))
		eng := testenv.Engine(t, reg, map[string]string{
			"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Copy\nflows: [{fname: Pass}]\nstream: {source: in, sink: out, delivery: exactly-once, linger: 1ms}\n",
			"func.yml": "kistype: func\nfname: Pass\nfmode: Calculate\n",
			"conns.yml": "kistype: conn\ncname: in\ntype: redis\naddrs: " + addr + "\nkey: " + prefix + "in\nparams: {mode: stream, group: copy}\n---\n" +
				"kistype: conn\ncname: out\ntype: redis\naddrs: " + addr + "\nkey: " + prefix + "out\nparams: {mode: list, state_prefix: \"" + prefix + "state:\"}\n",
		})
		defer eng.Close(ctx)
		return testenv.RunJob(t, eng, "Copy", n, 20*time.Second)
	}
	if s := run(); s.Skipped != 0 || s.Out != n {
		t.Fatalf("first run: %+v", s)
	}
	if err := in.client.XGroupSetID(ctx, prefix+"in", "copy", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if s := run(); s.Skipped != n || s.Out != 0 {
		t.Fatalf("second run over the same entries: %+v, want all %d skipped", s, n)
	}
	if got := in.client.LLen(ctx, prefix+"out").Val(); got != n {
		t.Fatalf("the sink holds %d rows, want %d", got, n)
	}
}
