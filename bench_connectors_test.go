package kisflow_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	kisnats "github.com/kisflow-go/kisflow/connector/nats"
	kisredis "github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// The broker benchmarks read the same pre-filled stream twice in one run:
// once with the raw client (fetch, acknowledge each message), once through
// a KisFlow job (source -> pass-through flow -> discard sink, at-least-once),
// and report both rates and their ratio.

const brokerRows = 100_000

// runJobUntil runs the flow of docs until n messages are committed, and
// returns how long that took.
func runJobUntil(b *testing.B, reg *kisflow.Registry, docs map[string]string, n int64) time.Duration {
	b.Helper()
	set, err := config.ImportFS(mapFS(docs), ".")
	if err != nil {
		b.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job, err := eng.Job(ctx, "Bench", kisflow.WithStateDir(filepath.Join(b.TempDir(), "state")))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	for job.Stats().Committed < n {
		select {
		case err := <-done:
			b.Fatalf("job ended early: %v (%d committed)", err, job.Stats().Committed)
		case <-time.After(time.Millisecond):
		}
	}
	took := time.Since(start)
	cancel()
	<-done
	return took
}

func passThroughDocs(conn string) map[string]string {
	docs := chain("Bench", "P1", "P2", "P3", "P4", "P5")
	docs["flow.yml"] += "stream:\n  source: in\n  sink: out\n  batch_size: 1000\n  linger: 5ms\n"
	docs["conns.yml"] = conn + "---\nkistype: conn\ncname: out\ntype: discard\n"
	return docs
}

func passThroughRegistry(b *testing.B, install func(*kisflow.Registry) error) *kisflow.Registry {
	reg := kisflow.NewRegistry()
	if err := file.Install(reg); err != nil {
		b.Fatal(err)
	}
	if err := install(reg); err != nil {
		b.Fatal(err)
	}
	for _, n := range []string{"P1", "P2", "P3", "P4", "P5"} {
		reg.MustRegister(n, kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
			return f.CommitRowBatch(rows)
		}))
	}
	return reg
}

// fill writes brokerRows rows to sink, 1000 at a time.
func fill(b *testing.B, sink stream.Sink) {
	b.Helper()
	rows := make([]any, 0, 1000)
	for i := 1; i <= brokerRows; i++ {
		rows = append(rows, map[string]any{"id": i, "name": "row"})
		if len(rows) == cap(rows) {
			if err := sink.Write(context.Background(), rows); err != nil {
				b.Fatal(err)
			}
			rows = rows[:0]
		}
	}
}

// redisStream starts a Redis connector writing to the stream key.
func redisStream(b *testing.B, addr, key string) *kisredis.Redis {
	b.Helper()
	d, err := kisredis.New(&config.Conn{CName: "pub", Addrs: addr, Key: key, Params: map[string]string{"mode": "stream"}})
	if err != nil {
		b.Fatal(err)
	}
	r := d.(*kisredis.Redis)
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return r
}

func reportVersus(b *testing.B, raw, job time.Duration, n int) {
	rawRate := float64(n) / raw.Seconds()
	jobRate := float64(n) / job.Seconds()
	b.ReportMetric(rawRate, "raw-rows/s")
	b.ReportMetric(jobRate, "kisflow-rows/s")
	b.ReportMetric(jobRate/rawRate, "ratio")
}

func BenchmarkJetStreamVersusRawClient(b *testing.B) {
	url := testenv.NATS.Addr(b)
	for range b.N {
		name := testenv.Name("kf")
		subject, streamName := "kisflow.bench."+name, "KF_"+name
		d, err := kisnats.New(&config.Conn{CName: "pub", Addrs: url, Key: subject, Params: map[string]string{"stream": streamName, "create": "true"}})
		if err != nil {
			b.Fatal(err)
		}
		n := d.(*kisnats.NATS)
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		fill(b, n)
		ctx := context.Background()

		// The raw client: a durable pull consumer, fetch 1000, ack each.
		start := time.Now()
		cons, err := n.JetStream().CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		for got := 0; got < brokerRows; {
			batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				b.Fatal(err)
			}
			for m := range batch.Messages() {
				_ = m.Ack()
				got++
			}
		}
		raw := time.Since(start)

		conn := fmt.Sprintf("kistype: conn\ncname: in\ntype: nats\naddrs: %s\nkey: %s\nparams:\n  stream: %s\n  durable: kisflow\n", url, subject, streamName)
		job := runJobUntil(b, passThroughRegistry(b, kisnats.Install), passThroughDocs(conn), brokerRows)
		reportVersus(b, raw, job, brokerRows)
		_ = n.JetStream().DeleteStream(ctx, streamName)
		_ = n.Close(ctx)
	}
}

