package nats

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// start connects a driver to a stream of its own, deleted at cleanup.
func start(t *testing.T, params map[string]string) *NATS {
	t.Helper()
	url := testenv.NATS.Addr(t)
	name := testenv.Name("kf")
	p := map[string]string{"stream": "KF_" + name, "create": "true", "ack_wait": "500ms"}
	for k, v := range params {
		p[k] = v
	}
	d, err := New(&config.Conn{CName: "js", Type: Type, Addrs: url, Key: "kisflow.test." + name, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	n := d.(*NATS)
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	open.Store(n, true)
	t.Cleanup(func() {
		_ = n.js.DeleteStream(context.Background(), n.streamName)
		open.Delete(n)
		_ = n.Close(context.Background())
	})
	return n
}

// open holds the drivers of running tests, for interrupt.
var open sync.Map

// interrupt drops the connection of every open driver; nats.go reconnects.
func interrupt(t *testing.T) {
	n := 0
	open.Range(func(k, _ any) bool {
		if err := k.(*NATS).nc.ForceReconnect(); err == nil {
			n++
		}
		return true
	})
	if n == 0 {
		t.Fatal("no connection to cut")
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: interrupt},
		New: func(t *testing.T) conformance.Fixture {
			n := start(t, nil)
			return conformance.Fixture{Sink: n, Open: func(ctx context.Context, group string) (stream.Source, error) {
				return n.OpenSource(ctx, stream.SourceOptions{Name: group})
			}}
		},
	})
}

// With max_deliver 2, the first delivery goes to the flow and the second,
// JetStream's last, comes back Failed for the dead-letter path; once that
// is acknowledged, nothing more arrives.
func TestMaxDeliverGoesToTheDeadLetterPath(t *testing.T) {
	t.Parallel()
	n := start(t, map[string]string{"max_deliver": "2", "ack_wait": "200ms"})
	ctx := context.Background()
	if err := n.Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
		t.Fatal(err)
	}
	src, err := n.OpenSource(ctx, stream.SourceOptions{Name: "dlq"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	deliveries := 0
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		msgs, _ := src.Read(rctx, 10)
		cancel()
		for _, m := range msgs {
			if m.Failed != nil {
				if deliveries != 1 || !strings.Contains(m.Failed.Error(), "max_deliver (2)") || !strings.Contains(string(m.Payload.([]byte)), `"id":1`) {
					t.Fatalf("after %d deliveries: %v %s", deliveries, m.Failed, m.Payload)
				}
				if err := src.Ack(ctx, msgs); err != nil {
					t.Fatal(err)
				}
				assertNothingPending(t, src)
				return
			}
			deliveries++ // never acknowledged: redelivered after ack_wait
		}
	}
	t.Fatalf("no dead-letter message after %d deliveries", deliveries)
}

