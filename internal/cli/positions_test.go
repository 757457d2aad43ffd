package cli

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/connector/nats"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// appendIDs appends rows {"id": from..to} to a JSON lines file.
func appendIDs(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i <= to; i++ {
		fmt.Fprintf(f, "{\"id\":%d}\n", i)
	}
}

// countIDs counts each id of a JSON lines file.
func countIDs(t *testing.T, path string) map[int]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var id int
		if _, err := fmt.Sscanf(line, "{\"id\":%d", &id); err == nil {
			out[id]++
		}
	}
	return out
}

// sqliteIDs counts each id of the table out of dir/out.db.
func sqliteIDs(t *testing.T, dir string) map[int]int {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id FROM out")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int]int{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out[id]++
	}
	return out
}

// each checks that ids 1..n are in got exactly times times each, and no other.
func each(t *testing.T, what string, got map[int]int, n, times int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%s: %d distinct ids, want %d", what, len(got), n)
	}
	for id := 1; id <= n; id++ {
		if got[id] != times {
			t.Fatalf("%s: id %d is there %d times, want %d", what, id, got[id], times)
		}
	}
}

const keepFunc = "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id]\n"

// TestPositionsFileStopAtStartAndReplay: a followed file read with
// stop: at_start ends with exit 0 holding exactly the rows present at the
// start; positions shows the committed offset, the head and the lag;
// positions set --earliest replays everything into the at-least-once
// file sink, which then holds each row twice (as documented).
func TestPositionsFileStopAtStartAndReplay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n  stop: at_start\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n  follow: true\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	appendIDs(t, in, 1, 100)
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the first run", countIDs(t, out), 100, 1)
	appendIDs(t, in, 101, 150)
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("second bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the second run", countIDs(t, out), 150, 1)

	info, err := os.Stat(in)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(t, "positions", dir)
	if code != 0 || !strings.Contains(stdout, "checkpoints") || !strings.Contains(stdout, fmt.Sprintf("%d", info.Size())) || !strings.Contains(stdout, "0 bytes") {
		t.Fatalf("positions: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, "positions", "set", dir, "F", "--earliest")
	if code != 0 {
		t.Fatalf("positions set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ = run(t, "positions", dir); !strings.Contains(stdout, fmt.Sprintf("%d bytes", info.Size())) {
		t.Fatalf("positions after set --earliest: exit %d\n%s", code, stdout)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the replay (at-least-once: every row again)", countIDs(t, out), 150, 2)

	// A position in the middle of a line starts at the next line; a stop
	// position ends before the first line that ends past it.
	if code, stdout, stderr = run(t, "run", dir, "--from", "3", "--until", "35"); code != 0 {
		t.Fatalf("one-off run: exit %d\n%s%s", code, stdout, stderr)
	}
	got := countIDs(t, out)
	if got[2] != 3 || got[3] != 3 || got[1] != 2 || got[4] != 2 {
		t.Fatalf("one-off run --from 3 --until 35: want ids 2 and 3 once more, got %v", map[int]int{1: got[1], 2: got[2], 3: got[3], 4: got[4]})
	}
	if _, stdout, _ = run(t, "positions", dir); !strings.Contains(stdout, " 0 bytes") {
		t.Fatalf("the one-off run moved the committed position:\n%s", stdout)
	}
}

// TestPositionsLintRefusesWhatSourceCannotDo: lint names the line and
// what the source can do.
func TestPositionsLintRefusesWhatSourceCannotDo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  start: {time: 2026-01-01}\n  stop: latest\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n",
	})
	code, stdout, _ := run(t, "lint", dir)
	if code != 1 || !strings.Contains(stdout, "flow.yml:8:") || !strings.Contains(stdout, "cannot start at time") || !strings.Contains(stdout, "{position: P}") ||
		!strings.Contains(stdout, "flow.yml:9:") || !strings.Contains(stdout, "stop latest is a start position") {
		t.Fatalf("lint: exit %d\n%s", code, stdout)
	}
}

// TestPositionsSetRefusedWhileRunning: a run of the flow (a followed
// file, unbounded) holds it; positions set is refused, naming why.
func TestPositionsSetRefusedWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n  follow: true\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 10)
	cmd := child(t, dir)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for len(countIDs(t, filepath.Join(dir, "out.jsonl"))) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the run did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, stdout, stderr := run(t, "positions", "set", dir, "F", "--earliest", "--state", filepath.Join(dir, "state"))
	if code != 1 || !strings.Contains(stderr, "a run holds the flow") {
		t.Fatalf("positions set while running: exit %d\n%s%s", code, stdout, stderr)
	}
}

