package fault

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// total is the number of rows counts holds, repeats included.
func total(counts map[int64]int, err error) int {
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// waitProgress waits until the sink holds more than min rows, failing
// when p exits first.
func waitProgress(t *testing.T, p *Proc, timeout time.Duration, min int, count func() int, what string) {
	t.Helper()
	Eventually(t, timeout, what, func() bool {
		if p.Exited() {
			t.Fatalf("kisflow run exited (code %d) %s; output:\n%s", exitCode(p.err), what, tail(p.Output(), 4000))
		}
		return count() > min
	})
}

// waitAllIDs waits until ids holds each of 1..n at least once, failing
// when p exits first.
func waitAllIDs(t *testing.T, p *Proc, timeout time.Duration, ids func() (map[int64]int, error), n int, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			t.Fatalf("kisflow run exited (code %d) %s; output:\n%s", exitCode(p.err), what, tail(p.Output(), 4000))
		}
		c, err := ids()
		if err == nil && len(Check(c, n, false)) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v %s, the sink does not hold every id (err %v): %v", timeout, what, err, Check(c, n, false))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopCleanly waits until the job started, sends SIGTERM and expects a drained exit 0 (the test goes
// on to check the sink either way).
func stopCleanly(t *testing.T, p *Proc) {
	t.Helper()
	// A SIGTERM before kisflow handles it would kill it: it handles it
	// before the jobs start (run with --log-level info).
	p.WaitFor("job starts", 30*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Errorf("kisflow run exited %d after SIGTERM; output:\n%s", code, tail(p.Output(), 4000))
	}
}

// TestSIGKILLExactlyOnce kills an exactly-once job reading a broker into
// SQLite with SIGKILL at random points (each after the job committed
// something new), several times, then lets a last run finish: every id is
// in the sink exactly once.
func TestSIGKILLExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, sys := range []struct {
		name, fast string // fast: a param that redelivers a dead consumer's messages soon
	}{
		{"redis", "  claim_idle: 2s\n"},
		{"nats", "  ack_wait: 2s\n"},
	} {
		t.Run(sys.name, func(t *testing.T) {
			if testing.Short() && sys.name != "redis" {
				t.Skip("-short: redis only")
			}
			t.Parallel()
			kills := 8
			if testing.Short() || raceEnabled {
				kills = 4
			}
			const n = 6000
			work := t.TempDir()
			r := rigOf(t, sys.name)(t, work)
			dir := idFlow(t, "exactly-once", r.source+sys.fast+"---\n"+r.sink)
			Throttle(t, dir, 2000) // about 3 s of work: the kills land mid-stream
			if err := r.publish(1, n); err != nil {
				t.Fatal(err)
			}
			seed := uint64(time.Now().UnixNano())
			rnd := rand.New(rand.NewPCG(seed, 0))
			count := func() int { return total(r.ids()) }
			state := filepath.Join(work, "state")
			// No row is poison: a dead letter is a message lost to the crashes.
			deadLetters := filepath.Join(state, "dead-letter", "Ids.jsonl")
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%d dead letters in %s", len(JSONLines(t, deadLetters)), deadLetters)
				}
			})
			midStream := 0
			for k := 1; k <= kills; k++ {
				before := count()
				if before >= n {
					break
				}
				p := Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never", "--log-level", "info")
				waitProgress(t, p, time.Minute, before, count, fmt.Sprintf("with no new row in the sink (%d of %d ids) before kill %d", before, n, k))
				time.Sleep(time.Duration(rnd.IntN(300)) * time.Millisecond) // a random point after the first commit
				p.Kill()
				if count() < n {
					midStream++
				}
			}
			t.Logf("seed %d: %d of %d SIGKILLs landed before the last id was stored", seed, midStream, kills)
			if midStream == 0 {
				t.Fatalf("no SIGKILL landed mid-stream: the job stored all %d ids before the first kill", n)
			}
			p := Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never", "--log-level", "info")
			waitAllIDs(t, p, 3*time.Minute, r.ids, n, "after the kills")
			stopCleanly(t, p)
			c, err := r.ids()
			if err != nil {
				t.Fatal(err)
			}
			if bad := Check(c, n, true); len(bad) > 0 {
				t.Fatalf("after %d SIGKILLs: %v", midStream, bad)
			}
			if dl := JSONLines(t, deadLetters); len(dl) > 0 {
				t.Fatalf("after %d SIGKILLs, %d messages were dead-lettered, though no row is poison; the first: %v", midStream, len(dl), dl[0])
			}
		})
	}
}

// TestGroupMemberKilled runs two `kisflow run` processes on one consumer
// group (Redis Streams group, JetStream durable consumer) with the
// defaults a user gets, writing exactly-once to one PostgreSQL table, and
// kills one with SIGKILL mid-stream. The survivor must take over the dead
// member's messages within the redelivery delay (claim_idle, ack_wait:
// 30s by default) plus 15s for the work, and finish: every id exactly
// once. It logs
//
//	takeover system=NAME ms=N rows_at_kill=M
func TestGroupMemberKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the takeover waits for the 30s redelivery delay")
	}
	t.Parallel()
	const redelivery = 30 * time.Second
	for _, name := range []string{"redis", "nats"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const n = 4000
			work := t.TempDir()
			r := rigOf(t, name)(t, work)
			dsn := testenv.PostgresDatabase(t)
			db, err := sql.Open("pgx", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ids := func() (map[int64]int, error) { return queryIDs(db, "SELECT id FROM out") }
			count := func() int { return total(ids()) }
			sink := "kistype: conn\ncname: out\ntype: postgres\nkey: out\nparams:\n  dsn: " + dsn + "\n  create: \"true\"\n  columns: id\n"
			dir := idFlow(t, "exactly-once", r.source+"---\n"+sink)
			if err := r.publish(1, n); err != nil {
				t.Fatal(err)
			}
			a := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "a"), "--progress", "never", "--log-level", "info")
			b := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "b"), "--progress", "never", "--log-level", "info")
			waitProgress(t, b, time.Minute, n/5, count, "before the kill")
			a.Kill()
			killed := time.Now()
			atKill := count()
			waitAllIDs(t, b, redelivery+2*time.Minute, ids, n, "after one member was killed")
			takeover := time.Since(killed)
			t.Logf("takeover system=%s ms=%d rows_at_kill=%d", name, takeover.Milliseconds(), atKill)
			stopCleanly(t, b)
			c, err := ids()
			if err != nil {
				t.Fatal(err)
			}
			if bad := Check(c, n, true); len(bad) > 0 {
				t.Fatalf("after one member was killed: %v", bad)
			}
			if limit := redelivery + 15*time.Second; takeover > limit {
				t.Fatalf("the survivor needed %v to finish the killed member's %d rows; want within %v", takeover.Round(time.Second), n-atKill, limit)
			}
		})
	}
}
