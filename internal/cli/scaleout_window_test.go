package cli

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// winRow is one window result as the sink stores it.
type winRow struct {
	User       string
	Start, End string
	Orders     int64
	Revenue    float64
}

// TestWindowsFollowPartitions runs two stock `kisflow` processes of a
// YAML tumbling-window flow (revenue per user per minute, stream.key
// user_id, two workers each) on one Kafka consumer group of a topic of 4
// partitions keyed by user, exactly once into PostgreSQL, and SIGKILLs one
// mid-stream. The survivor takes its partitions over, and with them the
// open windows of their users. Once every data record was consumed, one
// record per user far ahead in event time closes every window: the table
// must hold each window of the data once, with the values one
// uninterrupted process gives (computed here). The lateness covers the
// whole span of the data, so that no row is late in any order the
// partitions are read in, and the reference does not depend on timing.
// Run with the window's own event time (each worker's watermark) and with
// the stream's (stream.time_field: the least over the partitions).
func TestWindowsFollowPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess scale-out test")
	}
	t.Parallel()
	for _, streamTime := range []bool{false, true} {
		name := "window_time"
		if streamTime {
			name = "stream_time_field"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			windowsFollowPartitions(t, streamTime)
		})
	}
}

func windowsFollowPartitions(t *testing.T, streamTime bool) {
	const n, users = 3000, 40
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	pub, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "orders", Params: map[string]string{"key_field": "{user_id}"}})
	if err != nil {
		t.Fatal(err)
	}
	k := pub.(*kafka.Kafka)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close(context.Background()) })
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	admin := kadm.NewClient(adm)

	// The data: n orders over 5 minutes of event time, in time order in
	// each partition; the reference sums them per user and minute.
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type wkey struct{ user, start string }
	want := map[wkey]*winRow{}
	var rows []any
	for i := 0; i < n; i++ {
		user := fmt.Sprintf("u%02d", i*7%users)
		ts := base.Add(time.Duration(i) * 100 * time.Millisecond)
		amount := i%97 + 1
		start := ts.Truncate(time.Minute)
		key := wkey{user, start.Format(time.RFC3339)}
		w := want[key]
		if w == nil {
			w = &winRow{User: user, Start: key.start, End: start.Add(time.Minute).Format(time.RFC3339)}
			want[key] = w
		}
		w.Orders++
		w.Revenue += float64(amount)
		rows = append(rows, map[string]any{"user_id": user, "ts": ts.Format(time.RFC3339Nano), "amount": amount})
	}
	for start := 0; start < n; start += 500 {
		if err := k.Write(context.Background(), rows[start:min(start+500, n)]); err != nil {
			t.Fatal(err)
		}
	}

	dsn := testenv.PostgresDatabase(t)
	dir := t.TempDir()
	stream := "stream:\n  source: in\n  sink: db\n  key: user_id\n  workers: 2\n  delivery: exactly-once\n  batch_size: 10\n  linger: 5ms\n"
	if streamTime {
		stream += "  time_field: ts\n  lateness: 1h\n"
	}
	files := map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: RevenuePerUser\n" + stream,
		"funcs.yml": "kistype: func\nfname: RevenuePerUser\nfmode: Calculate\nwindow:\n  type: tumbling\n  size: 1m\n" +
			"  time_field: ts\n  lateness: 1h\n  max_ahead: \"off\"\n  late: dead_letter\n  group_by: [user_id]\n" +
			"  aggregate:\n    orders: count()\n    revenue: sum(amount)\n",
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: in\ntype: kafka\naddrs: %s\nkey: orders\nparams:\n  group: revenue\n  heartbeat: 100ms\n  session_timeout: 6s\n  rebalance_timeout: 5s\n", addrs) +
			"---\nkistype: conn\ncname: db\ntype: postgres\nkey: out\nparams:\n  dsn: " + dsn + "\n  create: \"true\"\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := stockKisflow(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, atKill, wait := killedPair(t, func(state string) *exec.Cmd {
		return exec.Command(bin, "run", dir, "--state", filepath.Join(dir, state), "--log-level", "info", "--progress", "never")
	}, admin, "revenue", n)

	// Close every window: one record per user 3 hours later.
	var closers []any
	for u := 0; u < users; u++ {
		closers = append(closers, map[string]any{"user_id": fmt.Sprintf("u%02d", u), "ts": base.Add(3 * time.Hour).Format(time.RFC3339), "amount": 0})
	}
	if err := k.Write(context.Background(), closers); err != nil {
		t.Fatal(err)
	}
	stored := func() int {
		var all int
		_ = db.QueryRow("SELECT count(*) FROM out").Scan(&all)
		return all
	}
	// Until every window is stored, or none was for 15s (the comparison
	// below then says which are missing).
	last, since := -1, time.Now()
	wait("every window in the sink", func() bool {
		s := stored()
		if s != last {
			last, since = s, time.Now()
		}
		return s >= len(want) || time.Since(since) > 15*time.Second
	})
	time.Sleep(time.Second) // a window emitted twice would show now
	_ = b.Process.Signal(syscall.SIGTERM)
	if err := b.Wait(); err != nil {
		t.Fatalf("survivor: %v", err)
	}

	rs, err := db.Query("SELECT user_id, window_start, window_end, orders, revenue FROM out")
	if err != nil {
		t.Fatal(err)
	}
	got := map[wkey]int{}
	bad := 0
	for rs.Next() {
		var r winRow
		if err := rs.Scan(&r.User, &r.Start, &r.End, &r.Orders, &r.Revenue); err != nil {
			t.Fatal(err)
		}
		key := wkey{r.User, r.Start}
		got[key]++
		w := want[key]
		switch {
		case w == nil:
			bad++
			t.Errorf("window %+v: no such window in the data", r)
		case got[key] > 1:
			bad++
			t.Errorf("window %s %s stored %d times", r.User, r.Start, got[key])
		case *w != r:
			bad++
			t.Errorf("window %+v, want %+v (as one uninterrupted process)", r, *w)
		}
	}
	rs.Close()
	for key := range want {
		if got[key] == 0 {
			bad++
			t.Errorf("window %s %s missing", key.user, key.start)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d windows differ from an uninterrupted run's", bad, len(want))
	}
	t.Logf("%d of %d records consumed when one process was killed; %d windows as one uninterrupted process gives them", atKill, n, len(want))
}