// startKafka starts a kfake cluster with topic input (4 partitions) and
// produces ids 1..n to it.
func startKafka(t *testing.T, topics ...string) (string, func(from, to int)) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	d, err := kafka.New(&config.Conn{CName: "pub", Addrs: addrs, Key: "input", Params: map[string]string{"key_field": "{id}"}})
	if err != nil {
		t.Fatal(err)
	}
	pub := d.(*kafka.Kafka)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	return addrs, func(from, to int) {
		var rows []any
		for i := from; i <= to; i++ {
			rows = append(rows, map[string]any{"id": i})
		}
		if err := pub.Write(context.Background(), rows); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPositionsKafkaStopAtStartAndReplayExactlyOnce: a Kafka source read
// with stop: at_start into an exactly-once SQLite sink ends with exit 0
// holding exactly the records present at the start, across all four
// partitions; records produced later wait for the next run. positions
// shows the group's offsets; positions set --earliest moves them and
// forgets the sink's inbox, so the replay writes every record again
// exactly once (each id twice in the table); with --truncate the table
// is emptied in the same transaction and holds each id once.
func TestPositionsKafkaStopAtStartAndReplayExactlyOnce(t *testing.T) {
	t.Parallel()
	addrs, produce := startKafka(t, "input")
	produce(1, 200)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: K\nflows:\n  - fname: Keep\nstream:\n  source: k\n  sink: db\n  delivery: exactly-once\n  batch_size: 50\n  stop: at_start\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  heartbeat: 100ms\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id\n", addrs),
	})
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the first run", sqliteIDs(t, dir), 200, 1)
	produce(201, 260)
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("second bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the second run", sqliteIDs(t, dir), 260, 1)
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "consumer group K") || !strings.Contains(stdout, "0 messages") {
		t.Fatalf("positions: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "positions", "set", dir, "K", "--earliest"); code != 0 {
		t.Fatalf("positions set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ = run(t, "positions", dir); !strings.Contains(stdout, "260 messages") {
		t.Fatalf("positions after set --earliest: exit %d\n%s", code, stdout)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the replay (each record written again, once)", sqliteIDs(t, dir), 260, 2)

	if code, stdout, stderr = run(t, "positions", "set", dir, "K", "--earliest", "--truncate"); code != 0 {
		t.Fatalf("positions set --truncate: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := sqliteIDs(t, dir); len(got) != 0 {
		t.Fatalf("--truncate left %d ids", len(got))
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay after --truncate: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the replay into the truncated table", sqliteIDs(t, dir), 260, 1)
}

// TestPositionsKafkaOneOffFromTimeUntil: one-off runs (run --from/--until)
// read exactly the records in between: from a time to the high watermarks
// at the start, and from earliest to per-partition offsets; the group's
// committed offsets are left untouched (none).
func TestPositionsKafkaOneOffFromTimeUntil(t *testing.T) {
	t.Parallel()
	addrs, produce := startKafka(t, "input")
	produce(1, 50)
	time.Sleep(50 * time.Millisecond)
	from := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	produce(51, 100)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: K\nflows:\n  - fname: Keep\nstream:\n  source: k\n  sink: out\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  heartbeat: 100ms\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n", addrs),
	})
	code, stdout, stderr := run(t, "run", dir, "--from", from.Format(time.RFC3339Nano), "--until", "at_start")
	if code != 0 {
		t.Fatalf("one-off run: exit %d\n%s%s", code, stdout, stderr)
	}
	got := countIDs(t, filepath.Join(dir, "out.jsonl"))
	if len(got) != 50 {
		t.Fatalf("from %s until at_start: %d ids, want the 50 produced after it", from, len(got))
	}
	for id := 51; id <= 100; id++ {
		if got[id] != 1 {
			t.Fatalf("id %d is there %d times, want once", id, got[id])
		}
	}
	if err := os.Remove(filepath.Join(dir, "out.jsonl")); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr = run(t, "run", dir, "--from", "earliest", "--until", "0:5,1:5,2:5,3:5"); code != 0 {
		t.Fatalf("one-off run until offsets: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := countIDs(t, filepath.Join(dir, "out.jsonl")); len(got) != 20 {
		t.Fatalf("until 5 records per partition: %d ids, want 20", len(got))
	}
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "none") || !strings.Contains(stdout, "100 messages") {
		t.Fatalf("the one-off runs moved the group's offsets: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestPositionsKafkaSetRefusedWhileRunning: while a run's consumer group
// has a member, positions set refuses to move its offsets.
func TestPositionsKafkaSetRefusedWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	t.Parallel()
	addrs, produce := startKafka(t, "input")
	produce(1, 10)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: K\nflows:\n  - fname: Keep\nstream:\n  source: k\n  sink: out\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  heartbeat: 100ms\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n", addrs),
	})
	cmd := child(t, dir)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for len(countIDs(t, filepath.Join(dir, "out.jsonl"))) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the run did not read the records")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, stdout, stderr := run(t, "positions", "set", dir, "K", "--earliest", "--state", filepath.Join(dir, "state"))
	if code != 1 || !strings.Contains(stderr, "a run of the flow holds it") {
		t.Fatalf("positions set while running: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestPositionsJetStreamStopAtStartAndReplay: a JetStream source read with
// stop: at_start ends with exit 0 holding exactly the messages present at
// the start; positions shows the durable consumer's ack floor and the
// stream's last sequence; positions set --to 51 recreates the durable
// there, and the next bounded run reads sequences 51.. again.
func TestPositionsJetStreamStopAtStartAndReplay(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	name := testenv.Name("kfpos")
	streamName, subject := "KFPOS_"+name, "kisflow.pos."+name
	pubDriver, err := nats.New(&config.Conn{CName: "pub", Type: nats.Type, Addrs: url, Key: subject, Params: map[string]string{"stream": streamName, "create": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	pub := pubDriver.(*nats.NATS)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	produce := func(from, to int) {
		var rows []any
		for i := from; i <= to; i++ {
			rows = append(rows, map[string]any{"id": i})
		}
		if err := pub.Write(context.Background(), rows); err != nil {
			t.Fatal(err)
		}
	}
	produce(1, 100)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: J\nflows:\n  - fname: Keep\nstream:\n  source: js\n  sink: out\n  stop: at_start\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: js\ntype: nats\naddrs: %s\nkey: %s\nparams:\n  stream: %s\n  durable: %s\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n", url, subject, streamName, "D"+name),
	})
	out := filepath.Join(dir, "out.jsonl")
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the first run", countIDs(t, out), 100, 1)
	produce(101, 130)
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("second bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the second run", countIDs(t, out), 130, 1)
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "durable consumer") || !strings.Contains(stdout, "130") || !strings.Contains(stdout, "0 messages") {
		t.Fatalf("positions: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "positions", "set", dir, "J", "--to", "51"); code != 0 {
		t.Fatalf("positions set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	got := countIDs(t, out)
	for id := 1; id <= 130; id++ {
		want := 1
		if id >= 51 {
			want = 2
		}
		if got[id] != want {
			t.Fatalf("after the replay from sequence 51: id %d is there %d times, want %d", id, got[id], want)
		}
	}

	// A one-off run reads sequences 101..110 through an ephemeral
	// consumer; the durable is left where it was.
	if code, stdout, stderr = run(t, "run", dir, "--from", "101", "--until", "111"); code != 0 {
		t.Fatalf("one-off run: exit %d\n%s%s", code, stdout, stderr)
	}
	again := countIDs(t, out)
	for id := 1; id <= 130; id++ {
		want := got[id]
		if id >= 101 && id <= 110 {
			want++
		}
		if again[id] != want {
			t.Fatalf("after the one-off run: id %d is there %d times, want %d", id, again[id], want)
		}
	}
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "0 messages") {
		t.Fatalf("positions after the one-off run: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestPositionsRedisStreamStopAtStartAndReplay: a Redis stream read with
// stop: at_start ends with exit 0 holding exactly the entries present at
// the start; positions shows the group's last delivered ID and the
// stream's last entry; positions set --to ID moves the group there (XGROUP
// SETID), and the next bounded run reads the entries after it again.
func TestPositionsRedisStreamStopAtStartAndReplay(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis.Addr(t)
	key := "kfpos:" + testenv.Name("s")
	cl := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { cl.Del(context.Background(), key); cl.Close() })
	var ids []string
	produce := func(from, to int) {
		for i := from; i <= to; i++ {
			id, err := cl.XAdd(context.Background(), &goredis.XAddArgs{Stream: key, Values: map[string]any{"data": fmt.Sprintf("{\"id\":%d}", i)}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	produce(1, 100)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: R\nflows:\n  - fname: Keep\nstream:\n  source: rs\n  sink: out\n  stop: at_start\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: rs\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: stream\n  block: 100ms\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n", addr, key),
	})
	out := filepath.Join(dir, "out.jsonl")
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the first run", countIDs(t, out), 100, 1)
	produce(101, 130)
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("second bounded run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the second run", countIDs(t, out), 130, 1)
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "consumer group R") || !strings.Contains(stdout, ids[129]) {
		t.Fatalf("positions: exit %d\n%s%s", code, stdout, stderr)
	}
	time.Sleep(2500 * time.Millisecond) // the last run's consumer is idle long enough (3 × block + 2s)
	if code, stdout, stderr = run(t, "positions", "set", dir, "R", "--to", ids[49]); code != 0 {
		t.Fatalf("positions set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	got := countIDs(t, out)
	for id := 1; id <= 130; id++ {
		want := 1
		if id > 50 {
			want = 2
		}
		if got[id] != want {
			t.Fatalf("after the replay from after entry 50: id %d is there %d times, want %d", id, got[id], want)
		}
	}

	// A one-off run reads the entries after ids[9] and before ids[19]
	// (11..19) without the group.
	if code, stdout, stderr = run(t, "run", dir, "--from", ids[9], "--until", ids[19]); code != 0 {
		t.Fatalf("one-off run: exit %d\n%s%s", code, stdout, stderr)
	}
	again := countIDs(t, out)
	for id := 1; id <= 130; id++ {
		want := got[id]
		if id >= 11 && id <= 19 {
			want++
		}
		if again[id] != want {
			t.Fatalf("after the one-off run: id %d is there %d times, want %d", id, again[id], want)
		}
	}
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, ids[129]) {
		t.Fatalf("the one-off run moved the group: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestPositionsFileExactlyOnceReplay: with an exactly-once SQLite sink the
// file's position is kept in the sink; positions set --earliest moves it
// there (fenced), and the replay writes every row again once.
func TestPositionsFileExactlyOnceReplay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: db\n  delivery: exactly-once\n  batch_size: 7\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id\n",
	})
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 60)
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the first run", sqliteIDs(t, dir), 60, 1)
	if code, stdout, stderr = run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "sink db") || !strings.Contains(stdout, " 0 bytes") {
		t.Fatalf("positions: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("second run: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after a run with nothing new", sqliteIDs(t, dir), 60, 1)
	if code, stdout, stderr = run(t, "positions", "set", dir, "F", "--earliest"); code != 0 {
		t.Fatalf("positions set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = run(t, "run", dir); code != 0 {
		t.Fatalf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	each(t, "after the replay", sqliteIDs(t, dir), 60, 2)
}

// TestPositionsKafkaStartStopInStreamBlock: stream.start {position} and
// stream.stop {time} in the YAML read exactly the records in between;
// lint refuses a stop on a transactional Kafka source.
func TestPositionsKafkaStartStopInStreamBlock(t *testing.T) {
	t.Parallel()
	addrs, produce := startKafka(t, "input")
	produce(1, 80) // 20 per partition (keyed by id, spread by the hash)
	time.Sleep(50 * time.Millisecond)
	until := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	produce(81, 120)
	dir := t.TempDir()
	conns := fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  heartbeat: 100ms\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n", addrs)
	writeFiles(t, dir, map[string]string{
		"flow.yml":  fmt.Sprintf("kistype: flow\nstatus: 1\nflow_name: K\nflows:\n  - fname: Keep\nstream:\n  source: k\n  sink: out\n  start: {position: 2}\n  stop: {time: %s}\n", until.Format(time.RFC3339Nano)),
		"funcs.yml": keepFunc,
		"conns.yml": conns,
	})
	code, stdout, stderr := run(t, "run", dir)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, stdout, stderr)
	}
	got := countIDs(t, filepath.Join(dir, "out.jsonl"))
	// Offsets 0 and 1 of each of the 4 partitions skipped, and nothing
	// produced after the stop time.
	if len(got) != 80-8 {
		t.Fatalf("start {position: 2}, stop {time}: %d ids, want 72", len(got))
	}
	for id := range got {
		if id > 80 {
			t.Fatalf("id %d was produced after the stop time", id)
		}
	}

	bad := t.TempDir()
	writeFiles(t, bad, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: K\nflows:\n  - fname: Keep\nstream:\n  source: k\n  sink: k\n  delivery: exactly-once\n  stop: at_start\n",
		"funcs.yml": keepFunc,
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  transactional_id: t\n  output_topic: output\n", addrs),
	})
	if code, stdout, _ = run(t, "lint", bad); code != 1 || !strings.Contains(stdout, "flow.yml:10:") || !strings.Contains(stdout, "cannot stop at at_start") || !strings.Contains(stdout, "stop: none") {
		t.Fatalf("lint of a stop on a transactional source: exit %d\n%s", code, stdout)
	}
}
