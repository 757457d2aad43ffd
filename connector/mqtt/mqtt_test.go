package mqtt

import (
	"context"
	"fmt"
	neturl "net/url"
	"testing"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// fixture makes a topic of its own on the broker at url.
func fixture(t *testing.T, url string) conformance.Fixture {
	name := testenv.Name("kisflow-test-")
	d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: url, Key: "kisflow/test/" + name})
	if err != nil {
		t.Fatal(err)
	}
	b := d.(*Broker)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return conformance.Fixture{Sink: b, Open: func(ctx context.Context, group string) (stream.Source, error) {
		// The group's session is the client ID: unique to this test.
		return b.OpenSource(ctx, stream.SourceOptions{Name: name + "-" + group})
	}}
}

// TestConformance runs the suite on the local broker, reached through a
// proxy whose connections the interruption cuts.
func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, OrderPerKey: true},
		New: func(t *testing.T) conformance.Fixture {
			broker, err := neturl.Parse(testenv.MQTT.Addr(t))
			if err != nil {
				t.Fatal(err)
			}
			proxy := testenv.NewProxy(t, broker.Host)
			f := fixture(t, "tcp://"+proxy.Addr())
			f.Interrupt = proxy.Cut
			return f
		},
	})
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []*config.Conn{
		{CName: "mq"},
		{CName: "mq", Key: "a/b", Params: map[string]string{"timeout": "0s"}},
		{CName: "mq", Key: "a/b", Params: map[string]string{"buffer": "none"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// TestConformanceAcrossARestart runs the suite against a private Mosquitto
// (sessions persisted on disk) that the interruption restarts.
func TestConformanceAcrossARestart(t *testing.T) {
	srv := testenv.PrivateMosquitto(t)
	url := fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, OrderPerKey: true, Interrupt: srv.Restart},
		New:      func(t *testing.T) conformance.Fixture { return fixture(t, url) },
	})
}

// Several addrs are all given to Paho: a broker that is down is passed
// over for the next.
func TestSeveralAddrsAreTriedInOrder(t *testing.T) {
	t.Parallel()
	d, err := New(&config.Conn{CName: "mq", Type: Type, Addrs: "tcp://127.0.0.1:1," + testenv.MQTT.Addr(t), Key: "kisflow/test/" + testenv.Name("addrs-"),
		Params: map[string]string{"timeout": "5s"}})
	if err != nil {
		t.Fatal(err)
	}
	b := d.(*Broker)
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Write(context.Background(), []any{map[string]any{"id": 1}}); err != nil {
		t.Fatalf("write through the second broker: %v", err)
	}
}

// The spec names every bad param, through New: a misspelt one with the
// closest declared name, a duration without its unit, a boolean that is
// not true or false.
func TestSpecRefusesBadParams(t *testing.T) {
	t.Parallel()
	testenv.RefusesParams(t, New, &config.Conn{CName: "mq", Key: "a/b", Params: map[string]string{
		"clientid": "c", "timeout": "10", "tls": "yes"}},
		`mqtt connector "mq": `,
		`param clientid: unknown param (did you mean client_id?)`,
		`param timeout: "10" has no unit (want a duration such as 10s or 10ms)`,
		`param tls: "yes" is not a boolean (want true or false)`)
}

// user, password and tls reach Paho's options.
func TestCredentialsAndTLSReachTheClient(t *testing.T) {
	t.Parallel()
	d, err := New(&config.Conn{CName: "mq", Key: "a/b", Params: map[string]string{"user": "ann", "password": "Pw1", "tls": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	o := d.(*Broker).options("c", false)
	if o.Username != "ann" || o.Password != "Pw1" || o.TLSConfig == nil {
		t.Fatalf("user %q, password %q, TLS %v", o.Username, o.Password, o.TLSConfig != nil)
	}
}
