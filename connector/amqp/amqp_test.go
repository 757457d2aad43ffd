package amqp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// open holds the sources of running tests, for interrupt.
var open sync.Map

func start(t *testing.T, url string) *Broker {
	t.Helper()
	queue := testenv.Name("kisflow-test-")
	d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: url, Key: queue, Params: map[string]string{"create": "true", "prefetch": "100"}})
	if err != nil {
		t.Fatal(err)
	}
	b := d.(*Broker)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close(context.Background())
		if conn, err := amqp.Dial(url); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(queue, false, false, false)
			}
			conn.Close()
		}
	})
	return b
}

// interrupt drops the consuming connections of the open sources.
func interrupt(t *testing.T) {
	n := 0
	open.Range(func(k, _ any) bool {
		s := k.(*source)
		s.mu.Lock()
		if s.conn != nil && s.conn.Close() == nil {
			n++
		}
		s.mu.Unlock()
		return true
	})
	if n == 0 {
		t.Fatal("no connection to cut")
	}
}

// fixture makes a queue of its own on the broker at url.
func fixture(url string) func(t *testing.T) conformance.Fixture {
	return func(t *testing.T) conformance.Fixture {
		b := start(t, url)
		return conformance.Fixture{Sink: b, Open: func(ctx context.Context, group string) (stream.Source, error) {
			src, err := b.OpenSource(ctx, stream.SourceOptions{Name: group})
			if err == nil {
				open.Store(src, true)
				t.Cleanup(func() { open.Delete(src) })
			}
			return src, err
		}}
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: interrupt},
		New:      fixture(testenv.RabbitMQ.Addr(t)),
	})
}

// TestConformanceAcrossARestart runs the suite against a private RabbitMQ
// node that the interruption restarts: durable queues and persistent
// messages survive it, and the source and sink reconnect.
func TestConformanceAcrossARestart(t *testing.T) {
	if testing.Short() {
		t.Skip("a private RabbitMQ node takes half a minute to boot")
	}
	srv := testenv.PrivateRabbitMQ(t)
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true, Interrupt: srv.Restart, Wait: 60 * time.Second},
		New:      fixture(fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", srv.Port())),
	})
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []*config.Conn{
		{CName: "mq"},
		{CName: "mq", Key: "q", Params: map[string]string{"prefetch": "0"}},
		{CName: "mq", Key: "q", Params: map[string]string{"timeout": "x"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// A dial error never holds the password of the URL, even when the URL does
// not parse (url.Parse quotes it whole) or the server refuses it.
func TestDialErrorHidesThePassword(t *testing.T) {
	t.Parallel()
	for _, addrs := range []string{"amqp://guest:s3cret@127.0.0.1:badport/", "amqp://guest:s3cret@127.0.0.1:1/"} {
		d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: addrs, Key: "q", Params: map[string]string{"timeout": "500ms"}})
		if err != nil {
			t.Fatal(err)
		}
		err = d.(*Broker).Start(context.Background())
		if err == nil {
			t.Fatalf("%s: started", addrs)
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "guest:xxxxx@") && !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("%s: error %q", addrs, err)
		}
	}
}

// Several addrs are tried in order: a node that is down is passed over.
func TestSeveralAddrsAreTriedInOrder(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ.Addr(t)
	b := start(t, "amqp://guest:guest@127.0.0.1:1/,"+url)
	if err := b.Write(context.Background(), []any{map[string]any{"id": 1}}); err != nil {
		t.Fatalf("write through the second node: %v", err)
	}
}

// Refused credentials end a job (no retry can mend them); a node that is
// down is an outage, retried.
func TestRefusedCredentialsAreFatal(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ.Addr(t)
	bad := strings.Replace(url, "guest:guest@", "guest:wrong@", 1)
	if bad == url {
		t.Skipf("the RabbitMQ URL %s has no guest:guest to spoil", url)
	}
	for _, tc := range []struct {
		addrs string
		fatal bool
	}{{bad, true}, {"amqp://guest:guest@127.0.0.1:1/", false}} {
		d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: tc.addrs, Key: "q", Params: map[string]string{"timeout": "2s"}})
		if err != nil {
			t.Fatal(err)
		}
		err = d.(*Broker).Start(context.Background())
		if err == nil || stream.IsFatal(err) != tc.fatal {
			t.Errorf("%s: %v (fatal %v, want %v)", config.Redact(tc.addrs), err, stream.IsFatal(err), tc.fatal)
		}
	}
}

// The spec names every bad param, through New: a misspelt one with the
// closest declared name, a duration without its unit, a boolean that is
// not true or false, a number below the minimum.
func TestSpecRefusesBadParams(t *testing.T) {
	t.Parallel()
	testenv.RefusesParams(t, New, &config.Conn{CName: "mq", Key: "q", Params: map[string]string{
		"exchang": "x", "timeout": "10", "create": "yes", "prefetch": "0"}},
		`rabbitmq connector "mq": `,
		`param exchang: unknown param (did you mean exchange?)`,
		`param timeout: "10" has no unit (want a duration such as 10s or 10ms)`,
		`param create: "yes" is not a boolean (want true or false)`,
		`param prefetch: "0" is below the minimum 1`)
}
