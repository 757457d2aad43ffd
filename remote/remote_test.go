package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
	"go.opentelemetry.io/otel/trace"
)

// fakeEngine is a provider's function: it counts its calls and the rows
// it saw, and answers with fn.
type fakeEngine struct {
	calls atomic.Int64
	mu    sync.Mutex
	seen  []string // the "k" field of every row received
	fn    func(ctx context.Context, rows []any) (*driver.Outcome, error)
}

func (f *fakeEngine) Invoke(ctx context.Context, fname string, _ map[string]string, rows []any) (*driver.Outcome, error) {
	f.calls.Add(1)
	f.mu.Lock()
	for _, r := range rows {
		var m map[string]any
		_ = json.Unmarshal(r.([]byte), &m)
		f.seen = append(f.seen, fmt.Sprint(m["k"]))
	}
	f.mu.Unlock()
	if f.fn != nil {
		return f.fn(ctx, rows)
	}
	return &driver.Outcome{Rows: rows}, nil
}

func (f *fakeEngine) keys() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]bool{}
	for _, k := range f.seen {
		m[k] = true
	}
	return m
}

// provider serves eng in-process (no registry) and returns its address;
// maxMessage, if given, is its message limit.
func provider(t *testing.T, eng Invoker, maxMessage ...int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Provider, 1)
	done := make(chan error, 1)
	o := ServeOptions{Registry: "none", Funcs: []string{"F"}, Drain: time.Second, Ready: func(p Provider) { ready <- p }}
	if len(maxMessage) > 0 {
		o.MaxMessage = maxMessage[0]
	}
	go func() {
		done <- Serve(ctx, eng, o)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case p := <-ready:
		return p.Addr
	case err := <-done:
		t.Fatal(err)
	}
	return ""
}

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func client(t *testing.T, o Options, addrs ...string) *Client {
	t.Helper()
	dir, err := Static(addrs)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rows(keys ...string) []any {
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = []byte(fmt.Sprintf(`{"k":%q}`, k))
	}
	return out
}

func call(rs []any) *driver.Invocation {
	return &driver.Invocation{Flow: "Fl", Func: "F", Rows: rs, KeyField: "k"}
}

var errBoom = errors.New("boom")

