package kisflow_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
	"github.com/kisflow-go/kisflow/window"
)

// storedWindowEntries returns the entries of window state the store keeps
// for the job of state key key: per field kind ("clock", "delta", "group"
// for the per-group entries of earlier versions), and the records of all
// deltas.
func storedWindowEntries(t *testing.T, store *checkpoint.Store, key string) (kinds map[string]int, records int) {
	t.Helper()
	kinds = map[string]int{}
	if err := store.LoadState(context.Background(), key, func(c stream.StateChange) error {
		if !strings.HasPrefix(c.Name, "kisflow.window/") {
			return nil
		}
		switch {
		case c.Field == "clock":
			kinds["clock"]++
		case strings.HasPrefix(c.Field, "delta "):
			kinds["delta"]++
			var v []byte
			if err := json.Unmarshal(c.Value, &v); err != nil {
				return err
			}
			gs, tombs, err := kisflow.WindowDeltaGroups(v)
			if err != nil {
				return err
			}
			records += len(gs) + tombs
		case strings.HasPrefix(c.Field, "window "), strings.HasPrefix(c.Field, "session "):
			kinds["group"]++
		default:
			kinds[c.Field]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return kinds, records
}

// TestWindowDeltasBounded runs 40k rows in batches of 500 through a window
// of an hour (all in one window), in two shapes: 2000 users, each in every
// fourth batch (a delta is deleted once all its groups have a later
// record), and 100 hot users in every batch with one new user per batch
// (every delta keeps the new user's group: the lane compacts). The store
// holds deltas of at most twice the groups and the minimum (64), not the
// 40k records written, and a job started on that store emits each user's
// window with all its rows, after which no delta is left.
func TestWindowDeltasBounded(t *testing.T) {
	t.Parallel()
	t.Run("uniform", func(t *testing.T) {
		t.Parallel()
		testWindowDeltasBounded(t, func(i int) string { return fmt.Sprint(i % 2000) })
	})
	t.Run("skewed", func(t *testing.T) {
		t.Parallel()
		testWindowDeltasBounded(t, func(i int) string {
			if i%500 == 250 {
				return fmt.Sprintf("%d", 1000+i)
			}
			return fmt.Sprint(i % 100)
		})
	})
}

func testWindowDeltasBounded(t *testing.T, user func(int) string) {
	dir := t.TempDir()
	const rows = 40_000
	base := time.Now().Truncate(time.Hour).Add(-2 * time.Hour).UnixMilli()
	var in strings.Builder
	want := map[string]int{}
	for i := range rows {
		fmt.Fprintf(&in, `{"ts":%d,"user_id":%s,"amount":1}`+"\n", base+int64(i%1000), user(i))
		want[user(i)]++
	}
	users := len(want)
	path := filepath.Join(dir, "orders.jsonl")
	conns := func(follow bool) string {
		return "kistype: conn\ncname: orders\ntype: file\nparams:\n  path: " + path + "\n  follow: \"" + fmt.Sprint(follow) + "\"\n  poll: 10ms\n---\n" +
			"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: " + filepath.Join(dir, "out.db") + "\n  create: \"true\"\n  columns: user_id, n\n"
	}
	writeFiles(t, dir, map[string]string{
		"orders.jsonl": in.String(),
		"conns.yml":    conns(true),
		"flow.yml":     "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: PerUser\nstream:\n  source: orders\n  sink: db\n  batch_size: 500\n  linger: 5ms\n",
		"funcs.yml": "kistype: func\nfname: PerUser\nfmode: Calculate\n" +
			"window: {type: tumbling, size: 1h, time_field: ts, group_by: [user_id], aggregate: {n: count()}}\n",
	})
	ctx := context.Background()
	// run runs a job until wait returns (nil: until it ends).
	run := func(wait func(*kisflow.Job, *checkpoint.Store)) {
		set, err := config.Import(dir)
		if err != nil {
			t.Fatal(err)
		}
		eng, err := kisflow.NewEngine(streamRegistry(t), set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close(ctx)
		store, err := checkpoint.OpenSQLite(ctx, filepath.Join(dir, "checkpoints.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		job, err := eng.Job(runCtx, "Revenue", kisflow.WithStateDir(filepath.Join(dir, "state")), kisflow.WithCheckpoints(store))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- job.Run(runCtx) }()
		if wait != nil {
			wait(job, store)
			cancel()
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var key string
	run(func(job *kisflow.Job, store *checkpoint.Store) {
		key = job.StartPosition().Key
		deadline := time.Now().Add(2 * time.Minute)
		for job.Stats().Committed < rows {
			if time.Now().After(deadline) {
				t.Fatalf("%d rows committed in 2 minutes, want %d", job.Stats().Committed, rows)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // a checkpoint interval: the last batch saved
	})
	store, err := checkpoint.OpenSQLite(ctx, filepath.Join(dir, "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	kinds, records := storedWindowEntries(t, store, key)
	store.Close()
	// After each write the deltas hold at most 2 x 2000 + 64 records.
	if records < users || records > 2*users+64 || kinds["clock"] != 1 || kinds["group"] != 0 {
		t.Fatalf("the store keeps %v, %d records in deltas; want the clock and deltas of %d to %d records", kinds, records, users, 2*users+64)
	}
	t.Logf("%d rows in batches of 500: the store keeps %d deltas of %d records in all", rows, kinds["delta"], records)

	// A job on that store, the file read to its end: every window closes
	// with all its rows, and the deltas of closed windows are deleted.
	writeFiles(t, dir, map[string]string{"conns.yml": conns(false)})
	run(nil)
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := map[string]int{}
	rs, err := db.Query("SELECT user_id, n FROM out")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var u string
		var n int
		if err := rs.Scan(&u, &n); err != nil {
			t.Fatal(err)
		}
		got[u] += n
	}
	if !maps.Equal(got, want) {
		t.Errorf("the windows emitted: %d groups, want %d; they differ", len(got), len(want))
	}
	store, err = checkpoint.OpenSQLite(ctx, filepath.Join(dir, "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if kinds, records := storedWindowEntries(t, store, key); kinds["delta"] != 0 {
		t.Errorf("after every window closed the store keeps %v (%d records)", kinds, records)
	}
}

// earlierWindowState is the setting of a test of a job that finds its
// windows saved the way an earlier version saved them: a config folder
// whose flow Revenue counts the rows of orders per user_id in tumbling
// windows of a minute (PerUser) into the SQLite table out of dir/out.db.
type earlierWindowState struct {
	dir string
	key string           // the job's state key
	op  *window.Operator // a new operator of PerUser's window, to build the saved state with
	// newJob starts a job of Revenue with its state in dir/state, and
	// returns it with the function that closes its engine.
	newJob func() (*kisflow.Job, func())
}

// newEarlierWindowState writes the folder with orders (JSON lines) and
// opens and closes a first job to learn its state key.
func newEarlierWindowState(t *testing.T, orders string) *earlierWindowState {
	t.Helper()
	dir := t.TempDir()
	block := "{type: tumbling, size: 1m, time_field: ts, group_by: [user_id], aggregate: {n: count()}}"
	writeFiles(t, dir, map[string]string{
		"orders.jsonl": orders,
		"conns.yml": "kistype: conn\ncname: orders\ntype: file\nparams:\n  path: " + filepath.Join(dir, "orders.jsonl") + "\n---\n" +
			"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: " + filepath.Join(dir, "out.db") + "\n  create: \"true\"\n  columns: user_id, window_start, n\n",
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: PerUser\nstream:\n  source: orders\n  sink: db\n",
		"funcs.yml": "kistype: func\nfname: PerUser\nfmode: Calculate\nwindow: " + block + "\n",
	})
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := &earlierWindowState{dir: dir}
	w.newJob = func() (*kisflow.Job, func()) {
		eng, err := kisflow.NewEngine(streamRegistry(t), set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		job, err := eng.Job(ctx, "Revenue", kisflow.WithStateDir(filepath.Join(dir, "state")))
		if err != nil {
			t.Fatal(err)
		}
		return job, func() { _ = eng.Close(ctx) }
	}
	job, closeEng := w.newJob()
	w.key = job.StartPosition().Key
	if err := job.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closeEng()
	spec, err := set.Funcs["PerUser"].Window.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if w.op, err = window.New(spec); err != nil {
		t.Fatal(err)
	}
	return w
}

// save stores changes as the job's state, as the earlier version would
// have committed them.
func (w *earlierWindowState) save(t *testing.T, changes []stream.StateChange) {
	t.Helper()
	ctx := context.Background()
	store, err := checkpoint.OpenSQLite(ctx, filepath.Join(w.dir, "state", "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SaveState(ctx, w.key, "", changes); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
}

// run runs a new job to the end and returns the sink's database; the
// job's engine and the database are closed when the test ends.
func (w *earlierWindowState) run(t *testing.T) *sql.DB {
	t.Helper()
	job, closeEng := w.newJob()
	t.Cleanup(closeEng)
	if err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(w.dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestWindowPerGroupEntriesGoOn: a job that finds its windows kept as
// earlier versions kept them (one entry per window-group, under the
// group's stream key, and the lane's clock) goes on from them, and its
// first commit replaces them with a delta.
func TestWindowPerGroupEntriesGoOn(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	w := newEarlierWindowState(t, fmt.Sprintf(`{"ts":%d,"user_id":1}`+"\n"+`{"ts":%d,"user_id":"a\"b"}`+"\n"+`{"ts":%d,"user_id":1}`+"\n", base+3000, base+4000, base+200_000))
	ctx := context.Background()

	// What an earlier version saved after two rows of user 1 and one of
	// user a"b in the first minute: an entry per window-group, named as
	// it named them, and the lane's clock.
	w.op.Process([]map[string]any{{"ts": base, "user_id": int64(1)}, {"ts": base + 1000, "user_id": int64(1)}, {"ts": base + 2000, "user_id": `a"b`}})
	name := "kisflow.window/0/PerUser"
	var changes []stream.StateChange
	if err := w.op.Groups(func(g window.Group, data []byte) error {
		vals := g.Values()
		js, err := json.Marshal(vals)
		if err != nil {
			return err
		}
		v, err := json.Marshal(data)
		if err != nil {
			return err
		}
		changes = append(changes, stream.StateChange{Name: name, Key: window.KeyString(vals[0]),
			Field: "window " + time.UnixMilli(g.End).UTC().Format(time.RFC3339Nano) + " " + string(js), Value: v})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 {
		t.Fatalf("%d window-groups, want 2", len(changes))
	}
	clock, err := json.Marshal(map[string]any{"seq": 3, "lanes": 1, "lane": 0, "at": time.Now().UnixMilli(), "clock": w.op.Clock()})
	if err != nil {
		t.Fatal(err)
	}
	changes = append(changes, stream.StateChange{Name: name, Key: "kisflow.window.lane", Field: "clock", Value: clock})
	w.save(t, changes)
	db := w.run(t)
	got := map[string]int{}
	rs, err := db.Query("SELECT user_id, window_start, n FROM out")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var u, start string
		var n int
		if err := rs.Scan(&u, &start, &n); err != nil {
			t.Fatal(err)
		}
		got[u+" "+start] = n
	}
	want := map[string]int{"1 2026-05-01T12:00:00Z": 3, `a"b 2026-05-01T12:00:00Z`: 2, "1 2026-05-01T12:03:00Z": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("windows %v, want %v (the saved groups' rows and the file's)", got, want)
	}
	store, err := checkpoint.OpenSQLite(ctx, filepath.Join(w.dir, "state", "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if kinds, _ := storedWindowEntries(t, store, w.key); kinds["group"] != 0 || kinds["delta"] != 0 {
		t.Errorf("after the run the store keeps %v; want the per-group entries replaced, and no delta (every window closed)", kinds)
	}
}
