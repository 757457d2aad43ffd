package kafka

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/conformance"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// cluster starts an in-process Kafka (franz-go's kfake, the real wire
// protocol) with one topic of 4 partitions.
func cluster(t *testing.T) (addrs, topic string) {
	t.Helper()
	topic = "events"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ","), topic
}

func start(t *testing.T, addrs, topic string, params map[string]string) *Kafka {
	t.Helper()
	d, err := New(&config.Conn{CName: "k", Type: Type, Addrs: addrs, Key: topic, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	k := d.(*Kafka)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close(context.Background()) })
	return k
}

// fixture starts a connector on the topic of the cluster at addrs.
func fixture(t *testing.T, addrs, topic string) conformance.Fixture {
	k := start(t, addrs, topic, map[string]string{"key_field": "{key}", "heartbeat": "100ms"})
	return conformance.Fixture{Sink: k, Open: func(ctx context.Context, group string) (stream.Source, error) {
		return k.OpenSource(ctx, stream.SourceOptions{Name: group})
	}}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true},
		New: func(t *testing.T) conformance.Fixture {
			addrs, topic := cluster(t)
			return fixture(t, addrs, topic)
		},
	})
}

// TestRebalanceFinishesBeforeRevoking: while the first consumer still holds
// records it has not acknowledged, a second joins the group. The
// revocation waits until those records are done and committed, so no
// record is lost and none is handed to the new owner again.
func TestRebalanceFinishesBeforeRevoking(t *testing.T) {
	t.Parallel()
	addrs, topic := cluster(t)
	k := start(t, addrs, topic, map[string]string{"key_field": "{id}", "heartbeat": "100ms"})
	ctx := context.Background()
	const n = 400
	var rows []any
	for i := 1; i <= n; i++ {
		rows = append(rows, map[string]any{"id": i})
	}
	if err := k.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[int]int{}
	record := func(msgs []*stream.Message) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			r, err := conformance.Decode(m)
			if err != nil {
				t.Error(err)
			}
			seen[r.ID]++
		}
	}
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	}

	a, err := k.OpenSource(ctx, stream.SourceOptions{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	// A reads until it holds records of every partition, acknowledging none.
	var held []*stream.Message
	heldParts := map[string]bool{}
	for len(heldParts) < 4 {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msgs, err := a.Read(rctx, 20)
		cancel()
		if err != nil {
			t.Fatalf("first reads: %v (holding %d partitions)", err, len(heldParts))
		}
		held = append(held, msgs...)
		for _, m := range msgs {
			heldParts[m.Key] = true // topic/partition
		}
	}
	record(held)

	// B joins while A holds those records unacknowledged: the partitions B
	// is to take over cannot move until A finished and committed them.
	b, err := k.OpenSource(ctx, stream.SourceOptions{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	firstB := map[string]time.Time{} // B's first read per partition
	var wg sync.WaitGroup
	reader := func(src stream.Source, isB bool) {
		defer wg.Done()
		for wctx.Err() == nil && !done() {
			rctx, cancel := context.WithTimeout(wctx, 300*time.Millisecond)
			msgs, _ := src.Read(rctx, 50)
			cancel()
			if len(msgs) == 0 {
				continue
			}
			if isB {
				mu.Lock()
				for _, m := range msgs {
					if _, ok := firstB[m.Key]; !ok {
						firstB[m.Key] = time.Now()
					}
				}
				mu.Unlock()
			}
			record(msgs)
			if err := src.Ack(ctx, msgs); err != nil {
				t.Error(err)
			}
		}
	}
	wg.Add(1)
	go reader(b, true)
	time.Sleep(500 * time.Millisecond)
	ackedAt := time.Now()
	if err := a.Ack(ctx, held); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go reader(a, false)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("%d of %d records read", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("record %d read %d times across the rebalance", id, c)
		}
	}
	if len(firstB) == 0 {
		t.Fatal("the new member never got a partition")
	}
	moved := 0
	for part, at := range firstB {
		if !heldParts[part] {
			continue
		}
		moved++
		if at.Before(ackedAt) {
			t.Fatalf("the new member read %s, whose records the old one still held, %v before they were committed", part, ackedAt.Sub(at))
		}
	}
	if moved == 0 {
		t.Fatal("the new member took over no partition the old one held records of")
	}
	t.Logf("%d of %d partitions moved while the old member held %d of their records", moved, len(heldParts), len(held))
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []*config.Conn{
		{CName: "k", Key: "t"},
		{CName: "k", Addrs: "127.0.0.1:9092"},
		{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: map[string]string{"start": "middle"}},
		{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: map[string]string{"revoke_timeout": "-1s"}},
		{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: map[string]string{"user": "u", "password": "p"}},
		{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: map[string]string{"sasl_mechanism": "GSSAPI"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// TestSASL: a broker that requires SCRAM accepts the right password and
// refuses a wrong one with an error that does not print it.
func TestSASL(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "svc", "RightPw31"), kfake.Superuser("PLAIN", "plainsvc", "PlainPw31"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := strings.Join(c.ListenAddrs(), ",")
	tests := []struct {
		mech, user, pass string
		ok               bool
	}{
		{"SCRAM-SHA-256", "svc", "RightPw31", true},
		{"PLAIN", "plainsvc", "PlainPw31", true},
		{"SCRAM-SHA-256", "svc", "WrongPw31", false},
	}
	for _, tt := range tests {
		t.Run(tt.mech+"/"+tt.pass, func(t *testing.T) {
			t.Parallel()
			d, err := New(&config.Conn{CName: "k", Type: Type, Addrs: addrs, Key: "events", Params: map[string]string{
				"sasl_mechanism": tt.mech, "user": tt.user, "password": tt.pass, "timeout": "2s"}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = d.Start(ctx)
			t.Cleanup(func() { _ = d.Close(context.Background()) })
			if tt.ok {
				if err != nil {
					t.Fatalf("start: %v", err)
				}
				if err := d.(*Kafka).Write(ctx, []any{map[string]any{"id": 1}}); err != nil {
					t.Fatalf("write: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("a wrong password started")
			}
			if strings.Contains(err.Error(), tt.pass) {
				t.Fatalf("the error prints the password: %v", err)
			}
		})
	}
}

// broker is a kfake cluster the test can interrupt: it keeps its data in a
// folder and listens on a fixed port, so Restart brings the same cluster
// back (as a broker restart would), and Cut closes every client connection.
type broker struct {
	t     *testing.T
	dir   string
	port  int
	topic string
	mu    sync.Mutex
	c     *kfake.Cluster
	conns []net.Conn
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{t: t, dir: t.TempDir(), port: ln.Addr().(*net.TCPAddr).Port, topic: "events"}
	ln.Close()
	b.start()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.c.Close()
	})
	return b
}

func (b *broker) addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

func (b *broker) start() {
	b.t.Helper()
	var c *kfake.Cluster
	var err error
	// The port may still be held for a moment after Close.
	for range 50 {
		c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, b.topic), kfake.DataDir(b.dir),
			kfake.Ports(b.port), kfake.ListenFn(b.listen))
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.c = c
	b.mu.Unlock()
}

func (b *broker) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &trackingListener{Listener: ln, b: b}, nil
}

type trackingListener struct {
	net.Listener
	b *broker
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.b.mu.Lock()
		l.b.conns = append(l.b.conns, c)
		l.b.mu.Unlock()
	}
	return c, err
}

// Restart closes the cluster and starts it again from its data folder.
func (b *broker) Restart(t *testing.T) {
	b.mu.Lock()
	b.c.Close()
	b.conns = nil
	b.mu.Unlock()
	time.Sleep(500 * time.Millisecond) // clients see the broker gone
	b.start()
}

// Cut closes every connection clients opened; the broker stays up.
func (b *broker) Cut(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.conns) == 0 {
		t.Fatal("no connection to cut")
	}
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// TestConformanceAcrossAnInterruption runs the suite with the broker
// restarted mid-stream (from its data folder: without it, the rows stored
// before the restart are lost and the case fails), then with every
// connection cut. Each case gets a cluster of its own.
func TestConformanceAcrossAnInterruption(t *testing.T) {
	for _, how := range []string{"Restart", "Cut"} {
		t.Run(how, func(t *testing.T) {
			conformance.Run(t, conformance.Harness{
				Features: conformance.Features{Redelivery: true, SharedGroup: true, OrderPerKey: true},
				New: func(t *testing.T) conformance.Fixture {
					b := newBroker(t)
					f := fixture(t, b.addr(), b.topic)
					f.Interrupt = b.Cut
					if how == "Restart" {
						f.Interrupt = b.Restart
					}
					return f
				},
			})
		})
	}
}

func TestARecordTooLargeIsRefusedPermanently(t *testing.T) {
	t.Parallel()
	addrs, topic := cluster(t)
	k := start(t, addrs, topic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := map[string]any{"id": 1, "blob": strings.Repeat("x", 2<<20)} // over the producer's 1 MB batch limit
	err := k.Write(ctx, []any{big})
	if err == nil || !stream.IsPermanent(err) {
		t.Fatalf("a record over the size limit: %v (want an error marked permanent)", err)
	}
	if err := k.Write(ctx, []any{map[string]any{"id": 2}}); err != nil {
		t.Fatalf("a small row after it: %v", err)
	}
}

// The spec names every bad param, through New: a misspelt one with the
// closest declared name, a duration without its unit, a boolean that is
// not true or false, a word that is not one of the enum's.
func TestSpecRefusesBadParams(t *testing.T) {
	t.Parallel()
	testenv.RefusesParams(t, New, &config.Conn{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: map[string]string{
		"revoke_timout": "5s", "heartbeat": "3", "tls": "yes", "start": "latst"}},
		`kafka connector "k": `,
		`param revoke_timout: unknown param (did you mean revoke_timeout?)`,
		`param heartbeat: "3" has no unit (want a duration such as 3s or 3ms)`,
		`param tls: "yes" is not a boolean (want true or false)`,
		`param start: "latst" is not one of earliest, latest (did you mean latest?)`)
}

// sasl_user and sasl_password, the former names of user and password,
// still work; lint warns about each.
func TestFormerSASLNamesStillWork(t *testing.T) {
	t.Parallel()
	params := map[string]string{"sasl_mechanism": "PLAIN", "sasl_user": "u", "sasl_password": "p"}
	d, err := New(&config.Conn{CName: "k", Addrs: "127.0.0.1:9092", Key: "t", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if d.(*Kafka).sasl == nil {
		t.Fatal("sasl_user and sasl_password were not read")
	}
	errs := Spec.Check(params)
	if len(errs) != 2 || !errs[0].Warning || !errs[1].Warning {
		t.Fatalf("problems %v: want two warnings", errs)
	}
	if got := errs.Error(); !strings.Contains(got, "sasl_password is now called password") || !strings.Contains(got, "sasl_user is now called user") {
		t.Fatalf("warnings %q", got)
	}
}