func TestClusterStrategies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("failover retries on another provider", func(t *testing.T) {
		t.Parallel()
		good := &fakeEngine{}
		c := client(t, Options{Cluster: Failover, LoadBalance: RoundRobin, Retries: 1}, deadAddr(t), provider(t, good))
		for i := range 6 {
			out, err := c.Invoke(ctx, call(rows("a", "b")))
			if err != nil || len(out.Rows) != 2 {
				t.Fatalf("call %d: %v, %v", i, out, err)
			}
		}
		if good.calls.Load() != 6 {
			t.Fatalf("the live provider got %d calls, want 6", good.calls.Load())
		}
	})
	t.Run("failover does not retry the function's own error", func(t *testing.T) {
		t.Parallel()
		a := &fakeEngine{fn: func(context.Context, []any) (*driver.Outcome, error) { return nil, errBoom }}
		b := &fakeEngine{fn: a.fn}
		c := client(t, Options{Cluster: Failover, Retries: 2}, provider(t, a), provider(t, b))
		_, err := c.Invoke(ctx, call(rows("a")))
		if err == nil || a.calls.Load()+b.calls.Load() != 1 {
			t.Fatalf("err %v, calls %d+%d: want the function's error after one call", err, a.calls.Load(), b.calls.Load())
		}
		var pe *providerError
		if errors.As(err, &pe) {
			t.Fatalf("a function error taken for a provider failure: %v", err)
		}
	})
	t.Run("a permanent error stays permanent", func(t *testing.T) {
		t.Parallel()
		a := &fakeEngine{fn: func(context.Context, []any) (*driver.Outcome, error) { return nil, stream.Permanent(errBoom) }}
		c := client(t, Options{}, provider(t, a))
		if _, err := c.Invoke(ctx, call(rows("a"))); !stream.IsPermanent(err) {
			t.Fatalf("err %v: want stream.Permanent", err)
		}
	})
	t.Run("failfast tries once", func(t *testing.T) {
		t.Parallel()
		good := &fakeEngine{}
		// round_robin's first pick is the first provider listed: the dead one.
		c := client(t, Options{Cluster: Failfast, LoadBalance: RoundRobin, Retries: 5}, deadAddr(t), provider(t, good))
		if _, err := c.Invoke(ctx, call(rows("a"))); err == nil {
			t.Fatal("failfast succeeded through a dead provider")
		}
		if good.calls.Load() != 0 {
			t.Fatalf("failfast tried another provider (%d calls)", good.calls.Load())
		}
	})
	t.Run("failsafe yields no rows", func(t *testing.T) {
		t.Parallel()
		var logs bytes.Buffer
		var mu sync.Mutex
		c := client(t, Options{Cluster: Failsafe, Logger: slog.New(slog.NewTextHandler(&lockedBuffer{b: &logs, mu: &mu}, nil))}, deadAddr(t))
		out, err := c.Invoke(ctx, call(rows("a")))
		if err != nil || len(out.Rows) != 0 {
			t.Fatalf("failsafe: %v, %v: want no rows, no error", out, err)
		}
		if _, err := c.Invoke(ctx, call(rows("b", "c"))); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		mu.Lock()
		defer mu.Unlock()
		if c.Dropped() != 3 || !strings.Contains(logs.String(), "failsafe dropped 3 rows") {
			t.Fatalf("dropped %d, logged %s: want the 3 rows of the failed calls named", c.Dropped(), logs.String())
		}
	})
	t.Run("forking takes the first success", func(t *testing.T) {
		t.Parallel()
		slow := &fakeEngine{fn: func(ctx context.Context, rs []any) (*driver.Outcome, error) {
			select {
			case <-time.After(3 * time.Second):
			case <-ctx.Done():
			}
			return &driver.Outcome{Rows: rs}, nil
		}}
		// The fast one answers after both calls arrived.
		fast := &fakeEngine{fn: func(_ context.Context, rs []any) (*driver.Outcome, error) {
			time.Sleep(300 * time.Millisecond)
			return &driver.Outcome{Rows: rs}, nil
		}}
		c := client(t, Options{Cluster: Forking, Forks: 2, Timeout: 10 * time.Second}, provider(t, slow), provider(t, fast))
		start := time.Now()
		out, err := c.Invoke(ctx, call(rows("a")))
		if err != nil || len(out.Rows) != 1 {
			t.Fatal(out, err)
		}
		if d := time.Since(start); d > 2*time.Second || slow.calls.Load() != 1 || fast.calls.Load() != 1 {
			t.Fatalf("forking took %s with calls slow %d fast %d: want both called and the fast answer", d, slow.calls.Load(), fast.calls.Load())
		}
	})
	t.Run("broadcast calls all and fails if any fails", func(t *testing.T) {
		t.Parallel()
		a, b := &fakeEngine{}, &fakeEngine{}
		bad := &fakeEngine{fn: func(context.Context, []any) (*driver.Outcome, error) { return nil, errBoom }}
		c := client(t, Options{Cluster: Broadcast}, provider(t, a), provider(t, b))
		if _, err := c.Invoke(ctx, call(rows("a"))); err != nil {
			t.Fatal(err)
		}
		if a.calls.Load() != 1 || b.calls.Load() != 1 {
			t.Fatalf("broadcast calls %d, %d: want 1 each", a.calls.Load(), b.calls.Load())
		}
		c2 := client(t, Options{Cluster: Broadcast}, provider(t, a), provider(t, bad))
		if _, err := c2.Invoke(ctx, call(rows("a"))); err == nil {
			t.Fatal("broadcast succeeded though a provider failed")
		}
		if a.calls.Load() != 2 || bad.calls.Load() != 1 {
			t.Fatalf("broadcast did not call every provider: %d, %d", a.calls.Load(), bad.calls.Load())
		}
	})
	t.Run("least_active avoids a busy provider", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		busy := &fakeEngine{fn: func(ctx context.Context, rs []any) (*driver.Outcome, error) {
			<-release
			return &driver.Outcome{Rows: rs}, nil
		}}
		idle := &fakeEngine{}
		c := client(t, Options{LoadBalance: LeastActive, Timeout: 10 * time.Second}, provider(t, busy), provider(t, idle))
		// Make the busy one busy: calls until one sticks there.
		var wg sync.WaitGroup
		defer func() { close(release); wg.Wait() }()
		for busy.calls.Load() == 0 {
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = c.Invoke(ctx, call(rows("x"))) }()
			time.Sleep(20 * time.Millisecond)
		}
		before := idle.calls.Load()
		for range 20 {
			if _, err := c.Invoke(ctx, call(rows("a"))); err != nil {
				t.Fatal(err)
			}
		}
		if busy.calls.Load() != 1 || idle.calls.Load()-before != 20 {
			t.Fatalf("least_active sent %d calls to the busy provider", busy.calls.Load()-1)
		}
	})
	t.Run("row errors and actions cross the call", func(t *testing.T) {
		t.Parallel()
		a := &fakeEngine{fn: func(_ context.Context, rs []any) (*driver.Outcome, error) {
			return &driver.Outcome{Rows: rs[1:], RowErrors: []driver.RowError{{Index: 0, Msg: "bad row"}}, JumpFunc: "G", ForceEntryNext: true}, nil
		}}
		c := client(t, Options{}, provider(t, a))
		out, err := c.Invoke(ctx, call(rows("a", "b", "c")))
		if err != nil || len(out.Rows) != 2 || len(out.RowErrors) != 1 || out.RowErrors[0].Index != 0 || out.RowErrors[0].Msg != "bad row" || out.JumpFunc != "G" || !out.ForceEntryNext {
			t.Fatalf("%+v, %v", out, err)
		}
	})
	t.Run("consistent_hash keeps each key on one provider", func(t *testing.T) {
		t.Parallel()
		es := []*fakeEngine{{}, {}, {}}
		c := client(t, Options{LoadBalance: ConsistentHash}, provider(t, es[0]), provider(t, es[1]), provider(t, es[2]))
		var keys []string
		for i := range 300 {
			keys = append(keys, fmt.Sprint("user", i))
		}
		for range 3 {
			out, err := c.Invoke(ctx, call(rows(keys...)))
			if err != nil || len(out.Rows) != len(keys) {
				t.Fatal(err)
			}
		}
		owner := map[string]int{}
		for i, e := range es {
			if len(e.keys()) == 0 {
				t.Fatalf("provider %d got no key", i)
			}
			for k := range e.keys() {
				if j, ok := owner[k]; ok && j != i {
					t.Fatalf("key %s reached providers %d and %d", k, j, i)
				}
				owner[k] = i
			}
		}
		if len(owner) != len(keys) {
			t.Fatalf("%d keys seen, want %d", len(owner), len(keys))
		}
	})
}

