package kisflow_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/plugin"
)

// noSleep is a clock whose sleeps return at once.
type noSleep struct{}

func (noSleep) Now() time.Time                                   { return time.Now() }
func (noSleep) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func TestRetryFilterReRunsAFunctionFromACleanLayer(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	calls := 0
	reg.MustRegister("flaky", func(ctx context.Context, f kisflow.Flow, rows []*score) error {
		calls++
		for _, r := range rows {
			_ = f.CommitRow(&score{ID: r.ID, Score: r.Score * 10})
		}
		if calls < 3 {
			return errors.New("transient")
		}
		return nil
	})
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: f\nflows: [{fname: flaky}]\n",
		"func.yml": "kistype: func\nfname: flaky\nfmode: Calculate\noption:\n  retry_times: 4\n  filters: [retry]\n",
	}, kisflow.WithClock(noSleep{}))
	fl := mustFlow(t, eng, "f")
	_ = fl.CommitRowBatch([]*score{{ID: 1, Score: 1}, {ID: 2, Score: 2}})
	res, err := fl.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 || len(res.Rows) != 2 {
		t.Fatalf("%d calls, %d rows; want 3 calls and the 2 rows of the last one", calls, len(res.Rows))
	}
}

func TestUserFiltersWrapFlowsAndFunctionsInOrder(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	var mu sync.Mutex
	var log []string
	tag := func(s filter.Spec) (filter.Filter, error) {
		label := s.Params["label"]
		return func(ctx context.Context, c *filter.Call, next filter.Handler) error {
			mu.Lock()
			log = append(log, label+">"+c.Kind.String()+":"+c.Func)
			mu.Unlock()
			return next(ctx, c)
		}, nil
	}
	if err := reg.RegisterFilter("tag", tag); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterFilter("tag", tag); !errors.Is(err, kisflow.ErrDuplicate) {
		t.Fatalf("duplicate filter: %v", err)
	}
	reg.MustRegister("a", passThrough[score])
	reg.MustRegister("b", passThrough[score])
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: f\nfilters: [{name: tag, params: {label: outer}}, {name: tag, params: {label: inner}}]\nflows: [{fname: a}, {fname: b}]\n",
		"a.yml":    "kistype: func\nfname: a\nfmode: Calculate\noption: {filters: [{name: tag, params: {label: fa}}]}\n",
		"b.yml":    "kistype: func\nfname: b\nfmode: Calculate\n",
	})
	fl := mustFlow(t, eng, "f")
	_ = fl.CommitRow(&score{ID: 1})
	if _, err := fl.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(log, " ")
	want := "outer>flow: inner>flow: fa>function:a"
	if got != want {
		t.Fatalf("filter calls %q, want %q", got, want)
	}
}

func TestUnknownFilterIsAConfigErrorWithItsLine(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("a", passThrough[score])
	set, err := config.ImportFS(mapFS(map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: f\nflows: [{fname: a}]\n",
		"a.yml":    "kistype: func\nfname: a\nfmode: Calculate\noption:\n  filters:\n    - retry\n    - nosuch\n",
	}), ".")
	if err != nil {
		t.Fatal(err)
	}
	_, err = kisflow.NewEngine(reg, set)
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "a.yml:7") || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Fatalf("got %v, want a config error at a.yml:7 naming nosuch", err)
	}
}

type auditParams struct {
	Label string        `param:"label" required:"true" doc:"the label of the audit line"`
	Every time.Duration `param:"every" default:"1s" doc:"how often to flush"`
}

// A filter registered with its spec has its entries' params checked as
// the built-ins' are: an unknown param is a config error at its line, with
// the closest declared name, and the factory gets them decoded.
func TestFilterParamsAreCheckedByTheFiltersSpec(t *testing.T) {
	t.Parallel()
	spec := driver.MustSpec[auditParams]("audit", "writes an audit line per call")
	var got auditParams
	reg := kisflow.NewRegistry()
	reg.MustRegister("a", passThrough[score])
	if err := reg.RegisterFilterSpec(spec, func(s filter.Spec) (filter.Filter, error) {
		if err := s.Decode(spec, &got); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c *filter.Call, next filter.Handler) error { return next(ctx, c) }, nil
	}); err != nil {
		t.Fatal(err)
	}
	if s, ok := reg.FilterSpec("audit"); !ok || s != spec {
		t.Fatal("FilterSpec does not return the registered spec")
	}
	for _, tc := range []struct{ name, filters, want string }{
		{"a user filter", "\n    - name: audit\n      params:\n        label: x\n        evry: 2s", `a.yml:9: function "a": filter "audit": param evry: unknown param (did you mean every?)`},
		{"a built-in", "\n    - name: retry\n      params:\n        tims: 2", `a.yml:8: function "a": filter "retry": param tims: unknown param (did you mean times?)`},
		{"a missing required param", "\n    - recover\n    - audit", `a.yml:7: function "a": filter "audit": param label: required`},
	} {
		set, err := config.ImportFS(mapFS(map[string]string{
			"flow.yml": "kistype: flow\nstatus: 1\nflow_name: f\nflows: [{fname: a}]\n",
			"a.yml":    "kistype: func\nfname: a\nfmode: Calculate\noption:\n  filters: " + tc.filters + "\n",
		}), ".")
		if err != nil {
			t.Fatal(err)
		}
		_, err = kisflow.NewEngine(reg, set)
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v\nwant a config error containing %s", tc.name, err, tc.want)
		}
	}
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: f\nflows: [{fname: a}]\n",
		"a.yml":    "kistype: func\nfname: a\nfmode: Calculate\noption:\n  default_params: {audit_every: 3s}\n  filters: [{name: audit, params: {label: x}}]\n",
	})
	fl := mustFlow(t, eng, "f")
	_ = fl.CommitRow(&score{ID: 1})
	if _, err := fl.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got.Label != "x" || got.Every != 3*time.Second {
		t.Fatalf("decoded %+v, want label x and every 3s from the function's audit_every", got)
	}
}

