package remote_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kisflow-go/kisflow"
	connremote "github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/remote"
)

type order struct {
	ID     int `json:"id"`
	Amount int `json:"amount"`
	Price  int `json:"price"`
}

// remotePrice is a function Price with the connector pricing, and
// ordersFlow a flow Orders of it alone.
const (
	remotePrice = "kistype: func\nfname: Price\nfmode: Calculate\noption:\n  cname: pricing\n"
	ordersFlow  = "kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Price\n"
)

// serveEngine serves the functions of a provider engine in-process, with
// no registry, and returns its address.
func serveEngine(t *testing.T, eng *kisflow.Engine, funcs ...string) string {
	return serveEngineB(t, eng, funcs...)
}

func serveEngineB(t testing.TB, eng *kisflow.Engine, funcs ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan remote.Provider, 1)
	done := make(chan error, 1)
	go func() {
		done <- remote.Serve(ctx, eng, remote.ServeOptions{Registry: "none", Funcs: funcs, Ready: func(p remote.Provider) { ready <- p }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case p := <-ready:
		return p.Addr
	case err := <-done:
		t.Fatal(err)
	}
	return ""
}

// A remote step behaves as the local one: committed rows come back,
// undecodable rows are the caller's rejected rows, the action is followed
// in the calling flow, and the provider's filters run on its side.
func TestRemoteStepKeepsLocalSemantics(t *testing.T) {
	t.Parallel()
	preg := kisflow.NewRegistry()
	preg.MustRegister("Price", kisflow.Func(func(_ context.Context, f kisflow.Flow, rows []*order) error {
		for _, o := range rows {
			o.Price = 2 * o.Amount
			if err := f.CommitRow(o); err != nil {
				return err
			}
		}
		if f.Param("skip") == "yes" {
			return f.Next(kisflow.JumpFunc("Last"))
		}
		return nil
	}))
	preg.MustRegister("Fail", kisflow.FuncRows(func(context.Context, kisflow.Flow, []any) error { return errors.New("no price today") }))
	peng := testenv.Engine(t, preg, map[string]string{"f.yml": "kistype: func\nfname: Price\nfmode: Calculate\n---\nkistype: func\nfname: Fail\nfmode: Calculate\n"})
	addr := serveEngine(t, peng, "Price", "Fail")

	creg := kisflow.NewRegistry()
	if err := connremote.Install(creg); err != nil {
		t.Fatal(err)
	}
	var after []int
	creg.MustRegister("Middle", kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rows []any) error {
		after = append(after, len(rows))
		return f.CommitRowBatch(rows)
	}))
	creg.MustRegister("Last", kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rows []any) error { return f.CommitRowBatch(rows) }))
	ceng := testenv.Engine(t, creg, map[string]string{"c.yml": fmt.Sprintf(`kistype: conn
cname: pricing
type: remote
addrs: %s
params:
  registry: static
---
kistype: func
fname: Price
fmode: Calculate
option:
  cname: pricing
---
kistype: func
fname: Fail
fmode: Calculate
option:
  cname: pricing
---
kistype: func
fname: Middle
fmode: Calculate
---
kistype: func
fname: Last
fmode: Calculate
---
kistype: flow
status: 1
flow_name: Orders
flows:
  - fname: Price
  - fname: Middle
  - fname: Last
---
kistype: flow
status: 1
flow_name: Skips
flows:
  - fname: Price
    params:
      skip: "yes"
  - fname: Middle
  - fname: Last
---
kistype: flow
status: 1
flow_name: Fails
flows:
  - fname: Fail
`, addr)})
	ctx := context.Background()
	fl, err := ceng.Flow(ctx, "Orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{`{"id":1,"amount":3}`, `{"id":2,"amount":"x"}`, `{"id":3,"amount":5}`} {
		_ = fl.CommitRow(r)
	}
	res, err := fl.Run(ctx)
	var re *kisflow.RejectedError
	if !errors.As(err, &re) || len(res.Rejected) != 1 || res.Rejected[0].Index != 1 || res.Rejected[0].Func != "Price" {
		t.Fatalf("run: %v, rejected %v: want row 1 rejected by Price", err, res.Rejected)
	}
	if len(res.Rows) != 2 {
		t.Fatalf("%d rows out, want 2", len(res.Rows))
	}
	for i, want := range []int{6, 10} {
		var o order
		if err := json.Unmarshal(res.Rows[i].([]byte), &o); err != nil || o.Price != want {
			t.Fatalf("row %d: %s (%v): want price %d", i, res.Rows[i], err, want)
		}
	}
	// The provider's JumpFunc is followed by the calling flow.
	sk, err := ceng.Flow(ctx, "Skips")
	if err != nil {
		t.Fatal(err)
	}
	_ = sk.CommitRow(`{"id":1,"amount":1}`)
	before := len(after)
	if res, err := sk.Run(ctx); err != nil || len(res.Rows) != 1 || len(after) != before {
		t.Fatalf("jump: %v, %v; Middle ran %d times: want Last straight after Price", res.Rows, err, len(after)-before)
	}
	// The function's own error is the step's error.
	fa, err := ceng.Flow(ctx, "Fails")
	if err != nil {
		t.Fatal(err)
	}
	_ = fa.CommitRow(`{"id":1}`)
	_, err = fa.Run(ctx)
	var fe *kisflow.FuncError
	if !errors.As(err, &fe) || fe.Func != "Fail" || !strings.Contains(err.Error(), "no price today") {
		t.Fatalf("run: %v: want Fail's error", err)
	}
	// Metrics per provider: 2 ok calls of Price, 1 error of Fail, on addr.
	mfs, err := ceng.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "kisflow_remote_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["provider"] != addr || l["connector"] != "pricing" {
				t.Fatalf("labels %v", l)
			}
			got[l["func"]+" "+l["outcome"]] = m.GetCounter().GetValue()
		}
	}
	if got["Price ok"] != 2 || got["Fail error"] != 1 {
		t.Fatalf("kisflow_remote_calls_total %v: want Price ok 2, Fail error 1", got)
	}
}