func TestRoundRobinFollowsWeights(t *testing.T) {
	t.Parallel()
	lb, _ := NewBalancer(RoundRobin, new(Active))
	ps := []Provider{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c", Weight: 3}}
	got := map[string]int{}
	run := ""
	for i := range 600 {
		p := lb.Pick(ps, "", nil)
		got[p.ID]++
		if i < 6 {
			run += p.ID
		}
	}
	if got["a"] != 100 || got["b"] != 200 || got["c"] != 300 {
		t.Fatalf("picks %v: want 100, 200, 300", got)
	}
	// Smooth: c never three times in a row within a cycle of six.
	if run != "cbacbc" {
		t.Fatalf("first cycle %q, want the smooth cbacbc", run)
	}
}

func TestRandomFollowsWeights(t *testing.T) {
	t.Parallel()
	lb, _ := NewBalancer(Random, new(Active))
	ps := []Provider{{ID: "a", Weight: 100}, {ID: "b", Weight: 300}}
	n := 0
	for range 20000 {
		if lb.Pick(ps, "", nil).ID == "b" {
			n++
		}
	}
	if n < 14000 || n > 16000 {
		t.Fatalf("b picked %d of 20000 times, want about 15000", n)
	}
}

func TestConsistentHashMovesMinimally(t *testing.T) {
	t.Parallel()
	ps := func(n int) []Provider {
		var out []Provider
		for i := range n {
			a := fmt.Sprintf("10.0.0.%d:9000", i+1)
			out = append(out, Provider{ID: a, Addr: a})
		}
		return out
	}
	lb := &hashLB{}
	const keys = 10000
	pick := func(set []Provider) []string {
		out := make([]string, keys)
		for i := range keys {
			out[i] = lb.Pick(set, fmt.Sprint("key-", i), nil).ID
		}
		return out
	}
	three, again := pick(ps(3)), pick(ps(3))
	counts := map[string]int{}
	for i := range keys {
		if three[i] != again[i] {
			t.Fatal("a key moved while the providers did not change")
		}
		counts[three[i]]++
	}
	for id, n := range counts {
		if n < keys/3*7/10 || n > keys/3*13/10 {
			t.Fatalf("provider %s holds %d of %d keys: the ring is unbalanced %v", id, n, keys, counts)
		}
	}
	four := pick(ps(4))
	moved := 0
	for i := range keys {
		if four[i] != three[i] {
			moved++
			if four[i] != ps(4)[3].ID {
				t.Fatalf("key %d moved from %s to %s, not to the new provider", i, three[i], four[i])
			}
		}
	}
	if moved < keys/4*6/10 || moved > keys/4*14/10 {
		t.Fatalf("%d of %d keys moved when a fourth provider joined: want about a quarter", moved, keys)
	}
	// A provider leaving moves its own keys only.
	two := pick(ps(3)[1:])
	for i := range keys {
		if three[i] != ps(3)[0].ID && two[i] != three[i] {
			t.Fatalf("key %d moved from %s though its provider stayed", i, three[i])
		}
	}
}

func TestNATSRegistry(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	bucket, service := testenv.Name("kfrt_"), testenv.Name("svc_")
	DropBucket(t, url, bucket)
	ctx := context.Background()
	dir, err := WatchNATS(ctx, url, bucket, service, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	v2, err := WatchNATS(ctx, url, bucket, service, "2", "blue")
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	waitFor := func(d Directory, n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for len(d.Providers()) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d providers after %s, want %d: %+v", len(d.Providers()), within, n, d.Providers())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	serve := func(version, group string) (Provider, context.CancelFunc, chan error) {
		sctx, cancel := context.WithCancel(ctx)
		ready := make(chan Provider, 1)
		done := make(chan error, 1)
		go func() {
			done <- Serve(sctx, &fakeEngine{}, ServeOptions{Service: service, Registry: url, Bucket: bucket, Version: version, Group: group,
				TTL: 3 * time.Second, Funcs: []string{"F"}, Weight: 7, Ready: func(p Provider) { ready <- p }})
		}()
		select {
		case p := <-ready:
			return p, cancel, done
		case err := <-done:
			t.Fatal(err)
		}
		return Provider{}, nil, nil
	}
	p1, stop1, done1 := serve("1", "")
	p2, stop2, done2 := serve("2", "blue")
	waitFor(dir, 2, 5*time.Second)
	waitFor(v2, 1, 5*time.Second)
	if got := v2.Providers()[0]; got.Addr != p2.Addr || got.Weight != 7 || got.Funcs[0] != "F" {
		t.Fatalf("version 2 group blue lists %+v, want %+v", got, p2)
	}
	// Heartbeats keep a registration beyond its TTL (3s: a TTL of 1s
	// missed its refresh under the race detector on a loaded machine).
	time.Sleep(7 * time.Second)
	waitFor(dir, 2, 0)
	// A drained provider is dropped at once.
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	waitFor(dir, 1, 5*time.Second)
	if dir.Providers()[0].Addr == p1.Addr {
		t.Fatal("the drained provider is still listed")
	}
	stop2()
	<-done2
	waitFor(dir, 0, 5*time.Second)

	// A registration nobody refreshes (a killed provider) expires after its TTL.
	nc, kv, err := openBucket(ctx, url, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	val, _ := json.Marshal(Provider{ID: "ghost", Service: service, Addr: "127.0.0.1:1", TTL: time.Second})
	put := time.Now()
	if _, err := kv.Put(ctx, natsKey(service, "ghost"), val); err != nil {
		t.Fatal(err)
	}
	// Bounds from the put, not from when the watch showed it: on a loaded
	// machine the watch may show it late.
	waitFor(dir, 1, 5*time.Second)
	waitFor(dir, 0, 10*time.Second)
	if d := time.Since(put); d < 900*time.Millisecond {
		t.Fatalf("an unrefreshed registration was dropped %s after it was written, before its TTL of 1s", d)
	}
	// A directory opened later does not list it either.
	late, err := WatchNATS(ctx, url, bucket, service, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	time.Sleep(300 * time.Millisecond)
	if n := len(late.Providers()); n != 0 {
		t.Fatalf("a new directory lists %d expired providers", n)
	}
}

func TestTraceContextCrossesTheCall(t *testing.T) {
	t.Parallel()
	got := make(chan trace.SpanContext, 1)
	e := &fakeEngine{fn: func(ctx context.Context, rs []any) (*driver.Outcome, error) {
		got <- trace.SpanContextFromContext(ctx)
		return &driver.Outcome{Rows: rs}, nil
	}}
	c := client(t, Options{}, provider(t, e))
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := c.Invoke(ctx, call(rows("a"))); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.TraceID() != tid || !r.IsRemote() {
		t.Fatalf("the provider saw trace %v (remote %v), want %v", r.TraceID(), r.IsRemote(), tid)
	}
}

func TestBreakerPerProvider(t *testing.T) {
	t.Parallel()
	dead := deadAddr(t)
	good := &fakeEngine{}
	c := client(t, Options{Cluster: Failfast, LoadBalance: RoundRobin, BreakerFailures: 3, BreakerOpen: time.Hour}, dead, provider(t, good))
	fails := 0
	for range 20 {
		if _, err := c.Invoke(context.Background(), call(rows("a"))); err != nil {
			fails++
		}
	}
	if fails != 3 || !c.Open(dead) {
		t.Fatalf("%d failed calls, breaker open %v: want the dead provider left out after 3 failures", fails, c.Open(dead))
	}
	if good.calls.Load() != 17 {
		t.Fatalf("the live provider got %d calls, want 17", good.calls.Load())
	}
}

// A provider that registers while a client calls gets traffic within a
// second; version routing keeps calls on the asked version.
func TestProviderAddedGetsTraffic(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	bucket, service := testenv.Name("kfrt_"), testenv.Name("svc_")
	DropBucket(t, url, bucket)
	ctx := context.Background()
	serve := func(e *fakeEngine, version string) {
		sctx, cancel := context.WithCancel(ctx)
		ready := make(chan Provider, 1)
		done := make(chan error, 1)
		go func() {
			done <- Serve(sctx, e, ServeOptions{Service: service, Registry: url, Bucket: bucket, Version: version, TTL: 3 * time.Second, // refreshed every second: a loaded machine may delay one by more than a 1s TTL
				Funcs: []string{"F"}, Ready: func(p Provider) { ready <- p }})
		}()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		}
	}
	first, second, other := &fakeEngine{}, &fakeEngine{}, &fakeEngine{}
	serve(first, "1")
	serve(other, "2")
	dir, err := WatchNATS(ctx, url, bucket, service, "1", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(dir, Options{Service: service, LoadBalance: RoundRobin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		if _, err := c.Invoke(ctx, call(rows("a"))); err != nil {
			t.Fatal(err)
		}
	}
	serve(second, "1")
	added := time.Now()
	for second.calls.Load() == 0 {
		if time.Since(added) > time.Second {
			t.Fatal("the added provider got no call within a second")
		}
		if _, err := c.Invoke(ctx, call(rows("a"))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if other.calls.Load() != 0 {
		t.Fatalf("a provider of version 2 got %d calls from a client asking for version 1", other.calls.Load())
	}
}

func TestStaticList(t *testing.T) {
	t.Parallel()
	d, err := Static([]string{" 10.0.0.1:9000", "10.0.0.2:9000;3", ""})
	if err != nil {
		t.Fatal(err)
	}
	ps := d.Providers()
	if len(ps) != 2 || ps[0].Addr != "10.0.0.1:9000" || ps[0].weight() != DefaultWeight || ps[1].Addr != "10.0.0.2:9000" || ps[1].weight() != 3 {
		t.Fatalf("%+v", ps)
	}
	for _, bad := range [][]string{{"10.0.0.1"}, {"10.0.0.1:9000;0"}, {""}} {
		if _, err := Static(bad); err == nil {
			t.Errorf("Static(%q) accepted", bad)
		}
	}
}

func TestDNSDirectoryFollowsSRVRecords(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	records := []*net.SRV{{Target: "a.pricing.svc.", Port: 9000, Weight: 10}}
	var fail bool
	lookup := func(_ context.Context, name string) ([]*net.SRV, error) {
		mu.Lock()
		defer mu.Unlock()
		if name != "_grpc._tcp.pricing" {
			t.Errorf("looked up %q", name)
		}
		if fail {
			return nil, errors.New("SERVFAIL")
		}
		return records, nil
	}
	d, err := watchDNS(context.Background(), "_grpc._tcp.pricing", 20*time.Millisecond, slog.Default(), lookup)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ps := d.Providers(); len(ps) != 1 || ps[0].Addr != "a.pricing.svc:9000" || ps[0].weight() != 10 {
		t.Fatalf("%+v", ps)
	}
	mu.Lock()
	records = append(records, &net.SRV{Target: "b.pricing.svc.", Port: 9000})
	mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for len(d.Providers()) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("a new SRV record was not followed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	if n := len(d.Providers()); n != 2 {
		t.Fatalf("a failed lookup changed the list to %d providers: it must keep the last", n)
	}
	if _, err := watchDNS(context.Background(), "_grpc._tcp.pricing", time.Second, slog.Default(), lookup); err == nil {
		t.Fatal("a first lookup that fails must be an error")
	}
}

// rowKey scans a row for its key; it agrees with decoding the row.
func TestRowKeyAgreesWithDecoding(t *testing.T) {
	t.Parallel()
	decoded := func(raw, field string) string {
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(raw), &m) != nil {
			return raw
		}
		var s string
		if json.Unmarshal(m[field], &s) == nil {
			return s
		}
		return string(m[field])
	}
	for _, raw := range []string{
		`{"user":"u1","id":1}`,
		` { "id" : 7 , "user" : "u2" } `,
		`{"id":1,"nested":{"user":"inner","a":[1,{"b":"}"}]},"user":"outer"}`,
		`{"s":"a \"quoted\" , }","user":42}`,
		`{"user":12.50}`,
		`{"user":true}`,
		`{"user":null}`,
		`{"user":{"a":1}}`,
		`{"user":[1,2]}`,
		`{"user":"caf\u00e9"}`,
		`{"us\u0065r":"escaped key"}`,
		`{"id":1}`,
		`{}`,
		`[1,2]`,
		`not json`,
		`{"user":"u1"`,
	} {
		if got, want := rowKey(json.RawMessage(raw), "user"), decoded(raw, "user"); got != want {
			t.Errorf("rowKey(%s) = %q, want %q", raw, got, want)
		}
	}
}

// TestHashFieldNoRowHasIsLogged: a consistent_hash field that no row of a
// batch has sends every row to one provider; the client says so, once.
func TestHashFieldNoRowHasIsLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedBuffer{b: &logs, mu: &mu}, nil))
	c := client(t, Options{LoadBalance: ConsistentHash, HashField: "nope", Logger: log}, provider(t, &fakeEngine{}), provider(t, &fakeEngine{}))
	for range 3 {
		if _, err := c.Invoke(context.Background(), call(rows("a", "b", "c", "d"))); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "no row of a batch has the hashed field"); n != 1 {
		t.Fatalf("logged %d times, want once: %s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "field=nope") {
		t.Fatalf("the log does not name the field: %s", logs.String())
	}
}

type lockedBuffer struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// The codec's rows come back as the []byte rows sent, each its own value,
// and stay so through garbage collections (their headers share one array).
func TestCodecRowsRoundTrip(t *testing.T) {
	var text []json.RawMessage
	for i := range 300 {
		text = append(text, json.RawMessage(fmt.Sprintf(`{"id":%d,"s":"%s"}`, i, strings.Repeat("x", i%17))))
	}
	text = append(text, json.RawMessage(`{}`))
	sent := &request{Func: "F", Params: map[string]string{"k": "v"}, Rows: textRows(text)}
	data, err := codec{}.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	got := new(request)
	if err := (codec{}).Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	data.Free()
	if got.Func != "F" || got.Params["k"] != "v" || len(got.In) != len(text) {
		t.Fatalf("got %+v", got)
	}
	rows := got.In
	got = nil
	runtime.GC()
	runtime.GC()
	for i, r := range rows {
		b, ok := r.([]byte)
		if !ok || string(b) != string(text[i]) {
			t.Fatalf("row %d: %T %q, want %q", i, r, r, text[i])
		}
		if i > 0 && !reflect.DeepEqual(rows[i-1], []byte(text[i-1])) {
			t.Fatalf("row %d: changed to %q", i-1, rows[i-1])
		}
	}
	// A truncated message is an error, not rows.
	data, _ = codec{}.Marshal(sent)
	b := data.Materialize()
	if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-3])}, new(request)); !errors.Is(err, errTruncated) {
		t.Fatalf("truncated: %v", err)
	}
}

