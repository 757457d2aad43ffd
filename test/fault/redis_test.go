package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// redisFlow is a config folder: a Redis stream (key, group g, claim_idle,
// and consumer when not empty) -> keep the id -> sink, linger 20ms against
// the source's 1s block. sink is the YAML of the connector "out".
func redisFlow(t testing.TB, addr, key, claimIdle, consumer, sink string) string {
	t.Helper()
	params := ""
	if consumer != "" {
		params = "  consumer: " + consumer + "\n"
	}
	return Dir(t, map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Events
flows:
  - fname: Keep
stream:
  source: in
  sink: out
  batch_size: 200
  linger: 20ms
`,
		"funcs.yml": "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n",
		"conns.yml": fmt.Sprintf(`kistype: conn
cname: in
type: redis
addrs: %s
key: %s
params:
  mode: stream
  group: g
  block: 1s
  claim_idle: %s
%s---
%s`, addr, key, claimIdle, params, sink),
	})
}

// listOut is the YAML of a sink "out" into the Redis list key (the test
// counts its ids while the job runs, which an SQLite file would refuse
// with SQLITE_BUSY), and a function counting them.
func listOut(t testing.TB, key string) (string, func() map[int64]int) {
	addr := testenv.Redis.Addr(t)
	rdb := redisClient(t, addr)
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	yaml := fmt.Sprintf("kistype: conn\ncname: out\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: list\n", addr, key)
	return yaml, func() map[int64]int { return listIDs(t, rdb, key) }
}

// publish appends {"id": i} for i in from..to to the stream.
func publish(t testing.TB, rdb goredis.UniversalClient, key string, from, to int) {
	t.Helper()
	for start := from; start <= to; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i <= min(start+999, to); i++ {
			pipe.XAdd(context.Background(), &goredis.XAddArgs{Stream: key, Values: []any{"data", fmt.Sprintf(`{"id":%d}`, i)}})
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func redisClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// A slow stream (an entry every 100ms) read with a linger shorter than the
// source's block: every linger ends in an empty poll, which must not end
// the job (it did, at random: "flow Events failed: context deadline
// exceeded").
func TestRedisSlowStreamKeepsRunning(t *testing.T) {
	t.Parallel()
	span := 20 * time.Second
	if testing.Short() {
		span = 5 * time.Second
	}
	addr := testenv.Redis.Addr(t)
	key := testenv.Name("kisflow-fault-")
	rdb := redisClient(t, addr)
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	sink, ids := listOut(t, key+":out")
	dir := redisFlow(t, addr, key, "30s", "", sink)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	n := int(span / (100 * time.Millisecond))
	tick := time.NewTicker(100 * time.Millisecond) // the stream's pace
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		<-tick.C
		if p.Exited() {
			t.Fatalf("kisflow ended after %d of %d entries:\n%s", i-1, n, tail(p.Output(), 4000))
		}
		publish(t, rdb, key, i, i)
	}
	Eventually(t, 30*time.Second, "every entry in the sink", func() bool {
		return len(ids()) == n || p.Exited()
	})
	if p.Exited() {
		t.Fatalf("kisflow ended on a slow stream:\n%s", tail(p.Output(), 4000))
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	if bad := Check(ids(), n, true); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
}

// Redis restarted for 1s mid-stream (its data kept in an append-only
// file): the job rides it out and writes every id at least once. Needs the
// runtime to retry source errors that are not marked fatal.
func TestRedisRestartMidStream(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateRedis(t)
	addr := fmt.Sprintf("127.0.0.1:%d", srv.Port())
	key := testenv.Name("kisflow-fault-")
	rdb := redisClient(t, addr)
	sink, ids := listOut(t, key+":out")
	dir := redisFlow(t, addr, key, "30s", "", sink)
	const n = 3000
	publish(t, rdb, key, 1, n/3)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	Eventually(t, 30*time.Second, "the first entries in the sink", func() bool {
		return len(ids()) >= n/6 || p.Exited()
	})
	_ = rdb.Shutdown(context.Background()).Err() // its reply is the closed connection
	time.Sleep(time.Second)                      // the outage
	srv.Restart(t)
	back := time.Now()
	publish(t, rdb, key, n/3+1, n)
	Eventually(t, 60*time.Second, "every id in the sink after the restart", func() bool {
		return len(ids()) == n || p.Exited()
	})
	if p.Exited() {
		t.Fatalf("kisflow ended across a 1s Redis restart:\n%s", tail(p.Output(), 4000))
	}
	t.Logf("every id written %v after Redis came back", time.Since(back).Round(time.Millisecond))
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	if bad := Check(ids(), n, false); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	// The outage is reported by the runtime, once; go-redis's own lines
	// ("redis: ... pool.go: ... failed to dial") stay out of stderr.
	if strings.Contains(p.Stderr(), "pool.go") {
		t.Errorf("go-redis's own log reached stderr:\n%s", tail(p.Stderr(), 2000))
	}
}

// Two processes share a consumer group; one is SIGKILLed with entries
// pending. The survivor acknowledges every entry the dead one held within
// claim_idle and a margin, and the sink (a Redis list) holds every id.
func TestRedisGroupTakeover(t *testing.T) {
	t.Parallel()
	const claimIdle = 5 * time.Second
	n := 40000
	if testing.Short() {
		n = 10000
	}
	addr := testenv.Redis.Addr(t)
	key := testenv.Name("kisflow-fault-")
	rdb := redisClient(t, addr)
	ctx := context.Background()
	t.Cleanup(func() { rdb.Del(ctx, key, key+":out") })
	sink := fmt.Sprintf("kistype: conn\ncname: out\ntype: redis\naddrs: %s\nkey: %s:out\nparams:\n  mode: list\n", addr, key)
	publish(t, rdb, key, 1, n)
	run := func(consumer string) *Proc {
		dir := redisFlow(t, addr, key, claimIdle.String(), consumer, sink)
		return Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	}
	victim, survivor := run("victim"), run("survivor")
	Eventually(t, 60*time.Second, "the victim holding entries", func() bool {
		s, err := rdb.XPending(ctx, key, "g").Result()
		return (err == nil && s.Consumers["victim"] > 0) || victim.Exited() || survivor.Exited()
	})
	victim.Kill()
	killed := time.Now()
	pending, err := rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: key, Group: "g", Start: "-", End: "+", Count: int64(n), Consumer: "victim"}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, e := range pending {
		held = append(held, e.ID)
	}
	if len(held) == 0 {
		t.Fatalf("the killed process held no entries: nothing to take over")
	}
	stillPending := func() int {
		left := 0
		for start := 0; start < len(held); start += 1000 {
			chunk := held[start:min(start+1000, len(held))]
			res, err := rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: key, Group: "g", Start: chunk[0], End: chunk[len(chunk)-1], Count: int64(n)}).Result()
			if err != nil {
				t.Fatal(err)
			}
			mine := make(map[string]bool, len(chunk))
			for _, id := range chunk {
				mine[id] = true
			}
			for _, e := range res {
				if mine[e.ID] {
					left++
				}
			}
		}
		return left
	}
	Eventually(t, claimIdle+30*time.Second, "the dead process's entries acknowledged", func() bool {
		return stillPending() == 0 || survivor.Exited()
	})
	if survivor.Exited() {
		t.Fatalf("the survivor ended:\n%s", tail(survivor.Output(), 4000))
	}
	took := time.Since(killed)
	t.Logf("takeover: %d entries the killed process held acknowledged by the survivor %v after the kill (claim_idle %v)", len(held), took.Round(time.Millisecond), claimIdle)
	if limit := claimIdle + 5*time.Second; took > limit {
		t.Errorf("takeover took %v, more than claim_idle + 5s = %v", took, limit)
	}
	Eventually(t, 60*time.Second, "every id in the sink", func() bool {
		return len(listIDs(t, rdb, key+":out")) == n || survivor.Exited()
	})
	survivor.Signal(syscall.SIGTERM)
	if code := survivor.Wait(30 * time.Second); code != 0 {
		t.Fatalf("survivor exit %d after SIGTERM", code)
	}
	if bad := Check(listIDs(t, rdb, key+":out"), n, false); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
}

// listIDs counts the ids of the JSON rows in a Redis list.
func listIDs(t testing.TB, rdb *goredis.Client, key string) map[int64]int {
	t.Helper()
	rows, err := rdb.LRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	counts := make(map[int64]int, len(rows))
	for _, r := range rows {
		var row struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(r), &row); err != nil {
			t.Fatalf("sink row %q: %v", r, err)
		}
		counts[row.ID]++
	}
	return counts
}