// A YAML function called remotely gives the rows it gives locally: the
// provider writes a calc's rows as the input's JSON text with the new
// fields appended, and falls back to encoding the row's fields when it
// cannot (a field the row had, a value that is not flat, a keep list).
func TestRemoteYAMLFunctionsGiveTheLocalRows(t *testing.T) {
	t.Parallel()
	funcs := `kistype: func
fname: Price
fmode: Calculate
calc:
  price: amount * 2
  label: '"p" + user'
---
kistype: func
fname: Tags
fmode: Calculate
calc:
  tags: '[user, "x"]'
---
kistype: func
fname: Slim
fmode: Calculate
calc:
  price: amount * 2
keep: [id, price]
---
kistype: func
fname: Big
fmode: Verify
filter: amount > 3
`
	names := []string{"Price", "Tags", "Slim", "Big"}
	var flows strings.Builder
	for _, n := range names {
		fmt.Fprintf(&flows, "---\nkistype: flow\nstatus: 1\nflow_name: %s\nflows:\n  - fname: %s\n", n, n)
	}
	local := testenv.Engine(t, kisflow.NewRegistry(), map[string]string{"f.yml": funcs + flows.String()})
	addr := serveEngine(t, testenv.Engine(t, kisflow.NewRegistry(), map[string]string{"f.yml": funcs}), names...)
	creg := kisflow.NewRegistry()
	if err := connremote.Install(creg); err != nil {
		t.Fatal(err)
	}
	var calls strings.Builder
	fmt.Fprintf(&calls, "kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n", addr)
	for _, n := range names {
		fmt.Fprintf(&calls, "---\nkistype: func\nfname: %s\nfmode: Calculate\noption:\n  cname: p\n", n)
	}
	remote := testenv.Engine(t, creg, map[string]string{"f.yml": calls.String() + flows.String()})
	rows := []any{
		[]byte(`{"id":1,"user":"ann","amount":3}`),
		[]byte(" {\"id\":2, \"user\":\"b\\u00e9a\", \"amount\":4.5 }\n"),
		`{"id":3,"user":"cy","amount":5,"price":0}`,
		map[string]any{"id": 4, "user": "dee", "amount": 6},
		[]byte(`{"id":5,"user":"<e&>","amount":7,"extra":{"n":[1,2]}}`),
	}
	ctx := context.Background()
	for _, n := range names {
		var got [2][]map[string]any
		for i, eng := range []*kisflow.Engine{local, remote} {
			fl, err := eng.Flow(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			_ = fl.CommitRowBatch(rows)
			res, err := fl.Run(ctx)
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			for _, r := range res.Rows {
				var b []byte
				switch v := r.(type) {
				case []byte:
					b = v
				case string:
					b = []byte(v)
				default:
					if b, err = json.Marshal(v); err != nil {
						t.Fatal(err)
					}
				}
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("%s: row %s: %v", n, b, err)
				}
				got[i] = append(got[i], m)
			}
		}
		l, _ := json.Marshal(got[0])
		r, _ := json.Marshal(got[1])
		if string(l) != string(r) || len(got[0]) == 0 {
			t.Errorf("%s: remote rows\n%s\nlocal rows\n%s", n, r, l)
		}
	}
}