// serveOn serves eng on addr (127.0.0.1:0: any port) until stop, which
// returns Serve's error and how long the stop took.
func serveOn(t *testing.T, eng Invoker, addr string, drain time.Duration) (bound string, stop func() (error, time.Duration)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Provider, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, eng, ServeOptions{Registry: "none", Listen: addr, Funcs: []string{"F"}, Drain: drain, Ready: func(p Provider) { ready <- p }})
	}()
	var once sync.Once
	var err error
	var took time.Duration
	stop = func() (error, time.Duration) {
		once.Do(func() {
			start := time.Now()
			cancel()
			err = <-done
			took = time.Since(start)
		})
		return err, took
	}
	t.Cleanup(func() { stop() })
	select {
	case p := <-ready:
		return p.Addr, stop
	case err := <-done:
		t.Fatal(err)
	}
	return "", nil
}

// A client keeps its call streams open between calls; a provider that
// stops does not wait for them (its drain ends at once when no call is in
// flight), a call in flight when it stops still gets its reply, and the
// client's next call goes to the provider restarted at the same address
// (the stale idle streams are dropped, not failed as the provider's).
func TestCallStreamsAcrossADrainAndARestart(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := &fakeEngine{fn: func(ctx context.Context, rs []any) (*driver.Outcome, error) {
		if string(rs[0].([]byte)) == `{"k":"slow"}` {
			<-release
		}
		return &driver.Outcome{Rows: rs}, nil
	}}
	addr, stop := serveOn(t, slow, "127.0.0.1:0", 20*time.Second)
	c := client(t, Options{Cluster: Failfast, Timeout: 10 * time.Second}, addr)
	// Several streams open and idle.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Invoke(context.Background(), call(rows("a"))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	inFlight := make(chan error, 1)
	go func() {
		out, err := c.Invoke(context.Background(), call(rows("slow")))
		if err == nil && len(out.Rows) != 1 {
			err = fmt.Errorf("%d rows back", len(out.Rows))
		}
		inFlight <- err
	}()
	for slow.calls.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan time.Duration, 1)
	go func() { _, took := stop(); stopped <- took }()
	time.Sleep(200 * time.Millisecond)
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the call in flight when the provider stopped: %v", err)
	}
	if took := <-stopped; took > 5*time.Second {
		t.Fatalf("the provider took %s to stop: idle call streams held its drain", took)
	}
	if err, _ := stop(); err != nil {
		t.Fatal(err)
	}

	again := &fakeEngine{}
	serveOn(t, again, addr, time.Second)
	for i := range 3 {
		if _, err := c.Invoke(context.Background(), call(rows("b"))); err != nil {
			t.Fatalf("call %d to the provider restarted at %s: %v", i, addr, err)
		}
	}
	if n := again.calls.Load(); n != 3 {
		t.Fatalf("the restarted provider got %d calls, want 3", n)
	}
	if c.Open(addr) {
		t.Fatal("the stale streams counted as the provider's failures")
	}
}

