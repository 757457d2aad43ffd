package kisflow_test

// Compatibility found missing by a migrating user (issue 12's review):
// each test fails without its fix.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/all"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/plugin"
)

// origRowsRegistry registers every function of load_conf in the
// original's test style (rows of any shape, each committed on), and the
// CaaS callback of funcName2; seen counts the rows funcName1 got.
func origRowsRegistry(t *testing.T, reg *kisflow.Registry) *sync.Map {
	t.Helper()
	seen := &sync.Map{}
	pass := func(name string) {
		reg.MustRegister(name, kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
			if name == "funcName1" {
				n, _ := seen.LoadOrStore(f.Name(), new(int))
				*n.(*int) += len(rows)
			}
			if name == "funcName2" {
				c, err := f.Connector()
				if err != nil {
					return err
				}
				if _, err := c.Call(ctx, f, rows); err != nil {
					return err
				}
			}
			return f.CommitRowBatch(rows)
		}))
	}
	for _, name := range []string{"funcName1", "funcName2", "funcName3", "abortFunc", "dataReuseFunc", "noResultFunc", "jumpFunc", "AvgStuScore", "PrintStuAvgScore"} {
		pass(name)
	}
	if err := reg.RegisterConnFunc("ConnName1", "funcName2", func(ctx context.Context, c *kisflow.Connector, fn *kisflow.Function, f kisflow.Flow, args any) (any, error) {
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return seen
}

// The original's test rows are plain strings, and its users' structs often
// have no JSON tags: its load_conf functions declare `must: [order_id,
// user_id]`, which the original never checks. Flow.Run does not either:
// every row reaches funcName1 and none is rejected.
func TestFlowRunTakesRowsLackingSourceMust(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	seen := origRowsRegistry(t, reg)
	eng, err := kisflow.NewEngine(reg, originalSet(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	type noTags struct{ OrderID, UserID int }
	type zeroOmitted struct {
		OrderID int `json:"order_id,omitempty"`
		UserID  int `json:"user_id,omitempty"`
	}
	ctx := context.Background()
	for _, name := range []string{"flowName1", "flowName2", "flowName3", "flowName4", "flowName5", "flowFork1"} {
		fl, err := eng.Flow(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			_ = fl.CommitRow(fmt.Sprintf("This is Data%d from Test", i))
		}
		_ = fl.CommitRow(noTags{OrderID: 4, UserID: 4})
		_ = fl.CommitRow(&zeroOmitted{})
		res, err := fl.Run(ctx)
		if err != nil || len(res.Rejected) > 0 {
			t.Fatalf("%s: %v, rejected %v", name, err, res.Rejected)
		}
		if n, _ := seen.Load(name); n == nil || *n.(*int) != 5 {
			t.Errorf("%s: funcName1 got %v rows, want 5", name, n)
		}
	}
}

// fileJob runs flow F of a folder with a file source in.jsonl and a file
// sink out.jsonl, and returns the sink's lines and the dead letters.
func fileJob(t *testing.T, reg *kisflow.Registry, rows string, files map[string]string) (out []string, dead []map[string]any) {
	t.Helper()
	dir := t.TempDir()
	files["in.jsonl"] = rows
	files["flow.yml"] = "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: A\nstream:\n  source: in\n  sink: out\n  retry_times: 0\n"
	files["conns.yml"] = "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n"
	writeFiles(t, dir, files)
	eng := dirEngine(t, reg, dir)
	defer eng.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := eng.Job(ctx, "F", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		t.Fatal(err)
	}
	if err := job.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "out.jsonl")); err == nil {
		out = strings.Fields(string(data))
	}
	if data, err := os.ReadFile(filepath.Join(dir, "state", "dead-letter", "F.jsonl")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var dl map[string]any
			if err := json.Unmarshal([]byte(line), &dl); err != nil {
				t.Fatalf("dead letter %q: %v", line, err)
			}
			dead = append(dead, dl)
		}
	}
	return out, dead
}

