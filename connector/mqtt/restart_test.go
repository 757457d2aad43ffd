package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// TestAcksAfterARestartReachTheBroker reads a batch, loses the broker
// before acknowledging it (as a job does whose flow is still writing when
// the broker restarts), then keeps reading and acknowledging: every
// message must still arrive. Mosquitto holds at most 20 unacknowledged
// messages in flight per session, so acknowledgements that never reach it
// stall the session for good.
func TestAcksAfterARestartReachTheBroker(t *testing.T) {
	srv := testenv.PrivateMosquitto(t)
	url := fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())
	d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: url, Key: "kisflow/test/restart", Params: map[string]string{"timeout": "5s"}})
	if err != nil {
		t.Fatal(err)
	}
	b := d.(*Broker)
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(ctx) })
	src, err := b.OpenSource(ctx, stream.SourceOptions{Name: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(ctx) })

	// Mosquitto queues at most 1000 messages for a session
	// (max_queued_messages) and drops the rest: stay below.
	const n = 900
	publish := func(from, to int) {
		t.Helper()
		var rows []any
		for i := from; i <= to; i++ {
			rows = append(rows, map[string]any{"id": i})
		}
		// The publisher may find the broker still starting: retry.
		for deadline := time.Now().Add(30 * time.Second); ; {
			err := b.Write(ctx, rows)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %d-%d: %v", from, to, err)
			}
		}
	}
	publish(1, 200)
	seen := map[int]bool{}
	read := func(wait time.Duration) []*stream.Message {
		rctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		msgs, err := src.Read(rctx, 50)
		if err != nil && rctx.Err() == nil {
			t.Fatalf("read: %v", err)
		}
		for _, m := range msgs {
			var row struct{ ID int }
			if err := json.Unmarshal(m.Payload.([]byte), &row); err != nil {
				t.Fatal(err)
			}
			seen[row.ID] = true
		}
		return msgs
	}
	// Some batches are done before the broker goes down, and one is
	// still running.
	for range 3 {
		msgs := read(10 * time.Second)
		if err := src.Ack(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	held := read(10 * time.Second)
	if len(held) == 0 {
		t.Fatal("nothing read before the restart")
	}
	srv.Down(t, time.Second)
	// The flow finishes the batch it read over the old connection.
	if err := src.Ack(ctx, held); err != nil {
		t.Fatal(err)
	}
	publish(201, n)
	deadline := time.Now().Add(2 * time.Minute)
	for len(seen) < n && time.Now().Before(deadline) {
		msgs := read(20 * time.Second)
		if len(msgs) == 0 {
			break
		}
		if err := src.Ack(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != n {
		t.Fatalf("after a restart %d of %d messages arrived", len(seen), n)
	}
}
