package kisflow_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// countingStore is a checkpoint store that records the keyed state changes
// each save passes to it.
type countingStore struct {
	*checkpoint.Store
	mu    sync.Mutex
	saves [][]stream.StateChange
	bytes int64 // of every change saved: name, key, field and value
	took  time.Duration
}

func (c *countingStore) SaveState(ctx context.Context, st, pos string, changes []stream.StateChange) error {
	c.mu.Lock()
	c.saves = append(c.saves, append([]stream.StateChange(nil), changes...))
	for _, ch := range changes {
		c.bytes += int64(len(ch.Name) + len(ch.Key) + len(ch.Field) + len(ch.Value))
	}
	c.mu.Unlock()
	start := time.Now()
	err := c.Store.SaveState(ctx, st, pos, changes)
	c.mu.Lock()
	c.took += time.Since(start)
	c.mu.Unlock()
	return err
}

func (c *countingStore) snapshot() (saves [][]stream.StateChange, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]stream.StateChange(nil), c.saves...), c.bytes
}

func newCountingStore(tb testing.TB, dir string) *countingStore {
	tb.Helper()
	s, err := checkpoint.OpenSQLite(context.Background(), filepath.Join(dir, "checkpoints.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return &countingStore{Store: s}
}

// TestWindowCommitWritesOnlyChangedGroups: with 10k window-groups open, a
// batch that adds a row to one of them passes the store one delta holding
// that group and the lane's clock, nothing else.
func TestWindowCommitWritesOnlyChangedGroups(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now().Truncate(time.Hour).Add(-time.Hour).UnixMilli()
	var in strings.Builder
	for u := range 10_000 {
		fmt.Fprintf(&in, `{"ts":%d,"user_id":%d,"amount":1}`+"\n", base+int64(u), u)
	}
	path := filepath.Join(dir, "orders.jsonl")
	writeFiles(t, dir, map[string]string{
		"orders.jsonl": in.String(),
		"conns.yml":    "kistype: conn\ncname: orders\ntype: file\nparams:\n  path: " + path + "\n  follow: \"true\"\n  poll: 10ms\n",
		"flow.yml":     "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: PerUser\nstream:\n  source: orders\n  batch_size: 1000\n  linger: 5ms\n  workers: 2\n  key: user_id\n",
		"funcs.yml": "kistype: func\nfname: PerUser\nfmode: Calculate\n" +
			"window: {type: tumbling, size: 1h, time_field: ts, group_by: [user_id], aggregate: {n: count(), revenue: sum(amount)}}\n",
	})
	reg := kisflow.NewRegistry()
	if err := file.Install(reg); err != nil {
		t.Fatal(err)
	}
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	store := newCountingStore(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job, err := eng.Job(ctx, "Revenue", kisflow.WithStateDir(filepath.Join(dir, "state")), kisflow.WithCheckpoints(store))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	saved := func() int {
		saves, _ := store.snapshot()
		n := 0
		for _, s := range saves {
			n += len(s)
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within a minute", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The 10k groups' deltas and the two lanes' clocks.
	waitFor("the 10k groups committed", func() bool { return job.Stats().Committed == 10_000 })
	for n := -1; n != saved(); {
		n = saved()
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // past a checkpoint interval: nothing pending
	before, _ := store.snapshot()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"ts":%d,"user_id":7,"amount":5}`+"\n", base+50_000)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor("the new row's state saved", func() bool {
		saves, _ := store.snapshot()
		return len(saves) > len(before) && job.Stats().Committed == 10_001
	})
	time.Sleep(300 * time.Millisecond)
	after, _ := store.snapshot()
	var changes []stream.StateChange
	for _, s := range after[len(before):] {
		changes = append(changes, s...)
	}
	groups, clocks := 0, 0
	for _, c := range changes {
		switch {
		case c.Field == "clock":
			clocks++
		case strings.HasPrefix(c.Field, "delta ") && !c.Deleted:
			var v []byte
			if err := json.Unmarshal(c.Value, &v); err != nil {
				t.Fatal(err)
			}
			gs, tombs, err := kisflow.WindowDeltaGroups(v)
			if err != nil || tombs != 0 || len(gs) != 1 || gs[0].Key == "" {
				t.Errorf("delta %s: groups %v, %d tombstones (%v); want user 7's group", c.Field, gs, tombs, err)
			}
			groups += len(gs)
		default:
			t.Errorf("unexpected change %s/%s/%s (deleted %v)", c.Name, c.Key, c.Field, c.Deleted)
		}
	}
	if groups != 1 || clocks != 1 || len(changes) != 2 {
		t.Fatalf("the batch of one row passed %d changes to the store (%d groups in deltas, %d clocks), want one delta of its group and its lane's clock", len(changes), groups, clocks)
	}
	if n := job.OpenWindows(); n != 10_000 {
		t.Errorf("%d open windows, want 10000", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWindowRowSentByAnotherFormOfItsKeyIsDeadLettered: with two workers, a
// row whose stream key field is written in another form (42e0 for 42) is
// sent by the runtime to a worker other than its group's: it is
// dead-lettered with the reason, and the group's window counts the others.
func TestWindowRowSentByAnotherFormOfItsKeyIsDeadLettered(t *testing.T) {
	t.Parallel()
	user := 0
	for state.Partition(strconv.Itoa(user), 2) == state.Partition(strconv.Itoa(user)+"e0", 2) {
		user++ // not with two workers: "e" flips the low bit of the FNV hash
	}
	dir := t.TempDir()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	in := fmt.Sprintf(`{"ts":%d,"user_id":%d,"amount":1}`+"\n", base, user) +
		fmt.Sprintf(`{"ts":%d,"user_id":%de0,"amount":1}`+"\n", base+1, user) +
		fmt.Sprintf(`{"ts":%d,"user_id":%d,"amount":1}`+"\n", base+2, user)
	writeFiles(t, dir, map[string]string{
		"orders.jsonl": in,
		"conns.yml": "kistype: conn\ncname: orders\ntype: file\nparams:\n  path: " + filepath.Join(dir, "orders.jsonl") + "\n---\n" +
			"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: " + filepath.Join(dir, "out.db") + "\n  create: \"true\"\n  columns: user_id, n\n",
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: PerUser\nstream:\n  source: orders\n  sink: db\n  workers: 2\n  key: user_id\n",
		"funcs.yml": "kistype: func\nfname: PerUser\nfmode: Calculate\n" +
			"window: {type: tumbling, size: 1m, time_field: ts, group_by: [user_id], aggregate: {n: count()}}\n",
	})
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(streamRegistry(t), set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	job, err := eng.Job(context.Background(), "Revenue", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		t.Fatal(err)
	}
	if err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := job.Stats(); s.DeadLettered != 1 {
		t.Errorf("%d dead-lettered, want the row of %de0", s.DeadLettered, user)
	}
	dead, err := os.ReadFile(filepath.Join(dir, "state", "dead-letter", "Revenue.jsonl"))
	if err != nil || !strings.Contains(string(dead), `is not the key it was sent to this worker by`) {
		t.Errorf("dead letters (%v): %s", err, dead)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var u, n, rows int
	if err := db.QueryRow("SELECT max(user_id), max(n), count(*) FROM out").Scan(&u, &n, &rows); err != nil || rows != 1 || u != user || n != 2 {
		t.Errorf("window rows: %d, user %d, n %d (%v); want one, of user %d, n 2", rows, u, n, err, user)
	}
}

// TestWindowSavedAsOneSnapshotGoesOn: a job that finds its window saved
// the way an earlier version kept it (one entry holding the operator's
// snapshot) goes on with those windows, and its first commit replaces the
// entry with one per window-group.
func TestWindowSavedAsOneSnapshotGoesOn(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	w := newEarlierWindowState(t, fmt.Sprintf(`{"ts":%d,"user_id":1}`+"\n"+`{"ts":%d,"user_id":1}`+"\n", base+3000, base+200_000))
	ctx := context.Background()

	// The earlier version's entry: two rows of user 1 in the first minute.
	w.op.Process([]map[string]any{{"ts": base, "user_id": 1}, {"ts": base + 1000, "user_id": 1}})
	snap, err := w.op.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := json.Marshal(map[string]any{"seq": 1, "op": snap, "open": 1})
	if err != nil {
		t.Fatal(err)
	}
	w.save(t, []stream.StateChange{{Name: "kisflow.window/0/PerUser", Value: legacy}})
	db := w.run(t)
	var n int
	if err := db.QueryRow("SELECT n FROM out WHERE window_start = '2026-05-01T12:00:00Z'").Scan(&n); err != nil || n != 3 {
		t.Fatalf("the first minute counted %d rows (%v), want the 2 of the snapshot and the file's 1", n, err)
	}
	store, err := checkpoint.OpenSQLite(ctx, filepath.Join(w.dir, "state", "checkpoints.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.LoadState(ctx, w.key, func(c stream.StateChange) error {
		if c.Key == "" && c.Field == "" {
			t.Errorf("the snapshot entry is still kept: %s", c.Value)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