// A stream job still checks source.must: the row lacking order_id is
// dead-lettered, naming it, and the others are written.
func TestJobDeadLettersRowsLackingSourceMust(t *testing.T) {
	t.Parallel()
	reg := streamRegistry(t)
	reg.MustRegister("A", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		return f.CommitRowBatch(rows)
	}))
	out, dead := fileJob(t, reg, "{\"order_id\":1}\n{\"user_id\":2}\n{\"order_id\":3}\n", map[string]string{
		"funcs.yml": "kistype: func\nfname: A\nfmode: Calculate\nsource:\n  must: [order_id]\n",
	})
	if len(out) != 2 || len(dead) != 1 || !strings.Contains(fmt.Sprint(dead[0]["error"]), `missing required field "order_id" (source.must)`) {
		t.Fatalf("out %v, dead letters %v", out, dead)
	}
}

// A row the function's type cannot take is rejected; the function's
// DataReuse hands on its input, but never the rejected row: it is in the
// dead letters only, not in the sink.
func TestDataReuseDoesNotHandOnARejectedRow(t *testing.T) {
	t.Parallel()
	reg := streamRegistry(t)
	reg.MustRegister("A", func(ctx context.Context, f kisflow.Flow, rows []*order) error {
		return f.Next(kisflow.DataReuse)
	})
	out, dead := fileJob(t, reg, "{\"order_id\":1}\n{\"order_id\":\"x\"}\n{\"order_id\":3}\n", map[string]string{
		"funcs.yml": "kistype: func\nfname: A\nfmode: Calculate\n",
	})
	if len(dead) != 1 || !strings.Contains(fmt.Sprint(dead[0]["payload"]), "x") {
		t.Fatalf("dead letters %v, want the row of order x", dead)
	}
	if len(out) != 2 || strings.Contains(strings.Join(out, " "), `"x"`) {
		t.Fatalf("sink got %v: the rejected row was handed on", out)
	}
}