// A provider of an earlier kisflow serves the unary method alone: the
// client finds that out on its first call and calls it unary from then
// on, with the trace in the call's metadata.
func TestCallsReachAProviderWithoutCallStreams(t *testing.T) {
	t.Parallel()
	got := make(chan trace.SpanContext, 3)
	e := &fakeEngine{fn: func(ctx context.Context, rs []any) (*driver.Outcome, error) {
		got <- trace.SpanContextFromContext(ctx)
		return &driver.Outcome{Rows: rs, JumpFunc: "G"}, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec{}))
	unaryOnly := serviceDesc
	unaryOnly.Streams = nil
	srv.RegisterService(&unaryOnly, &server{eng: e, funcs: []string{"F"}, log: slog.Default(), draining: make(chan struct{})})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	c := client(t, Options{Cluster: Failfast}, ln.Addr().String())
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	for i := range 3 {
		out, err := c.Invoke(ctx, call(rows("a", "b")))
		if err != nil || len(out.Rows) != 2 || out.JumpFunc != "G" {
			t.Fatalf("call %d: %+v, %v", i, out, err)
		}
		if r := <-got; r.TraceID() != tid {
			t.Fatalf("call %d: the provider saw trace %v, want %v", i, r.TraceID(), tid)
		}
	}
	if n := e.calls.Load(); n != 3 {
		t.Fatalf("the provider ran %d calls, want 3", n)
	}
	cn, _ := c.conn(ln.Addr().String())
	if !cn.unary.Load() {
		t.Fatal("the client did not switch to unary calls")
	}
}