// The breaker filter on a remote step breaks per provider: a provider
// whose function keeps failing is left out after `failures` failures
// while the other provider gets every call; the step fails fast with
// filter.ErrBreakerOpen only once every provider's breaker is open.
func TestBreakerFilterOnARemoteStepBreaksPerProvider(t *testing.T) {
	t.Parallel()
	var badCalls, goodCalls atomic.Int64
	provider := func(fail bool, calls *atomic.Int64) string {
		reg := kisflow.NewRegistry()
		reg.MustRegister("Price", kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rows []any) error {
			calls.Add(1)
			if fail {
				return errors.New("pricing database down")
			}
			return f.CommitRowBatch(rows)
		}))
		return serveEngine(t, testenv.Engine(t, reg, map[string]string{"f.yml": "kistype: func\nfname: Price\nfmode: Calculate\n"}), "Price")
	}
	bad, good := provider(true, &badCalls), provider(false, &goodCalls)
	bad2 := provider(true, new(atomic.Int64))
	creg := kisflow.NewRegistry()
	if err := connremote.Install(creg); err != nil {
		t.Fatal(err)
	}
	conf := breakerFilterConf
	ctx := context.Background()
	run := func(eng *kisflow.Engine) error {
		fl, err := eng.Flow(ctx, "Orders")
		if err != nil {
			t.Fatal(err)
		}
		_ = fl.CommitRow(`{"id":1}`)
		_, err = fl.Run(ctx)
		return err
	}
	eng := testenv.Engine(t, creg, map[string]string{"c.yml": conf(bad + "," + good)})
	failed := 0
	for range 20 {
		if err := run(eng); err != nil {
			if errors.Is(err, filter.ErrBreakerOpen) {
				t.Fatalf("the step failed fast though a provider's breaker is closed: %v", err)
			}
			failed++
		}
	}
	// Round robin: bad, good, bad (its breaker opens), then good only. A
	// breaker per connector would never open (good's successes reset it)
	// and bad would get every other call.
	if badCalls.Load() != 2 || failed != 2 || goodCalls.Load() != 18 {
		t.Fatalf("bad provider called %d times, good %d, %d runs failed: want 2, 18, 2", badCalls.Load(), goodCalls.Load(), failed)
	}

	// Every provider's breaker open: the step fails fast.
	both := testenv.Engine(t, creg, map[string]string{"c.yml": conf(bad + "," + bad2)})
	for range 4 {
		if err := run(both); err == nil || errors.Is(err, filter.ErrBreakerOpen) {
			t.Fatalf("a call while a breaker was closed: %v, want the function's error", err)
		}
	}
	if err := run(both); !errors.Is(err, filter.ErrBreakerOpen) {
		t.Fatalf("every provider's breaker open: %v, want filter.ErrBreakerOpen", err)
	}
}

// TestBreakerFilterCountsACallWhoseEveryRowIsRejected: a provider whose
// function rejects every row it gets (a YAML calc failing on each row)
// answers without an error, but the breaker filter counts such a call as
// a failure of that provider: after `failures` of them it is left out and
// the other provider takes the calls. A call with some rows accepted does
// not count.
func TestBreakerFilterCountsACallWhoseEveryRowIsRejected(t *testing.T) {
	t.Parallel()
	fn := "kistype: func\nfname: Price\nfmode: Calculate\n"
	provider := func(calc string) string {
		return serveEngine(t, testenv.Engine(t, kisflow.NewRegistry(), map[string]string{"f.yml": fn + "calc:\n  price: " + calc + "\n"}), "Price")
	}
	bad, good := provider("cost * 2"), provider("amount * 2") // the rows have no cost
	creg := kisflow.NewRegistry()
	if err := connremote.Install(creg); err != nil {
		t.Fatal(err)
	}
	eng := testenv.Engine(t, creg, map[string]string{"c.yml": breakerFilterConf(bad + "," + good)})
	ctx := context.Background()
	rejected := 0
	for i := range 20 {
		fl, err := eng.Flow(ctx, "Orders")
		if err != nil {
			t.Fatal(err)
		}
		_ = fl.CommitRow(fmt.Sprintf(`{"id":%d,"amount":2}`, i))
		_ = fl.CommitRow(fmt.Sprintf(`{"id":%d,"amount":3}`, i))
		res, err := fl.Run(ctx)
		var re *kisflow.RejectedError
		switch {
		case errors.As(err, &re) && len(res.Rejected) == 2:
			rejected++
		case err != nil:
			t.Fatalf("run %d: %v", i, err)
		case len(res.Rows) != 2:
			t.Fatalf("run %d: %d rows out, want 2", i, len(res.Rows))
		}
	}
	// Round robin: bad, good, bad (its breaker opens), then good only.
	if rejected != 2 {
		t.Fatalf("%d runs had their rows rejected by the bad provider, want 2 (its breaker open after two)", rejected)
	}
}

