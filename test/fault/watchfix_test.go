package fault

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Changes saved while a changed flow drains are not lost behind the one
// that began the drain: the flow starts again with the newest version on
// disk. Version 4 holds its batches in a slow rate limit, so its drain
// lasts seconds; versions 5, 6 and 7 are saved meanwhile, and no row may
// be computed by 5 or 6 (it used to start with 5, then restart with 7).
func TestWatchStartsTheNewestVersionAfterASlowDrain(t *testing.T) {
	t.Parallel()
	slow := strings.Replace(watchFlow("A", "id * 4"), "keep: [id, v]\n", "keep: [id, v]\noption:\n  filters:\n    - name: ratelimit\n      params: {rate: 0.3, burst: 1}\n", 1)
	slow = strings.Replace(slow, "  linger: 20ms\n", "  linger: 20ms\n  drain_timeout: 20s\n", 1)
	dir := Dir(t, map[string]string{"a.yml": slow})
	startAppender(t, filepath.Join(dir, "A.jsonl"), 3*time.Millisecond)
	p := Start(t, "", nil, "run", "--watch", "--log-level", "info", dir)
	p.WaitFor("watch: watching", 60*time.Second)
	p.WaitFor("job starts", 30*time.Second)
	time.Sleep(time.Second) // rows read and held in the rate limit

	writeFile(t, filepath.Join(dir, "a.yml"), watchFlow("A", "id * 5"))
	p.WaitFor("watch: flow A changed: draining it", 30*time.Second)
	writeFile(t, filepath.Join(dir, "a.yml"), watchFlow("A", "id * 6"))
	time.Sleep(100 * time.Millisecond)
	writeFile(t, filepath.Join(dir, "a.yml"), watchFlow("A", "id * 7"))
	deadline := time.Now().Add(90 * time.Second)
	for !by(watchRows(t, dir, "A"), 7) {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("no row computed by the newest version (exited %v):\n%s", p.Exited(), tail(p.Output(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	n := len(watchRows(t, dir, "A"))
	waitRows(t, p, dir, "A", int64(n+50), 60*time.Second)
	by7 := 0
	for id, vs := range watchRows(t, dir, "A") {
		for _, v := range vs {
			switch v {
			case id * 5, id * 6:
				t.Fatalf("row %d was computed by a superseded version (v = %d):\n%s", id, v, tail(p.Output(), 4000))
			case id * 7:
				by7++
			}
		}
	}
	if by7 == 0 || !strings.Contains(p.Output(), "changed again while flows drained: reading it again") {
		t.Fatalf("%d rows computed by the newest version; the re-read is not said:\n%s", by7, tail(p.Output(), 4000))
	}
}

// by reports whether a row of rows was computed as id * k.
func by(rows map[int64][]int64, k int64) bool {
	for id, vs := range rows {
		for _, v := range vs {
			if v == id*k && id != 0 {
				return true
			}
		}
	}
	return false
}

// Renaming a flow under --watch starts a new flow, which reads its source
// from its own position: the watch says so, naming both flows.
func TestWatchWarnsWhenAFlowIsRenamed(t *testing.T) {
	t.Parallel()
	dir := Dir(t, map[string]string{"a.yml": watchFlow("A", "id * 2")})
	startAppender(t, filepath.Join(dir, "A.jsonl"), 3*time.Millisecond)
	p := Start(t, "", nil, "run", "--watch", dir)
	p.WaitFor("watch: watching", 60*time.Second)
	waitRows(t, p, dir, "A", 10, 60*time.Second)
	writeFile(t, filepath.Join(dir, "a.yml"), strings.Replace(watchFlow("A", "id * 2"), "flow_name: A\n", "flow_name: A2\n", 1))
	p.WaitFor("watch: warning: flow A2 is new and flow A, no longer run, read the same source in_A: positions are kept per flow name", 30*time.Second)
}