// syncBuilder is a strings.Builder safe for a child's output goroutines
// and the test's reads.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// killedPair runs two processes of one consumer group (cmd makes each, for
// a state folder of its own), SIGKILLs the first once the group committed a
// quarter of the n records, and waits until the survivor committed all of
// them. It returns the survivor, the records committed at the kill, and
// wait, which polls done until a deadline shared by the whole test.
func killedPair(t *testing.T, cmd func(state string) *exec.Cmd, admin *kadm.Client, group string, n int64) (*exec.Cmd, int64, func(what string, done func() bool)) {
	t.Helper()
	start := func(state string) (*exec.Cmd, *syncBuilder) {
		c := cmd(state)
		out := &syncBuilder{}
		c.Stdout, c.Stderr = out, out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c, out
	}
	// consumed is the number of records the group committed.
	consumed := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		offs, err := admin.FetchOffsets(ctx, group)
		if err != nil {
			return 0
		}
		var all int64
		offs.Each(func(o kadm.OffsetResponse) { all += max(o.At, 0) })
		return all
	}
	a, aOut := start("a")
	b, bOut := start("b")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("killed process output:\n%s\nsurvivor output:\n%s", tailOf(aOut.String()), tailOf(bOut.String()))
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	wait := func(what string, done func() bool) {
		t.Helper()
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out (%d of %d records consumed)", what, consumed(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Both own partitions and work, then one is killed mid-stream.
	wait("both processes own partitions", func() bool {
		return strings.Contains(aOut.String(), "partitions assigned") && strings.Contains(bOut.String(), "partitions assigned")
	})
	wait("progress before the kill", func() bool { return consumed() >= n/4 })
	_ = a.Process.Signal(syscall.SIGKILL)
	_ = a.Wait()
	atKill := consumed()
	wait("the survivor consumes every record", func() bool { return consumed() >= n })
	return b, atKill, wait
}