// TestNATSURL: a registry address is read as nats.go reads it, the port
// 4222 when not given, and what nats.go could never connect to is an
// error.
func TestNATSURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://127.0.0.1":           "nats://127.0.0.1:4222",
		"127.0.0.1":                  "nats://127.0.0.1:4222",
		"nats://a:4333, nats://b":    "nats://a:4333,nats://b:4222",
		"tls://u:p@nats.example.com": "tls://u:p@nats.example.com:4222",
		"nats://[::1]":               "nats://[::1]:4222",
		"nats://127.0.0.1:0":         "error",
		"nats://127.0.0.1:99999":     "error",
		"http://127.0.0.1:4222":      "error",
		"nats://127.0.0.1:4222/path": "error",
		"nats://:4222":               "error",
		" , ":                        "error",
	} {
		got, err := NATSURL(in)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("NATSURL(%q) = %q (%v), want %q", in, got, err, want)
		}
	}
}

// TestBatchOverTheMessageLimitIsSplit: a batch whose request is over the
// message limit, or whose reply would be, is split into calls within it;
// a row too large alone, either way, is the call's row error at its place
// and the other rows come back in order.
func TestBatchOverTheMessageLimitIsSplit(t *testing.T) {
	t.Parallel()
	const limit = 4096
	batch := func(n, big int) []any {
		out := make([]any, n)
		for i := range out {
			pad := 100
			if i == big {
				pad = 2 * limit
			}
			out[i] = []byte(fmt.Sprintf(`{"k":"%03d","pad":%q}`, i, strings.Repeat("x", pad)))
		}
		return out
	}
	check := func(t *testing.T, out *driver.Outcome, n, big int) {
		t.Helper()
		var got []string
		for _, r := range out.Rows {
			var m map[string]any
			if err := json.Unmarshal(r.([]byte), &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprint(m["k"]))
		}
		var want []string
		for i := range n {
			if i != big {
				want = append(want, fmt.Sprintf("%03d", i))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("rows came back as %v, want %v", got, want)
		}
		if big < 0 {
			if len(out.RowErrors) != 0 {
				t.Fatalf("row errors %v, want none", out.RowErrors)
			}
			return
		}
		if len(out.RowErrors) != 1 || out.RowErrors[0].Index != big || !strings.Contains(out.RowErrors[0].Msg, "too large for a remote call") || !strings.Contains(out.RowErrors[0].Msg, "4096") {
			t.Fatalf("row errors %+v, want row %d's, too large for the limit of 4096", out.RowErrors, big)
		}
	}

	t.Run("request", func(t *testing.T) {
		t.Parallel()
		eng := &fakeEngine{}
		c := client(t, Options{MaxMessage: limit, Cluster: Failfast}, provider(t, eng))
		out, err := c.Invoke(context.Background(), call(batch(100, -1)))
		if err != nil {
			t.Fatal(err)
		}
		check(t, out, 100, -1)
		if n := eng.calls.Load(); n < 4 {
			t.Fatalf("%d calls of 100 rows of ~120 bytes, want them split within 4096 bytes", n)
		}
		out, err = c.Invoke(context.Background(), call(batch(100, 50)))
		if err != nil {
			t.Fatal(err)
		}
		check(t, out, 100, 50)
	})

	t.Run("provider's limit", func(t *testing.T) {
		t.Parallel()
		// The caller's limit is the default; the provider refuses a
		// message over its own.
		eng := &fakeEngine{}
		c := client(t, Options{}, provider(t, eng, limit))
		out, err := c.Invoke(context.Background(), call(batch(100, 50)))
		if err != nil {
			t.Fatal(err)
		}
		check(t, out, 100, 50)
	})

	t.Run("reply", func(t *testing.T) {
		t.Parallel()
		// The function makes each row 10 times larger; row 7's past the
		// limit alone.
		eng := &fakeEngine{fn: func(_ context.Context, rows []any) (*driver.Outcome, error) {
			out := make([]any, len(rows))
			for i, r := range rows {
				var m map[string]any
				_ = json.Unmarshal(r.([]byte), &m)
				pad := 1000
				if m["k"] == "007" {
					pad = 2 * limit
				}
				out[i] = []byte(fmt.Sprintf(`{"k":%q,"pad":%q}`, m["k"], strings.Repeat("y", pad)))
			}
			return &driver.Outcome{Rows: out}, nil
		}}
		addr := provider(t, eng, limit)
		for _, cluster := range []string{Failover, Failsafe} {
			c := client(t, Options{Cluster: cluster}, addr)
			out, err := c.Invoke(context.Background(), call(batch(20, -1)[:7]))
			if err != nil {
				t.Fatalf("%s: %v", cluster, err)
			}
			check(t, out, 7, -1)
			out, err = c.Invoke(context.Background(), call(batch(20, -1)))
			if err != nil {
				t.Fatalf("%s: %v", cluster, err)
			}
			check(t, out, 20, 7)
			if c.Dropped() != 0 {
				t.Fatalf("%s dropped %d rows, want none: a reply too large is split, not a failed call", cluster, c.Dropped())
			}
		}
	})
}
