package kisflow_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/kafka"
)

// pev is a row of the Kafka watermark test: its partition and event time.
type pev struct {
	P  int   `json:"p"`
	TS int64 `json:"ts"`
}

// TestWatermarkMinOverKafkaPartitionsWithIdleness reads a topic of two
// partitions: the watermark is the least of the partitions' largest event
// times while both deliver, and once one has been idle for idle_timeout it
// follows the other alone.
func TestWatermarkMinOverKafkaPartitionsWithIdleness(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "wm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Marks
flows:
  - fname: See
stream:
  source: events
  sink: db
  workers: 2
  time_field: ts
  idle_timeout: 3s
`,
		"funcs.yml": "kistype: func\nfname: See\nfmode: Calculate\n",
		"conns.yml": `kistype: conn
cname: events
type: kafka
addrs: ` + addrs + `
key: wm
params:
  heartbeat: 100ms
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
`,
	})
	reg := streamRegistry(t)
	if err := kafka.Install(reg); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister("See", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*pev) error {
		for _, e := range rows {
			if err := f.CommitRow(timerRow("row", fmt.Sprint(e.P), e.TS, wmOf(f), 0)); err != nil {
				return err
			}
		}
		return nil
	}))
	eng := dirEngine(t, reg, dir)
	defer eng.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	job, err := eng.Job(ctx, "Marks", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(p int, ts int64) {
		t.Helper()
		rec := &kgo.Record{Topic: "wm", Partition: int32(p), Value: fmt.Appendf(nil, `{"p":%d,"ts":%d}`, p, ts)}
		if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitRows := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			rows := outRows(t, dir)
			if len(rows) >= n {
				return rows
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sink holds %d rows after 30s, want %d: %q", len(rows), n, rows)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Partition 1 first: a partition not read yet cannot hold the
	// watermark back.
	produce(1, 10000)
	waitRows(1)
	produce(0, 100000)
	waitRows(2)
	// Partition 0 goes on; partition 1 says nothing more.
	const n = 60
	for i := range n {
		produce(0, 200000+int64(i))
		time.Sleep(100 * time.Millisecond)
	}
	rows := waitRows(2 + n)
	held, released := 0, 0
	for _, r := range rows[2:] {
		var kind, p string
		var ts, wm, after int64
		if _, err := fmt.Sscan(r, &kind, &p, &ts, &wm, &after); err != nil {
			t.Fatal(err)
		}
		switch {
		case wm == 10000:
			held++ // partition 1 (largest 10000) holds it
		case wm >= 200000 && wm < ts:
			released++ // partition 1 idle: partition 0 alone
		default:
			t.Fatalf("row %q saw watermark %d: want 10000 (the least partition) or partition 0's time once partition 1 is idle", r, wm)
		}
	}
	if held == 0 || released == 0 {
		t.Fatalf("%d rows saw the watermark held by the quiet partition and %d after its idle timeout: want both; rows:\n%s", held, released, strings.Join(rows, "\n"))
	}
}