func BenchmarkRedisStreamsVersusRawClient(b *testing.B) {
	addr := testenv.Redis.Addr(b)
	for range b.N {
		key := testenv.Name("kisflow-bench-")
		r := redisStream(b, addr, key)
		fill(b, r)
		ctx := context.Background()
		cl := r.Client()

		// The raw client: XREADGROUP 1000 at a time, XACK each batch.
		start := time.Now()
		if err := cl.XGroupCreateMkStream(ctx, key, "raw", "0").Err(); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < brokerRows; {
			res, err := cl.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "raw", Consumer: "c", Streams: []string{key, ">"}, Count: 1000, Block: time.Second}).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				b.Fatal(err)
			}
			for _, st := range res {
				ids := make([]string, len(st.Messages))
				for i, m := range st.Messages {
					ids[i] = m.ID
				}
				if err := cl.XAck(ctx, key, "raw", ids...).Err(); err != nil {
					b.Fatal(err)
				}
				got += len(ids)
			}
		}
		raw := time.Since(start)

		conn := fmt.Sprintf("kistype: conn\ncname: in\ntype: redis\naddrs: %s\nkey: %s\nparams:\n  mode: stream\n  group: kisflow\n", addr, key)
		job := runJobUntil(b, passThroughRegistry(b, kisredis.Install), passThroughDocs(conn), brokerRows)
		reportVersus(b, raw, job, brokerRows)
		cl.Del(ctx, key)
		_ = r.Close(ctx)
	}
}

// BenchmarkRedisSinkDelivery: a pre-filled Redis stream of 100,000 rows
// through the five-layer pass-through into a Redis list, at-least-once
// (pipelined writes) and exactly-once (WATCH, type check, MULTI/EXEC with
// the position and message IDs).
func BenchmarkRedisSinkDelivery(b *testing.B) {
	addr := testenv.Redis.Addr(b)
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		b.Run(delivery, func(b *testing.B) {
			for range b.N {
				prefix := testenv.Name("kisflow-bench-")
				r := redisStream(b, addr, prefix+"in")
				fill(b, r)
				docs := chain("Bench", "P1", "P2", "P3", "P4", "P5")
				docs["flow.yml"] += "stream:\n  source: in\n  sink: out\n  batch_size: 1000\n  linger: 5ms\n  delivery: " + delivery + "\n"
				docs["conns.yml"] = fmt.Sprintf("kistype: conn\ncname: in\ntype: redis\naddrs: %s\nkey: %sin\nparams:\n  mode: stream\n  group: kisflow\n---\n"+
					"kistype: conn\ncname: out\ntype: redis\naddrs: %s\nkey: %sout\nparams:\n  mode: list\n  state_prefix: \"%sstate:\"\n", addr, prefix, addr, prefix, prefix)
				took := runJobUntil(b, passThroughRegistry(b, kisredis.Install), docs, brokerRows)
				b.ReportMetric(float64(brokerRows)/took.Seconds(), "rows/s")
				ctx := context.Background()
				if n := r.Client().LLen(ctx, prefix+"out").Val(); n < brokerRows {
					b.Fatalf("the sink holds %d of %d rows", n, brokerRows)
				}
				if keys, err := r.Client().Keys(ctx, prefix+"*").Result(); err == nil && len(keys) > 0 {
					r.Client().Del(ctx, keys...)
				}
				_ = r.Close(ctx)
			}
		})
	}
}