// With every bundled driver installed, load_conf's ConnName1 (type redis,
// used only by the CaaS callback of funcName2) is a label until something
// needs its client: the flows build and run with nothing listening on
// 0.0.0.0:9999, and asking for the client fails then, naming the connector.
func TestFunctionOnlyConnectorStartsLazily(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	seen := origRowsRegistry(t, reg)
	set := originalSet(t)
	// A param the CaaS callbacks read (`db: test`) is not one the redis
	// driver can decode: a warning, and the error of the first use.
	r := config.NewConn("R", "redis")
	r.Addrs, r.Params = "127.0.0.1:1", map[string]string{"db": "test"}
	uses := config.NewFunc("UsesR", config.Calculate).WithConn("R")
	for _, err := range []error{set.AddConn(r), set.AddFunc(uses), set.AddFlow(config.NewFlow("FR", config.Step("UsesR", nil)))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var clientErr error
	reg.MustRegister("UsesR", func(ctx context.Context, f kisflow.Flow) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		_, clientErr = c.Client(ctx)
		return nil
	})
	for _, p := range set.Check(reg.LintOptions()...) {
		if p.Severity == config.SevError {
			t.Errorf("lint error: %v", p)
		}
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"flowName1", "flowName5"} {
		fl, err := eng.Flow(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = fl.CommitRow("This is Data1 from Test")
		if _, err := fl.Run(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n, _ := seen.Load("flowName1"); n == nil || *n.(*int) != 1 {
		t.Fatalf("flowName1 did not run: %v", n)
	}
	c, err := eng.Connector(ctx, "ConnName1")
	if err == nil || !strings.Contains(err.Error(), "ConnName1") {
		t.Fatalf("the strict Connector of an unreachable redis: %v, %v", c, err)
	}
	fl, err := eng.Flow(ctx, "FR")
	if err != nil {
		t.Fatal(err)
	}
	_ = fl.CommitRow("{}")
	if _, err := fl.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if clientErr == nil || !strings.Contains(clientErr.Error(), "db") {
		t.Fatalf("Client: %v, want the error naming param db", clientErr)
	}
}

// A CaaS callback registered under a name the configuration does not have
// is an error of NewEngine, with the near name.
func TestConnCallbackForAnUnknownName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ cname, fname, want string }{
		{"ConnName1", "FuncName2", `function "FuncName2", which the configuration does not have (did you mean funcName2?)`},
		{"ConnNme1", "funcName2", `connector "ConnNme1", which the configuration does not have (did you mean ConnName1?)`},
		{"ConnName1", "funcName1", `function "funcName1", whose option.cname is ""`},
	} {
		reg := kisflow.NewRegistry()
		if err := reg.RegisterConnFunc(tc.cname, tc.fname, func(context.Context, *kisflow.Connector, *kisflow.Function, kisflow.Flow, any) (any, error) {
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		_, err := kisflow.NewEngine(reg, originalSet(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s: %v, want %q", tc.cname, tc.fname, err, tc.want)
		}
	}
	reg := kisflow.NewRegistry()
	if err := reg.RegisterConnInit("NoSuchConn", func(context.Context, *kisflow.Connector) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := kisflow.NewEngine(reg, originalSet(t)); err == nil || !strings.Contains(err.Error(), `connector "NoSuchConn"`) {
		t.Errorf("init for an unknown connector: %v", err)
	}
}

// The memory driver's default Call writes the rows of a Save function
// only; a Load function gets an error, as from a file connector.
func TestMemoryDefaultCallWritesForSaveOnly(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	if err := memory.Install(reg); err != nil {
		t.Fatal(err)
	}
	call := func(ctx context.Context, f kisflow.Flow, rows []any) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		_, err = c.Call(ctx, f, rows)
		return err
	}
	reg.MustRegister("Save1", kisflow.FuncRows(call))
	reg.MustRegister("Load1", kisflow.FuncRows(call))
	set := config.NewSet()
	m := config.NewConn("M", memory.Type)
	m.Key = "t"
	for _, err := range []error{set.AddConn(m),
		set.AddFunc(config.NewFunc("Save1", config.Save).WithConn("M")), set.AddFunc(config.NewFunc("Load1", config.Load).WithConn("M")),
		set.AddFlow(config.NewFlow("S", config.Step("Save1", nil))), set.AddFlow(config.NewFlow("L", config.Step("Load1", nil)))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	ctx := context.Background()
	for _, name := range []string{"S", "L"} {
		fl, err := eng.Flow(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		_ = fl.CommitRow(name)
		_, err = fl.Run(ctx)
		if (name == "L") != (err != nil) || (err != nil && !strings.Contains(err.Error(), "fmode Load")) {
			t.Errorf("%s: %v", name, err)
		}
	}
	c, err := eng.Connector(ctx, "M")
	if err != nil {
		t.Fatal(err)
	}
	if rows := c.Driver().(*memory.Store).Rows("t"); fmt.Sprint(rows) != "[S]" {
		t.Errorf("table: %v, want only the Save's row", rows)
	}
}

// Folders as the original's exporter writes them (testdata/kisflow-export):
// a Save function with `cname: ""`, a connector listing a function the
// folder lacks. They lint with warnings only and run with Go bodies; the
// Go body asking for the missing connector gets ErrNoConnector.
func TestExportedFoldersOfTheOriginalLoad(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	var connErr error
	reg.MustRegister("Check", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error { return f.CommitRowBatch(rows) }))
	reg.MustRegister("Keep", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		_, connErr = f.Connector()
		return f.CommitRowBatch(rows)
	}))
	reg.MustRegister("S1", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		_, err = c.Call(ctx, f, rows)
		return err
	}))
	for flow, dir := range map[string]string{"SaveFlow": "savenocn", "Flow1": "shared"} {
		set, err := config.Import(filepath.Join("testdata", "kisflow-export", dir))
		if err != nil {
			t.Fatal(err)
		}
		warned := false
		for _, p := range set.Check(reg.LintOptions()...) {
			if p.Severity == config.SevError {
				t.Errorf("%s: lint error: %v", dir, p)
			}
			warned = true
		}
		if !warned {
			t.Errorf("%s: no warning", dir)
		}
		eng, err := kisflow.NewEngine(reg, set)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		ctx := context.Background()
		fl, err := eng.Flow(ctx, flow)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		_ = fl.CommitRow(`{"order_id":1}`)
		if _, err := fl.Run(ctx); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		_ = eng.Close(ctx)
	}
	if !errors.Is(connErr, kisflow.ErrNoConnector) {
		t.Errorf("Connector of a Save without cname: %v", connErr)
	}
	// Without a Go body, that Save has no body at all: an error when a
	// flow using it is built.
	set, err := config.Import(filepath.Join("testdata", "kisflow-export", "savenocn"))
	if err != nil {
		t.Fatal(err)
	}
	bare := kisflow.NewRegistry()
	bare.MustRegister("Check", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error { return nil }))
	eng, err := kisflow.NewEngine(bare, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	if _, err := eng.Flow(context.Background(), "SaveFlow"); err == nil || !strings.Contains(err.Error(), "give it a connector (option.cname)") {
		t.Fatalf("a YAML-only Save without a connector: %v", err)
	}
}

// The metrics listener a global file asks for (prometheus_listen: true)
// that cannot bind, because another process or another engine of this
// process holds the address, is logged at error level and the flows run.
func TestGlobalMetricsListenerThatCannotBind(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx := context.Background()
	run := func(addr string) (*kisflow.Engine, string) {
		t.Helper()
		reg := kisflow.NewRegistry()
		origRowsRegistry(t, reg)
		set := originalSet(t)
		set.Global.PrometheusServe = addr
		var logs bytes.Buffer
		var mu sync.Mutex
		eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.Close(ctx) })
		fl, err := eng.Flow(ctx, "flowName1")
		if err != nil {
			t.Fatalf("flow with the metrics listener on %s: %v", addr, err)
		}
		_ = fl.CommitRow("row")
		if _, err := fl.Run(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return eng, logs.String()
	}
	if _, logs := run(busy.Addr().String()); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, busy.Addr().String()) {
		t.Errorf("busy port: logs\n%s", logs)
	}
	first, _ := run("127.0.0.1:0")
	p, ok := first.Plugin(plugin.TypeMetrics, "prometheus")
	if !ok || p.(*plugin.Admin).Addr() == nil {
		t.Fatal("the first engine serves no metrics")
	}
	addr := p.(*plugin.Admin).Addr().String()
	if _, logs := run(addr); !strings.Contains(logs, "cannot listen") || !strings.Contains(logs, addr) {
		t.Errorf("second engine on %s: logs\n%s", addr, logs)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// kisRowArr and pipeRow mirror a row type with the original's per-type
// serializer (kis.Serialize).
type kisRowArr []any

type pipeRow struct{ ID int }

func (pipeRow) UnMarshal(kisRowArr, reflect.Type) (reflect.Value, error) { return reflect.Value{}, nil }
func (pipeRow) Marshal(any) (kisRowArr, error)                           { return nil, nil }

// A per-type serializer would be ignored: Register refuses it and says
// what to use.
func TestRegisterRefusesPerTypeSerializer(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	err := reg.Register("P", func(ctx context.Context, f kisflow.Flow, rows []*pipeRow) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "kisflow.WithCodec") {
		t.Fatalf("Register: %v", err)
	}
	if err := reg.Register("Q", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*pipeRow) error { return nil })); err == nil {
		t.Fatal("Register of kisflow.Func: no error")
	}
}

