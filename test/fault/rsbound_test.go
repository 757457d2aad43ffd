package fault

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

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
	addr := testenv.Redis.Addr(t)
	rdb := redisClient(t, addr)
	key := testenv.Name("kf:rsk")
	publish(t, rdb, key, 1, 15000)
	dir := Dir(t, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ids\nflows:\n  - fname: Keep\nstream:\n  source: rs\n  sink: db\n  delivery: exactly-once\n  stop: at_start\n  batch_size: 20\n",
		"funcs.yml": "kistype: func\nfname: Keep\nfmode: Verify\nfilter: 'true'\n",
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: rs\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: stream\n  group: g\n  claim_idle: 3s\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id\n", addr, key),
	})
	t.Cleanup(func() { rdb.Del(t.Context(), key) })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for i := 0; i < 5; i++ {
		p := Start(t, dir, nil, "run", ".", "--progress", "never")
		select {
		case <-time.After(time.Duration(300+rng.IntN(900)) * time.Millisecond):
		case <-p.Done():
		}
		p.Signal(syscall.SIGKILL)
		p.Wait(30 * time.Second)
	}
	runOK(t, dir, ".")
	got := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
	if bad := Check(got, 15000, true); len(bad) > 0 {
		t.Fatalf("%d ids after the kills and a final run: %v", len(got), bad)
	}
}
