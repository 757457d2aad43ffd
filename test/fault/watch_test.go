package fault

import (
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// watchFlow is the YAML of flow name: a followed file name.jsonl, one
// Calculate function computing v from id by expr, an exactly-once SQLite
// sink name.db.
func watchFlow(name, expr string) string {
	return fmt.Sprintf(`kistype: flow
status: 1
flow_name: %[1]s
flows:
  - fname: Calc%[1]s
stream:
  source: in_%[1]s
  sink: out_%[1]s
  delivery: exactly-once
  batch_size: 20
  linger: 20ms
---
kistype: func
fname: Calc%[1]s
fmode: Calculate
calc:
  v: %[2]s
keep: [id, v]
---
kistype: conn
cname: in_%[1]s
type: file
params:
  path: %[1]s.jsonl
  follow: "true"
  poll: 20ms
---
kistype: conn
cname: out_%[1]s
type: sqlite
key: out
params:
  path: %[1]s.db
  create: "true"
  columns: id,v
`, name, expr)
}

// appender appends {"id":n} lines to a file, n = 1, 2, ..., every pause.
type appender struct {
	n    atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func startAppender(t *testing.T, path string, pause time.Duration) *appender {
	a := &appender{stop: make(chan struct{})}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer f.Close()
		for {
			select {
			case <-a.stop:
				return
			case <-time.After(pause):
			}
			n := a.n.Load() + 1
			if _, err := fmt.Fprintf(f, "{\"id\":%d}\n", n); err != nil {
				return
			}
			a.n.Store(n)
		}
	}()
	t.Cleanup(a.halt)
	return a
}

func (a *appender) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.wg.Wait()
}