// Setting a cache or metadata entry to nil deletes it, as the original's
// GetCacheData then returned plain nil.
func TestSetCacheNilDeletes(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	origRowsRegistry(t, reg)
	eng, err := kisflow.NewEngine(reg, originalSet(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	fl := mustFlow(t, eng, "flowName2")
	fl.SetCache("k", 1, time.Hour)
	fl.SetCache("k", nil, time.Hour)
	fl.SetMeta("m", 1)
	fl.SetMeta("m", nil)
	if v, ok := fl.Cache("k"); ok || v != nil {
		t.Errorf("Cache after SetCache(nil): %v, %v", v, ok)
	}
	if v := fl.Meta("m"); v != nil {
		t.Errorf("Meta after SetMeta(nil): %v", v)
	}
}

// A function registered under a differently cased name than its config's
// fname: the error of the flow names the registered one.
func TestNoBodyErrorSuggestsTheRegisteredName(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("avgStuScore", func(ctx context.Context, f kisflow.Flow) error { return nil })
	reg.MustRegister("PrintStuAvgScore", func(ctx context.Context, f kisflow.Flow) error { return nil })
	eng, err := kisflow.NewEngine(reg, originalSet(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	_, err = eng.Flow(context.Background(), "StuAvg")
	if err == nil || !strings.Contains(err.Error(), "(did you mean avgStuScore?)") || !errors.Is(err, kisflow.ErrUnknownFunction) {
		t.Fatalf("eng.Flow: %v", err)
	}
}

// UnMarshal and Marshal make defaultSerialize (compat_test.go) the shape
// of the original's serialize.DefaultSerialize: the kis.Serialize methods
// on a pointer receiver.
func (*defaultSerialize) UnMarshal(kisRowArr, reflect.Type) (reflect.Value, error) {
	return reflect.Value{}, nil
}
func (*defaultSerialize) Marshal(any) (kisRowArr, error) { return nil, nil }

// embedRow embeds it, as every In and Out type of the original's examples
// does.
type embedRow struct {
	defaultSerialize
	StuID int `json:"stu_id"`
}

// A row type embedding DefaultSerialize never was a per-type serializer in
// the original (its isSerialize looks at the type's own method set, and
// the methods have pointer receivers): Register takes it, for []*T and
// []T, and rows reach it through the codec.
func TestRegisterAcceptsEmbeddedDefaultSerialize(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	var got []int
	if err := reg.Register("P", func(ctx context.Context, f kisflow.Flow, rows []*embedRow) error {
		for _, r := range rows {
			got = append(got, r.StuID)
		}
		return nil
	}); err != nil {
		t.Fatalf("Register []*embedRow: %v", err)
	}
	if err := reg.Register("Q", func(ctx context.Context, f kisflow.Flow, rows []embedRow) error { return nil }); err != nil {
		t.Fatalf("Register []embedRow: %v", err)
	}
	if err := reg.Register("R", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*embedRow) error { return nil })); err != nil {
		t.Fatalf("Register kisflow.Func: %v", err)
	}
	set := config.NewSet()
	set.AddFunc(config.NewFunc("P", config.Calculate))
	set.AddFlow(config.NewFlow("F", config.Step("P", nil)))
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	fl := mustFlow(t, eng, "F")
	if err := fl.CommitRow(`{"stu_id":7}`); err != nil {
		t.Fatal(err)
	}
	if _, err := fl.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != 1 || got[0] != 7 {
		t.Fatalf("rows seen: %v, want [7]", got)
	}
}

// A Save whose Go body was registered under a misspelt name must not
// become, silently, a YAML-only Save that writes to the store: building the
// flow fails, naming the registered name and the opt-in, and nothing is
// written. With body: yaml, or with no near name, the YAML Save runs; a near
// name that is itself a configured function is no misspelling.
func TestMisspeltGoSaveIsNotAYAMLSave(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type built struct {
		eng  *kisflow.Engine
		reg  *kisflow.Registry
		set  *config.Set
		path string
	}
	build := func(t *testing.T, goName string, params map[string]string, extra ...*config.Func) built {
		t.Helper()
		reg := kisflow.NewRegistry()
		if err := file.Install(reg); err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(goName, kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error { return nil }))
		set := config.NewSet()
		path := filepath.Join(t.TempDir(), "out.jsonl")
		m := config.NewConn("M", file.TypeFile)
		m.Params = map[string]string{"path": path}
		errs := []error{set.AddConn(m),
			set.AddFunc(config.NewFunc("SaveScoreAvg12", config.Save).WithConn("M").WithParams(params)),
			set.AddFlow(config.NewFlow("F", config.Step("SaveScoreAvg12", nil)))}
		for _, fc := range extra {
			errs = append(errs, set.AddFunc(fc))
		}
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		eng, err := kisflow.NewEngine(reg, set)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close(ctx) })
		return built{eng, reg, set, path}
	}
	written := func(t *testing.T, b built) string {
		t.Helper()
		if err := b.eng.Close(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := os.ReadFile(b.path)
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	run := func(t *testing.T, eng *kisflow.Engine) {
		t.Helper()
		fl := mustFlow(t, eng, "F")
		_ = fl.CommitRow(map[string]any{"stu_id": 1})
		if _, err := fl.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("misspelt", func(t *testing.T) {
		b := build(t, "SaveScoreAvg_12", nil)
		_, err := b.eng.Flow(ctx, "F")
		if err == nil || !errors.Is(err, kisflow.ErrUnknownFunction) ||
			!strings.Contains(err.Error(), `did you mean "SaveScoreAvg_12"?`) || !strings.Contains(err.Error(), "body: yaml") {
			t.Fatalf("eng.Flow: %v", err)
		}
		probs := b.set.Check(b.reg.LintOptions()...)
		if len(probs) != 1 || probs[0].Severity != config.SevError || !strings.Contains(probs[0].Msg, `registered as "SaveScoreAvg_12"`) {
			t.Errorf("lint: %v", probs)
		}
		if got := written(t, b); got != "" {
			t.Errorf("written: %s", got)
		}
	})
	t.Run("case", func(t *testing.T) {
		b := build(t, "saveScoreAvg12", nil)
		if _, err := b.eng.Flow(ctx, "F"); err == nil || !strings.Contains(err.Error(), `"saveScoreAvg12"`) {
			t.Fatalf("eng.Flow: %v", err)
		}
	})
	t.Run("body yaml", func(t *testing.T) {
		b := build(t, "SaveScoreAvg_12", map[string]string{"body": "yaml"})
		for _, p := range b.set.Check(b.reg.LintOptions()...) {
			t.Errorf("lint: %v", p)
		}
		run(t, b.eng)
		if got := written(t, b); got != `{"stu_id":1}` {
			t.Errorf("written: %s", got)
		}
	})
	t.Run("bad body", func(t *testing.T) {
		b := build(t, "Other", map[string]string{"body": "yml"})
		if _, err := b.eng.Flow(ctx, "F"); err == nil || !strings.Contains(err.Error(), `"yml" is not yaml`) {
			t.Fatalf("eng.Flow: %v", err)
		}
	})
	t.Run("no near name", func(t *testing.T) {
		b := build(t, "PrintStuAvgScore", nil)
		run(t, b.eng)
		if got := written(t, b); got != `{"stu_id":1}` {
			t.Errorf("written: %s", got)
		}
	})
	t.Run("near name configured", func(t *testing.T) {
		b := build(t, "SaveScoreAvg13", nil, config.NewFunc("SaveScoreAvg13", config.Save).WithConn("M"))
		run(t, b.eng)
		if got := written(t, b); got != `{"stu_id":1}` {
			t.Errorf("written: %s", got)
		}
	})
}

// A folder the original loads, with a disabled flow naming a function that
// is gone, a disabled duplicate of an enabled flow and unused functions with
// a lowercase fmode or a missing connector: it imports, the engine is made,
// the enabled flow runs and the disabled one is refused.
func TestFolderWithDisabledAndUnusedLeftoversRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	docs := "kistype: func\nfname: Known\nfmode: Calculate\n---\nkistype: func\nfname: Lower\nfmode: calculate\n---\n" +
		"kistype: func\nfname: S\nfmode: Save\noption:\n  cname: Gone\n---\n" +
		"kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Known\n---\n" +
		"kistype: flow\nstatus: 0\nflow_name: F\nflows:\n  - fname: Removed\n  - fname: S\n---\n" +
		"kistype: flow\nstatus: 0\nflow_name: Old\nflows:\n  - fname: Removed\n  - fname: Lower\n"
	if err := os.WriteFile(filepath.Join(dir, "a.yml"), []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister("Known", passThrough[map[string]any])
	for _, p := range set.Check(reg.LintOptions()...) {
		if p.Severity == config.SevError {
			t.Errorf("lint: %v", p)
		}
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	fl := mustFlow(t, eng, "F")
	_ = fl.CommitRow(map[string]any{"a": 1})
	if res, err := fl.Run(context.Background()); err != nil || len(res.Rows) != 1 {
		t.Fatalf("Run: %v, %v", res.Rows, err)
	}
	if _, err := eng.Flow(context.Background(), "Old"); !errors.Is(err, kisflow.ErrFlowDisabled) {
		t.Errorf("disabled flow: %v", err)
	}
}

type nilRow struct{ A int }

// Nil rows, as the migration guide's "Nil rows" row says: a typed nil
// reaches a []*T function as nil and is rejected by a []T one; an untyped
// nil is rejected by both, naming T (not *T); JSON null reaches []*T as &T{}.
func TestNilRows(t *testing.T) {
	t.Parallel()
	var gotPtr []*nilRow
	var gotVal []nilRow
	reg := kisflow.NewRegistry()
	reg.MustRegister("Ptr", func(ctx context.Context, f kisflow.Flow, rows []*nilRow) error {
		gotPtr = append(gotPtr, rows...)
		return nil
	})
	reg.MustRegister("Val", func(ctx context.Context, f kisflow.Flow, rows []nilRow) error {
		gotVal = append(gotVal, rows...)
		return nil
	})
	set := config.NewSet()
	set.AddFunc(config.NewFunc("Ptr", config.Calculate))
	set.AddFunc(config.NewFunc("Val", config.Calculate))
	set.AddFlow(config.NewFlow("P", config.Step("Ptr", nil)))
	set.AddFlow(config.NewFlow("V", config.Step("Val", nil)))
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	run := func(name string) []string {
		fl := mustFlow(t, eng, name)
		_ = fl.CommitRow(nil)
		_ = fl.CommitRow((*nilRow)(nil))
		_ = fl.CommitRow("null")
		res, _ := fl.Run(context.Background())
		var out []string
		for _, r := range res.Rejected {
			out = append(out, r.Err.Error())
		}
		return out
	}
	if rej := run("P"); len(rej) != 1 || rej[0] != "nil row cannot become kisflow_test.nilRow" {
		t.Errorf("[]*T rejected: %q", rej)
	}
	if len(gotPtr) != 2 || gotPtr[0] != nil || gotPtr[1] == nil || *gotPtr[1] != (nilRow{}) {
		t.Errorf("[]*T got %v", gotPtr)
	}
	if rej := run("V"); len(rej) != 2 || rej[0] != "nil row cannot become kisflow_test.nilRow" || rej[1] != "row is a nil pointer" {
		t.Errorf("[]T rejected: %q", rej)
	}
	if len(gotVal) != 1 || gotVal[0] != (nilRow{}) {
		t.Errorf("[]T got %v", gotVal)
	}
}

// downDriver fails every start, counting them.
type downDriver struct{ starts *atomic.Int32 }

func (d downDriver) Start(context.Context) error {
	d.starts.Add(1)
	return errors.New("connection refused")
}
func (d downDriver) Close(context.Context) error { return nil }

// c.Driver() on a connector only functions use, whose server is down: the
// first call tries to start it, the next ones within the wait return nil
// at once instead of each waiting for a dial; Client always tries.
func TestDriverDoesNotRedialAtOnceAfterAFailedStart(t *testing.T) {
	t.Parallel()
	var starts atomic.Int32
	reg := kisflow.NewRegistry()
	if err := reg.RegisterDriver("down", func(*config.Conn) (kisflow.Driver, error) { return downDriver{&starts}, nil }); err != nil {
		t.Fatal(err)
	}
	var nils int
	var clientErr error
	reg.MustRegister("S", func(ctx context.Context, f kisflow.Flow) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		for range 5 {
			if c.Driver() == nil {
				nils++
			}
		}
		_, clientErr = c.Client(ctx)
		return nil
	})
	set := config.NewSet()
	set.AddConn(config.NewConn("C", "down"))
	set.AddFunc(config.NewFunc("S", config.Save).WithConn("C"))
	set.AddFlow(config.NewFlow("F", config.Step("S", nil)))
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithDriverRetryAfter(time.Hour), kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	if _, err := mustFlow(t, eng, "F").Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if nils != 5 || starts.Load() != 2 || clientErr == nil || !strings.Contains(clientErr.Error(), "connection refused") {
		t.Errorf("Driver nil %d times, %d starts (want 5, 2: one by Driver, one by Client), Client: %v", nils, starts.Load(), clientErr)
	}
}
