package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

func TestExactlyOnceKafkaToKafka(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := strings.Join(c.ListenAddrs(), ",")
	in := start(t, addrs, "input", map[string]string{"key_field": "{id}"})
	const n = 300
	var rows []any
	for i := 1; i <= n; i++ {
		rows = append(rows, map[string]any{"id": i})
	}
	if err := in.Write(context.Background(), rows); err != nil {
		t.Fatal(err)
	}

	reg := kisflow.NewRegistry()
	if err := Install(reg); err != nil {
		t.Fatal(err)
	}
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: ETL\nflows:\n  - fname: Mark\nstream:\n  source: k\n  sink: k\n  delivery: exactly-once\n  batch_size: 50\n  workers: 2\n",
		"func.yml": "kistype: func\nfname: Mark\nfmode: Calculate\ncalc:\n  doubled: id * 2\nkeep: [id, doubled]\n",
		"conn.yml": fmt.Sprintf("kistype: conn\ncname: k\ntype: kafka\naddrs: %s\nkey: input\nparams:\n  transactional_id: etl-1\n  output_topic: output\n  key_field: \"{id}\"\n  heartbeat: 100ms\n", addrs),
	}, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	stats := testenv.RunJob(t, eng, "ETL", n, 30*time.Second)
	if s := stats; s.MaxInFlight > 50 {
		t.Fatalf("%d messages in flight: a transaction commits all it read, so one batch at a time", s.MaxInFlight)
	}
	seen := testenv.KafkaCommittedIDs(t, addrs, "output")
	total := 0
	for _, c := range seen {
		total += c
	}
	if total != n || len(seen) != n {
		t.Fatalf("output holds %d committed rows, %d distinct; want %d exactly once", total, len(seen), n)
	}
}