// assertNothingPending fails unless the consumer has no message left to
// deliver or waiting for an acknowledgement.
func assertNothingPending(t *testing.T, src stream.Source) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lag, err := src.(*source).Lag(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still pending after the dead-letter message was acknowledged", lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A process killed with a message in hand does not get JetStream's
// max-deliveries advisory (it fires while nobody listens): the source that
// comes back marks the last allowed delivery Failed itself, so the message
// reaches the dead-letter path instead of vanishing.
func TestLastDeliveryAfterACrashIsDeadLettered(t *testing.T) {
	t.Parallel()
	n := start(t, map[string]string{"max_deliver": "2", "ack_wait": "200ms"})
	ctx := context.Background()
	if err := n.Write(ctx, []any{map[string]any{"id": 7}}); err != nil {
		t.Fatal(err)
	}
	readOne := func() *stream.Message {
		t.Helper()
		src, err := n.OpenSource(ctx, stream.SourceOptions{Name: "crash"})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close(ctx) // the crash: no acknowledgement
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		msgs, err := src.Read(rctx, 10)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("read: %d messages, %v", len(msgs), err)
		}
		return msgs[0]
	}
	if m := readOne(); m.Failed != nil {
		t.Fatalf("first delivery marked Failed: %v", m.Failed)
	}
	src, err := n.OpenSource(ctx, stream.SourceOptions{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msgs, err := src.Read(rctx, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("second read: %d messages, %v", len(msgs), err)
	}
	if msgs[0].Failed == nil || msgs[0].ID != "1" {
		t.Fatalf("last allowed delivery: ID %s, Failed %v; want ID 1 marked Failed", msgs[0].ID, msgs[0].Failed)
	}
	if err := src.Ack(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	assertNothingPending(t, src)
}

// Without max_deliver, JetStream redelivers without limit: crashes do not
// use up a healthy message's attempts (the runtime has its own retries and
// dead-letter path for rows that fail).
func TestMaxDeliverDefaultsToNoLimit(t *testing.T) {
	t.Parallel()
	n := start(t, nil)
	ctx := context.Background()
	// A consumer made by an earlier version, with 5, is updated.
	p := maps.Clone(n.cfg.Params)
	p["max_deliver"] = "5"
	d, err := New(&config.Conn{CName: "js", Type: Type, Addrs: n.cfg.Addrs, Key: n.cfg.Key, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	old := d.(*NATS)
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer old.Close(ctx)
	oldSrc, err := old.OpenSource(ctx, stream.SourceOptions{Name: "unlimited"})
	if err != nil {
		t.Fatal(err)
	}
	if err := oldSrc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	src, err := n.OpenSource(ctx, stream.SourceOptions{Name: "unlimited"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	info, err := src.(*source).cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxDeliver != -1 {
		t.Fatalf("consumer max_deliver %d, want -1 (no limit)", info.Config.MaxDeliver)
	}
}

func TestRetriedWritesAreNotStoredTwice(t *testing.T) {
	t.Parallel()
	n := start(t, map[string]string{"msg_id": "order-{id}"})
	ctx := context.Background()
	rows := []any{map[string]any{"id": 1}, map[string]any{"id": 2}}
	for range 3 { // a sink write retried after a lost acknowledgement
		if err := n.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	st, err := n.js.Stream(ctx, n.streamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", info.State.Msgs)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []*config.Conn{
		{CName: "js", Params: map[string]string{"stream": "S"}},
		{CName: "js", Key: "a.b", Params: map[string]string{}},
		{CName: "js", Key: "a.b", Params: map[string]string{"stream": "S", "ack_wait": "never"}},
		{CName: "js", Key: "a.b", Params: map[string]string{"stream": "S", "max_deliver": "0"}},
		{CName: "js", Key: "a.b", Params: map[string]string{"stream": "S", "max_deliver": "-2"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v: no error", c.Params)
		}
	}
}

// TestConformanceAcrossARestart runs the suite against a private
// nats-server (JetStream on disk) that the interruption restarts.
func TestConformanceAcrossARestart(t *testing.T) {
	srv := testenv.PrivateNATS(t)
	t.Setenv(testenv.NATS.Env, fmt.Sprintf("nats://127.0.0.1:%d", srv.Port()))
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: srv.Restart},
		New: func(t *testing.T) conformance.Fixture {
			n := start(t, nil)
			return conformance.Fixture{Sink: n, Open: func(ctx context.Context, group string) (stream.Source, error) {
				return n.OpenSource(ctx, stream.SourceOptions{Name: group})
			}}
		},
	})
}

func TestWritesCarryTheTraceContext(t *testing.T) {
	t.Parallel()
	n := start(t, nil)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	if err := n.Write(ctx, []any{map[string]any{"id": 1}, map[string]any{"id": 2}}); err != nil {
		t.Fatal(err)
	}
	src, err := n.OpenSource(context.Background(), stream.SourceOptions{Name: "trace"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*stream.Message
	for len(got) < 2 {
		msgs, err := src.Read(rctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msgs...)
	}
	for _, m := range got {
		sc := trace.SpanContextFromContext(stream.ExtractTrace(context.Background(), m.Headers))
		if sc.TraceID() != tid || sc.SpanID() != sid {
			t.Errorf("message headers %v do not carry the writer's span", m.Headers)
		}
	}
}

func TestConnectorsShareAConnectionPlugin(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	name := testenv.Name("kfplug")
	conn := func(cname, subject string) string {
		return "kistype: conn\ncname: " + cname + "\ntype: nats\nkey: kisflow.test." + name + "." + subject +
			"\nparams: {client: main, stream: KF_" + name + "_" + subject + ", create: \"true\"}\n"
	}
	eng, a, b := testenv.SharedClients(t, Install, PluginType,
		"kistype: global\nplugins:\n  nats:\n    main: {url: \"${KISFLOW_TEST_NATS_URL:-"+url+"}\"}\n",
		conn("a", "a")+"---\n"+conn("b", "b")+"---\nkistype: conn\ncname: bad\ntype: nats\nkey: x\nparams: {client: nosuch, stream: X}\n")
	ctx := context.Background()
	na, nb := a.(*NATS), b.(*NATS)
	p, _ := eng.Plugin(PluginType, "main")
	shared := p.(*ClientPlugin).Conn()
	if na.Conn() != shared || nb.Conn() != shared {
		t.Fatal("the connectors do not use the plugin's connection")
	}
	if err := na.Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
		t.Fatal(err)
	}
	st, err := na.JetStream().Stream(ctx, na.streamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("write through the shared connection: %+v %v", info, err)
	}
	for _, n := range []*NATS{na, nb} { // while the connection is open
		if err := n.JetStream().DeleteStream(ctx, n.streamName); err != nil {
			t.Error(err)
		}
	}
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !shared.IsClosed() {
		t.Fatal("the shared connection is still open after the engine closed")
	}
}

// A connection error names the server without the password or token of
// its URL, even when the URL does not parse.
func TestConnectErrorHidesThePassword(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, addrs, shown string }{
		{"password", "nats://alice:s3cret@127.0.0.1:1", "alice:xxxxx@127.0.0.1:1"},
		{"token", "nats://s3cret@127.0.0.1:1", "nats://xxxxx@127.0.0.1:1"},
		{"bad port", "nats://alice:s3cret@127.0.0.1:badport", "alice:xxxxx@127.0.0.1:badport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := New(&config.Conn{CName: "js", Type: Type, Addrs: tt.addrs, Key: "a", Params: map[string]string{"stream": "S", "timeout": "200ms"}})
			if err != nil {
				t.Fatal(err)
			}
			err = d.(*NATS).Start(context.Background())
			if err == nil {
				t.Fatal("connected to a port nothing listens on")
			}
			if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), tt.shown) {
				t.Fatalf("error %q: want the URL with its password hidden", err)
			}
		})
	}
}

func TestARowTooLargeIsRefusedPermanently(t *testing.T) {
	t.Parallel()
	n := start(t, nil)
	ctx := context.Background()
	big := map[string]any{"id": 1, "blob": strings.Repeat("x", 2<<20)} // over the server's 1 MB max_payload
	err := n.Write(ctx, []any{map[string]any{"id": 0}, big})
	if err == nil || !stream.IsPermanent(err) {
		t.Fatalf("a message over max_payload: %v (want an error marked permanent)", err)
	}
	if err := n.Write(ctx, []any{map[string]any{"id": 2}}); err != nil || stream.IsPermanent(err) {
		t.Fatalf("a small row after it: %v", err)
	}
}

// The spec names every bad param, through New: a misspelt one with the
// closest declared name, a duration without its unit, a boolean that is
// not true or false, a missing required one.
func TestSpecRefusesBadParams(t *testing.T) {
	t.Parallel()
	testenv.RefusesParams(t, New, &config.Conn{CName: "js", Key: "a.b", Params: map[string]string{
		"max_delivr": "3", "ack_wait": "30", "create": "yes"}},
		`nats connector "js": `,
		`param max_delivr: unknown param (did you mean max_deliver?)`,
		`param ack_wait: "30" has no unit (want a duration such as 30s or 30ms)`,
		`param create: "yes" is not a boolean (want true or false)`,
		`param stream: required: the JetStream stream`)
	testenv.RefusesParams(t, New, &config.Conn{CName: "js", Key: "a.b", Params: map[string]string{"stream": "S", "max_deliver": "0"}},
		`param max_deliver: 0 delivers nothing (want at least 1, or -1 for no limit)`)
}

// While the server is down, Read says so with an error naming NATS, not
// marked fatal (the runtime reports the outage and retries); once it is
// back, Read delivers again.
func TestReadReportsAnOutage(t *testing.T) {
	srv := testenv.PrivateNATS(t)
	t.Setenv(testenv.NATS.Env, fmt.Sprintf("nats://127.0.0.1:%d", srv.Port()))
	n := start(t, nil)
	ctx := context.Background()
	src, err := n.OpenSource(ctx, stream.SourceOptions{Name: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(ctx) })
	if err := n.Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
		t.Fatal(err)
	}
	read := func() ([]*stream.Message, error) {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return src.Read(rctx, 10)
	}
	msgs, err := read()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("before the outage: %v %v", msgs, err)
	}
	if err := src.Ack(ctx, msgs); err != nil { // not redelivered after the outage
		t.Fatal(err)
	}
	back := make(chan struct{})
	go func() {
		defer close(back)
		srv.Down(t, 5*time.Second)
	}()
	var outage error
	deadline := time.Now().Add(5 * time.Second)
	for outage == nil && time.Now().Before(deadline) {
		if _, err := read(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			outage = err
		}
	}
	if outage == nil || stream.IsFatal(outage) || !strings.Contains(outage.Error(), "NATS") || !strings.Contains(outage.Error(), "not connected") {
		t.Fatalf("a read while the server is down: %v (want a transient error saying NATS is not connected)", outage)
	}
	<-back
	if err := n.Write(ctx, []any{map[string]any{"id": 2}}); err != nil {
		t.Fatal(err)
	}
	var got []*stream.Message
	deadline = time.Now().Add(time.Minute)
	for len(got) == 0 && time.Now().Before(deadline) {
		msgs, err := read()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "not connected") &&
			!strings.Contains(err.Error(), "waiting for it to hold") {
			t.Fatal(err)
		}
		got = append(got, msgs...)
	}
	if len(got) != 1 || string(got[0].Payload.([]byte)) != `{"id":2}` {
		t.Fatalf("after the outage: %v", got)
	}
}
