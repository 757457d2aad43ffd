package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
	goredis "github.com/redis/go-redis/v9"
)

// rsBounded is a config folder whose flow Ids reads the Redis stream key
// (group g, claim_idle 3s, and consumer when not empty) up to stop:
// at_start, exactly-once into the SQLite table out, in batches of 20.
func rsBounded(t *testing.T, addr, key, consumer string) string {
	t.Helper()
	params := ""
	if consumer != "" {
		params = "  consumer: " + consumer + "\n"
	}
	return idsToSQLite(t, "rs", fmt.Sprintf("kistype: conn\ncname: rs\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: stream\n  group: g\n  claim_idle: 3s\n%s", addr, key, params), "  stop: at_start\n  batch_size: 20\n")
}

// rsPublished is a stream of the test Redis server, named after prefix,
// holding {"id": i} for i in 1..n; it is deleted when the test ends.
func rsPublished(t *testing.T, prefix string, n int) (addr string, rdb *goredis.Client, key string) {
	t.Helper()
	addr = testenv.Redis.Addr(t)
	rdb = redisClient(t, addr)
	key = testenv.Name(prefix)
	publish(t, rdb, key, 1, n)
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	return addr, rdb, key
}

// Issue 14 (adversarial review), item 4: right after a bounded run of a
// consumer with a stable name ended cleanly, kisflow positions set was
// refused for seconds ("consumer c1 ... read 340ms ago: a run of the flow
// holds it"), and it said the position moved "from none" where kisflow
// positions showed the group's last delivered ID. A consumer that ends
// with nothing pending leaves the group; the set names the ID it moves
// from; the replay then writes every id again, once.
func TestRedisPositionsSetAfterACleanRun(t *testing.T) {
	t.Parallel()
	addr, rdb, key := rsPublished(t, "kf:rsset", 200)
	last, err := rdb.XInfoStream(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	dir := rsBounded(t, addr, key, "c1")
	runOK(t, dir, ".")
	pos := Run(t, dir, time.Minute, "positions", ".")
	if pos.Code != 0 || !strings.Contains(pos.Stdout, last.LastGeneratedID) {
		t.Fatalf("positions: exit %d, want the committed %s\n%s%s", pos.Code, last.LastGeneratedID, pos.Stdout, pos.Stderr)
	}
	set := Run(t, dir, time.Minute, "positions", "set", ".", "Ids", "--earliest")
	if set.Code != 0 {
		t.Fatalf("positions set right after a clean run: exit %d\n%s%s", set.Code, set.Stdout, set.Stderr)
	}
	wantLines(t, set.Stdout, "flow Ids: position moved from "+last.LastGeneratedID+" to ")
	runOK(t, dir, ".")
	got := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
	for id := int64(1); id <= 200; id++ {
		if got[id] != 2 {
			t.Fatalf("id %d written %d times after the replay, want 2", id, got[id])
		}
	}
}

// Issue 14 (adversarial review), item 3: Redis Streams runs bounded by
// stop: at_start SIGKILLed at random points leave entries pending with
// their consumers (named after the process, so gone); the next run read
// the rest up to its stop and ended with exit 0 and a gap, the dead
// consumers' entries claimed only by a run after claim_idle. Now a run
// waits at its stop while entries before it are pending with another
// consumer, and claims them after claim_idle (3s here): after 5 kills
// one run ends with exit 0 and every id is in the sink once.
func TestRedisStopAcrossSIGKILL(t *testing.T) {
	t.Parallel()
	addr, _, key := rsPublished(t, "kf:rsk", 15000)
	dir := rsBounded(t, addr, key, "")
	killRuns(t, dir, 5) // then a last run, which must exit 0
	got := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
	if bad := Check(got, 15000, true); len(bad) > 0 {
		t.Fatalf("%d ids after the kills and a final run: %v", len(got), bad)
	}
}