func TestMetricsAndHealthServedOverHTTP(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("double", func(ctx context.Context, f kisflow.Flow, rows []*score) error {
		for _, r := range rows {
			_ = f.CommitRow(r)
			_ = f.CommitRow(r)
		}
		return nil
	})
	reg.MustRegister("fail", func(ctx context.Context, f kisflow.Flow, rows []*score) error { return errors.New("no") })
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml":   "kistype: flow\nstatus: 1\nflow_name: f\nflows: [{fname: double}]\n",
		"bad.yml":    "kistype: flow\nstatus: 1\nflow_name: bad\nflows: [{fname: fail}]\n",
		"double.yml": "kistype: func\nfname: double\nfmode: Calculate\n",
		"fail.yml":   "kistype: func\nfname: fail\nfmode: Verify\n",
		"global.yml": "kistype: global\nprometheus_enable: true\nprometheus_listen: true\nprometheus_serve: 127.0.0.1:0\n",
	})
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p, ok := eng.Plugin(plugin.TypeMetrics, "prometheus")
	if !ok {
		t.Fatal("prometheus_listen made no metrics plugin")
	}
	base := "http://" + p.(*plugin.Admin).Addr().String()

	fl := mustFlow(t, eng, "f")
	for range 2 {
		_ = fl.CommitRowBatch([]*score{{ID: 1}, {ID: 2}, {ID: 3}})
		if _, err := fl.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	bad := mustFlow(t, eng, "bad")
	_ = bad.CommitRow(&score{ID: 9})
	if _, err := bad.Run(ctx); err == nil {
		t.Fatal("flow bad did not fail")
	}

	body := get(t, base+"/metrics", http.StatusOK)
	for _, want := range []string{
		"kisflow_data_total 7",
		`flow_data_total{flow_name="f"} 6`,
		`flow_schedule_cnts{flow_name="f"} 2`,
		`func_schedule_cnts{func_mode="Calculate",func_name="double"} 2`,
		`func_run_duration_count{func_mode="Calculate",func_name="double"} 2`,
		`flow_run_duration_count{flow_name="f"} 2`,
		`kisflow_func_rows_in_total{flow_name="f",func_name="double"} 6`,
		`kisflow_func_rows_out_total{flow_name="f",func_name="double"} 12`,
		`kisflow_func_errors_total{flow_name="bad",func_name="fail"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	get(t, base+"/healthz", http.StatusOK)
	get(t, base+"/readyz", http.StatusOK)
	eng.Health().Set("db", func(context.Context) error { return errors.New("down") })
	if body := get(t, base+"/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "db: down") {
		t.Errorf("readyz body %q does not name the failing check", body)
	}
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, status)
	}
	return string(b)
}

func TestTwoEnginesKeepTheirOwnMetrics(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("a", passThrough[score])
	docs := chain("f", "a")
	e1, e2 := testenv.Engine(t, reg, docs), testenv.Engine(t, reg, docs)
	fl := mustFlow(t, e1, "f")
	_ = fl.CommitRow(&score{ID: 1})
	if _, err := fl.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	count := func(e *kisflow.Engine) int {
		mfs, err := e.Metrics().Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "kisflow_data_total" {
				return int(mf.GetMetric()[0].GetCounter().GetValue())
			}
		}
		return -1
	}
	if c1, c2 := count(e1), count(e2); c1 != 1 || c2 != 0 {
		t.Fatalf("kisflow_data_total: engine 1 %d, engine 2 %d; want 1 and 0", c1, c2)
	}
}

func TestSpanTreeOfARun(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	reg := kisflow.NewRegistry()
	reg.MustRegister("a", passThrough[score])
	reg.MustRegister("b", func(ctx context.Context, f kisflow.Flow, rows []*score) error { return errors.New("b failed") })
	eng := testenv.Engine(t, reg, chain("f", "a", "b"), kisflow.WithTracerProvider(tp))
	fl := mustFlow(t, eng, "f")
	_ = fl.CommitRowBatch([]*score{{ID: 1}, {ID: 2}})
	if _, err := fl.Run(context.Background()); err == nil {
		t.Fatal("the run did not fail")
	}
	spans := exp.GetSpans()
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	root, a, b := byName["flow f"], byName["func a"], byName["func b"]
	if len(spans) != 3 || !root.SpanContext.IsValid() || !a.SpanContext.IsValid() || !b.SpanContext.IsValid() {
		t.Fatalf("spans %v, want flow f, func a, func b", names(spans))
	}
	for _, child := range []tracetest.SpanStub{a, b} {
		if child.Parent.SpanID() != root.SpanContext.SpanID() {
			t.Errorf("%s: parent %v, want the flow span", child.Name, child.Parent.SpanID())
		}
	}
	if root.Parent.IsValid() {
		t.Errorf("flow span has a parent %v", root.Parent)
	}
	if b.Status.Code.String() != "Error" || root.Status.Code.String() != "Error" || a.Status.Code.String() == "Error" {
		t.Errorf("statuses: flow %v, a %v, b %v; want the failure on b and the flow", root.Status.Code, a.Status.Code, b.Status.Code)
	}
	attr := map[string]string{}
	for _, kv := range a.Attributes {
		attr[string(kv.Key)] = kv.Value.Emit()
	}
	if attr["kisflow.rows_in"] != "2" || attr["kisflow.rows_out"] != "2" || attr["kisflow.func_mode"] != "Calculate" {
		t.Errorf("func a attributes %v", attr)
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