// watchRows reads id -> v of name.db (nil while the table does not exist).
func watchRows(t *testing.T, dir, name string) map[int64][]int64 {
	t.Helper()
	p := filepath.Join(dir, name+".db")
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	db, err := sql.Open("sqlite", p+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query("SELECT id, v FROM out")
	if err != nil {
		return nil
	}
	defer rs.Close()
	out := map[int64][]int64{}
	for rs.Next() {
		var id, v int64
		if err := rs.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out[id] = append(out[id], v)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitRows waits until name.db holds at least n ids.
func waitRows(t *testing.T, p *Proc, dir, name string, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for int64(len(watchRows(t, dir, name))) < n {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s.db: %d rows, want %d (exited %v); output:\n%s", name, len(watchRows(t, dir, name)), n, p.Exited(), tail(p.Output(), 6000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Issue 16, item 2: run --watch applies a change of one flow's function to
// that flow alone, without losing or duplicating a row across the restart;
// a broken edit keeps the flows running and says where; fixing it applies
// it; a new flow file starts its flow; a deleted one drains it.
func TestWatchRestartsOnlyTheChangedFlow(t *testing.T) {
	t.Parallel()
	dir := Dir(t, map[string]string{"a.yml": watchFlow("A", "id * 2"), "b.yml": watchFlow("B", "id * 7")})
	apA := startAppender(t, filepath.Join(dir, "A.jsonl"), 3*time.Millisecond)
	apB := startAppender(t, filepath.Join(dir, "B.jsonl"), 3*time.Millisecond)
	p := Start(t, "", nil, "run", "--watch", "--log-level", "info", dir)
	p.WaitFor("watch: watching", 60*time.Second)
	waitRows(t, p, dir, "A", 50, 60*time.Second)
	waitRows(t, p, dir, "B", 50, 60*time.Second)

	// 1. Change A's expression: only A restarts.
	writeFile(t, filepath.Join(dir, "a.yml"), watchFlow("A", "id * 3"))
	p.WaitFor("watch: flow A changed: draining it", 30*time.Second)
	p.WaitFor("watch: flow B is unchanged: left running", 30*time.Second)
	p.WaitFor("flow A: resuming at position", 30*time.Second)
	after3 := apA.n.Load() // appended after A's new job started: computed by id * 3
	waitRows(t, p, dir, "A", after3+20, 60*time.Second)

	// 2. A broken edit (a YAML typo, and a new expression): nothing
	// changes, the error says where.
	startsA := strings.Count(p.Output(), "flow A: resuming at position")
	broken := strings.Replace(watchFlow("A", "id * 4"), "flows:\n  - fname: CalcA", "flows:\n  - fname: CalcA\n   bad: [", 1)
	writeFile(t, filepath.Join(dir, "a.yml"), broken)
	p.WaitFor("the change is not applied; the running flows go on", 30*time.Second)
	if !strings.Contains(p.Stderr(), filepath.Join(dir, "a.yml")+":") {
		t.Fatalf("the lint error does not name a.yml with a line:\n%s", tail(p.Stderr(), 4000))
	}
	nA, nB := len(watchRows(t, dir, "A")), len(watchRows(t, dir, "B"))
	waitRows(t, p, dir, "A", int64(nA+50), 30*time.Second)
	waitRows(t, p, dir, "B", int64(nB+50), 30*time.Second)
	if n := strings.Count(p.Output(), "flow A: resuming at position"); n != startsA {
		t.Fatalf("a broken edit restarted flow A")
	}

	// 3. The fix is applied. Rows committed before it are by id * 3.
	before4 := int64(0)
	for id := range watchRows(t, dir, "A") {
		before4 = max(before4, id)
	}
	writeFile(t, filepath.Join(dir, "a.yml"), watchFlow("A", "id * 4"))
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(p.Output(), "flow A: resuming at position") == startsA {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("the fix was not applied:\n%s", tail(p.Output(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	after4 := apA.n.Load()
	waitRows(t, p, dir, "A", after4+20, 60*time.Second)

	// 4. A new flow file starts its flow; deleting it drains it.
	writeFile(t, filepath.Join(dir, "C.jsonl"), idLines(1, 30))
	writeFile(t, filepath.Join(dir, "c.yml"), watchFlow("C", "id + 1"))
	p.WaitFor("flow C: no position: reading from the start", 30*time.Second)
	waitRows(t, p, dir, "C", 30, 30*time.Second)
	if err := os.Remove(filepath.Join(dir, "c.yml")); err != nil {
		t.Fatal(err)
	}
	p.WaitFor("watch: flow C was removed: draining it", 30*time.Second)
	p.WaitFor("watch: flow C drained and stopped", 30*time.Second)

	// Stop appending, let both flows catch up, stop kisflow.
	apA.halt()
	apB.halt()
	waitRows(t, p, dir, "A", apA.n.Load(), 60*time.Second)
	waitRows(t, p, dir, "B", apB.n.Load(), 60*time.Second)
	p.Signal(syscall.SIGINT)
	if code := p.Wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}

	// B's job was never touched: one start, one end, every row once by
	// its expression.
	out := p.Output()
	if n := strings.Count(out, "flow B: no position: reading from the start"); n != 1 || strings.Contains(out, "flow B: resuming") || strings.Contains(out, "watch: flow B changed") {
		t.Fatalf("flow B was restarted:\n%s", tail(out, 6000))
	}
	if n := strings.Count(out, `msg="job starts" flow=B`); n != 1 {
		t.Fatalf("flow B's job started %d times, want 1:\n%s", n, tail(out, 6000))
	}
	rowsB := watchRows(t, dir, "B")
	for id := int64(1); id <= apB.n.Load(); id++ {
		if vs := rowsB[id]; len(vs) != 1 || vs[0] != 7*id {
			t.Fatalf("B: id %d has %v, want exactly [%d]", id, vs, 7*id)
		}
	}
	if int64(len(rowsB)) != apB.n.Load() {
		t.Fatalf("B: %d rows, want %d", len(rowsB), apB.n.Load())
	}
	if n := strings.Count(out, `msg="job starts" flow=A`); n != 3 {
		t.Fatalf("flow A's job started %d times, want 3", n)
	}
	// A: every row exactly once; the factor only grows with the id (2,
	// then 3, then 4), and rows appended after each restart use the new
	// expression.
	rowsA := watchRows(t, dir, "A")
	if int64(len(rowsA)) != apA.n.Load() {
		t.Fatalf("A: %d rows, want %d", len(rowsA), apA.n.Load())
	}
	prev := int64(2)
	seen := map[int64]bool{}
	for id := int64(1); id <= apA.n.Load(); id++ {
		vs := rowsA[id]
		if len(vs) != 1 || vs[0]%id != 0 {
			t.Fatalf("A: id %d has %v, want exactly one multiple of it", id, vs)
		}
		f := vs[0] / id
		if f < prev || f > 4 {
			t.Fatalf("A: id %d has factor %d after factor %d", id, f, prev)
		}
		prev = f
		seen[f] = true
		switch {
		case id > after4 && f != 4:
			t.Fatalf("A: id %d, appended after the fix was applied, has factor %d, want 4", id, f)
		case id > after3 && id <= before4 && f != 3:
			t.Fatalf("A: id %d, appended after the first change was applied, has factor %d, want 3", id, f)
		}
	}
	if !seen[2] || !seen[3] || !seen[4] {
		t.Fatalf("A: factors seen %v, want 2, 3 and 4", seen)
	}
	rowsC := watchRows(t, dir, "C")
	for id := int64(1); id <= 30; id++ {
		if vs := rowsC[id]; len(vs) != 1 || vs[0] != id+1 {
			t.Fatalf("C: id %d has %v", id, vs)
		}
	}
}

// winWatchFlow is a flow Win: a followed file of orders through a window
// of block, grouped by user, exactly-once into a SQLite table.
func winWatchFlow(block string, stream ...string) string {
	return `kistype: flow
status: 1
flow_name: Win
flows:
  - fname: PerUser
stream:
  source: orders
  sink: db
  delivery: exactly-once
  batch_size: 10
  linger: 20ms
` + strings.Join(stream, "") + `---
kistype: func
fname: PerUser
fmode: Calculate
window: {` + block + `, time_field: ts, lateness: 20s, group_by: [user_id], aggregate: {n: count(), total: sum(amount)}}
---
kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl
  follow: "true"
  poll: 20ms
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: win.db
  create: "true"
  columns: user_id, window_start, window_end, n, total
`
}

// Issue 16, item 2: a change that the saved state does not allow (a window
// block changed while its windows are open) is refused with the reason
// and what to do; that flow stays stopped, the other goes on; putting the
// block back starts it again with its windows.
func TestWatchRefusesWindowChangeWithOpenWindows(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, `{"ts":%d,"user_id":%d,"amount":1}`+"\n", base+int64(i)*1000, i%3)
	}
	dir := Dir(t, map[string]string{"win.yml": winWatchFlow("type: tumbling, size: 1h"), "b.yml": watchFlow("B", "id * 7"), "orders.jsonl": lines.String()})
	apB := startAppender(t, filepath.Join(dir, "B.jsonl"), 3*time.Millisecond)
	p := Start(t, "", nil, "run", "--watch", "--log-level", "info", dir)
	p.WaitFor("watch: watching", 60*time.Second)
	waitRows(t, p, dir, "B", 50, 60*time.Second)
	// Win commits its 100 rows (its windows stay open: an hour).
	waitFileCommitted(t, p, filepath.Join(dir, "win.db"), lines.Len())

	writeFile(t, filepath.Join(dir, "win.yml"), winWatchFlow("type: tumbling, size: 2h"))
	p.WaitFor("watch: flow Win changed: draining it", 30*time.Second)
	p.WaitFor("flow Win: 3 open windows are kept for the next run", 30*time.Second)
	// The new job reads the saved windows at its first row.
	f, err := os.OpenFile(filepath.Join(dir, "orders.jsonl"), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"ts":%d,"user_id":0,"amount":1}`+"\n", base+200_000)
	p.WaitFor("open windows saved by an earlier run cannot be restored", 30*time.Second)
	p.WaitFor("restore the window block they were saved with", 30*time.Second)
	p.WaitFor("watch: flow Win stays stopped until its configuration changes; the other flows go on", 30*time.Second)
	nB := len(watchRows(t, dir, "B"))
	waitRows(t, p, dir, "B", int64(nB+50), 30*time.Second)

	// The block put back: Win starts again with its windows.
	writeFile(t, filepath.Join(dir, "win.yml"), winWatchFlow("type: tumbling, size: 1h"))
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(p.Output(), "flow Win: resuming at position") < 2 {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("flow Win did not start again:\n%s", tail(p.Output(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A row two hours on closes the first hour's windows: they hold every
	// row, those before the refused change and the one read by the
	// refused job (not committed, so read again).
	fmt.Fprintf(f, `{"ts":%d,"user_id":0,"amount":1}`+"\n", base+2*3600_000+30_000)
	f.Close()
	want := map[int64]int64{0: 35, 1: 33, 2: 33}
	deadline = time.Now().Add(30 * time.Second)
	for {
		got := winCounts(t, dir)
		if maps.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("windows of the first hour: %v, want %v\n%s", got, want, tail(p.Output(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	apB.halt()
	waitRows(t, p, dir, "B", apB.n.Load(), 60*time.Second)
	p.Signal(syscall.SIGINT)
	if code := p.Wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if n := strings.Count(p.Output(), `msg="job starts" flow=B`); n != 1 {
		t.Fatalf("flow B's job started %d times, want 1", n)
	}
	if os.Getenv("WATCH_PEEK") != "" {
		t.Log(p.Output())
	}
	rowsB := watchRows(t, dir, "B")
	for id := int64(1); id <= apB.n.Load(); id++ {
		if vs := rowsB[id]; len(vs) != 1 || vs[0] != 7*id {
			t.Fatalf("B: id %d has %v, want exactly [%d]", id, vs, 7*id)
		}
	}
}

// winCounts reads user -> n of the windows starting at 2026-01-01T00:00Z
// in win.db.
func winCounts(t *testing.T, dir string) map[int64]int64 {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "win.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query("SELECT user_id, n FROM out")
	if err != nil {
		return nil
	}
	defer rs.Close()
	out := map[int64]int64{}
	for rs.Next() {
		var u, n int64
		if err := rs.Scan(&u, &n); err != nil {
			t.Fatal(err)
		}
		out[u] += n
	}
	return out
}

// Issue 16, item 2: a changed stream.key while several workers hold open
// windows split by the old key is refused before anything is drained: the
// flow goes on with its old configuration and the reason is printed.
func TestWatchRefusesKeyChangeWithOpenWindows(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, `{"ts":%d,"user_id":%d,"shop":%d,"amount":1}`+"\n", base+int64(i)*1000, i%3, 10*(i%3))
	}
	// Grouped by user and shop (a shop has one user): both are keys the
	// lint allows.
	flow := func(key string) string {
		return strings.Replace(winWatchFlow("type: tumbling, size: 1h", "  workers: 2\n  key: "+key+"\n"), "group_by: [user_id]", "group_by: [user_id, shop]", 1)
	}
	dir := Dir(t, map[string]string{"win.yml": flow("user_id"), "orders.jsonl": lines.String()})
	p := Start(t, "", nil, "run", "--watch", "--log-level", "info", dir)
	p.WaitFor("watch: watching", 60*time.Second)
	waitFileCommitted(t, p, filepath.Join(dir, "win.db"), lines.Len()) // its windows stay open

	writeFile(t, filepath.Join(dir, "win.yml"), flow("shop"))
	p.WaitFor(`watch: flow Win: change refused: stream.key changed from "user_id" to "shop" while 2 workers keep window state split by "user_id"`, 30*time.Second)
	if strings.Contains(p.Output(), "flow Win changed: draining") || strings.Count(p.Output(), `msg="job starts" flow=Win`) != 1 {
		t.Fatalf("the refused change drained the flow:\n%s", tail(p.Output(), 4000))
	}
	// Its job goes on: a row two hours on closes the first hour's windows.
	f, err := os.OpenFile(filepath.Join(dir, "orders.jsonl"), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for u := range 3 {
		fmt.Fprintf(f, `{"ts":%d,"user_id":%d,"shop":%d,"amount":1}`+"\n", base+2*3600_000+30_000, u, 10*u)
	}
	f.Close()
	want := map[int64]int64{0: 34, 1: 33, 2: 33}
	deadline := time.Now().Add(30 * time.Second)
	for got := winCounts(t, dir); !maps.Equal(got, want); got = winCounts(t, dir) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("windows of the first hour: %v, want %v\n%s", got, want, tail(p.Output(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Signal(syscall.SIGINT)
	if code := p.Wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// waitFileCommitted waits until the exactly-once SQLite sink db holds a
// committed position of a file source at byte offset (the file's size).
func waitFileCommitted(t *testing.T, p *Proc, db string, offset int) {
	t.Helper()
	want := fmt.Sprintf("%d@", offset)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var pos string
		if d, err := sql.Open("sqlite", db+"?_pragma=busy_timeout(5000)"); err == nil {
			_ = d.QueryRow("SELECT position FROM kisflow_checkpoints").Scan(&pos)
			d.Close()
		}
		if strings.HasPrefix(pos, want) {
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s: committed position %q, want offset %d; output:\n%s", db, pos, offset, tail(p.Output(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