// One trace shows the flow and the remote function: the provider's spans
// carry the caller's trace ID, and the provider's function span descends
// from the caller's span of the remote step (gRPC metadata, traceparent).
func TestOneTraceShowsTheFlowAndTheRemoteFunction(t *testing.T) {
	t.Parallel()
	pexp, cexp := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	ptp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(pexp))
	ctp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(cexp))
	fn := "kistype: func\nfname: Price\nfmode: Calculate\n"
	addr := serveEngine(t, testenv.Engine(t, kisflow.NewRegistry(), map[string]string{"f.yml": fn + "calc:\n  price: amount * 2\n"},
		kisflow.WithTracerProvider(ptp)), "Price")
	creg := kisflow.NewRegistry()
	if err := connremote.Install(creg); err != nil {
		t.Fatal(err)
	}
	ceng := testenv.Engine(t, creg, map[string]string{"c.yml": fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr) +
		fn + "option:\n  cname: p\n---\nkistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Price\n"}, kisflow.WithTracerProvider(ctp))
	ctx := context.Background()
	fl, err := ceng.Flow(ctx, "Orders")
	if err != nil {
		t.Fatal(err)
	}
	_ = fl.CommitRow(`{"id":1,"amount":2}`)
	if _, err := fl.Run(ctx); err != nil {
		t.Fatal(err)
	}
	byName := func(exp *tracetest.InMemoryExporter) map[string]tracetest.SpanStub {
		m := map[string]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			m[s.Name] = s
		}
		return m
	}
	caller, prov := byName(cexp), byName(pexp)
	run, step := caller["flow Orders"], caller["func Price"]
	remoteFn := prov["func Price"]
	if !run.SpanContext.IsValid() || !step.SpanContext.IsValid() || !remoteFn.SpanContext.IsValid() {
		t.Fatalf("caller spans %v, provider spans %v: want flow Orders and func Price in the caller, func Price in the provider", caller, prov)
	}
	for name, s := range prov {
		if s.SpanContext.TraceID() != run.SpanContext.TraceID() {
			t.Errorf("provider span %q is in trace %s, the flow in %s", name, s.SpanContext.TraceID(), run.SpanContext.TraceID())
		}
	}
	// Up from the provider's function span: its first span outside the
	// provider is the caller's remote step.
	s := remoteFn
	for s.Parent.IsValid() && !s.Parent.IsRemote() {
		var found bool
		for _, p := range prov {
			if p.SpanContext.SpanID() == s.Parent.SpanID() {
				s, found = p, true
				break
			}
		}
		if !found {
			t.Fatalf("provider span %q has a parent %s that is no span of the provider", s.Name, s.Parent.SpanID())
		}
	}
	if s.Parent.SpanID() != step.SpanContext.SpanID() {
		t.Fatalf("the provider's spans hang under %s, want the caller's func Price span %s", s.Parent.SpanID(), step.SpanContext.SpanID())
	}
}

// breakerFilterConf is the configuration of the breaker filter tests: the
// static providers addrs called failfast in turn, the client's own breaker
// off, the step's breaker filter opening after 2 failures.
func breakerFilterConf(addrs string) string {
	return fmt.Sprintf(`kistype: conn
cname: pricing
type: remote
addrs: %s
params:
  registry: static
  cluster: failfast
  loadbalance: round_robin
  breaker_failures: 0
---
`, addrs) + remotePrice + "  filters:\n    - {name: breaker, params: {failures: 2, cooldown: 1h}}\n---\n" + ordersFlow
}
