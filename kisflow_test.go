package kisflow_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

type score struct {
	ID    int `json:"id"`
	Score int `json:"score"`
}

// chain returns the YAML of a flow running fnames in order, with a Calculate
// func document for each.
func chain(flow string, fnames ...string) map[string]string {
	docs := map[string]string{}
	var b strings.Builder
	fmt.Fprintf(&b, "kistype: flow\nstatus: 1\nflow_name: %s\nflows:\n", flow)
	for _, f := range fnames {
		fmt.Fprintf(&b, "  - fname: %s\n", f)
		docs["func-"+f+".yml"] = fmt.Sprintf("kistype: func\nfname: %s\nfmode: Calculate\n", f)
	}
	docs["flow.yml"] = b.String()
	return docs
}

func mustFlow(t testing.TB, eng *kisflow.Engine, name string) kisflow.Flow {
	t.Helper()
	fl, err := eng.Flow(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return fl
}

// passThrough commits every row it gets.
func passThrough[T any](ctx context.Context, f kisflow.Flow, rows []*T) error {
	for _, r := range rows {
		_ = f.CommitRow(r)
	}
	return nil
}

func TestTypedInjectionFromMixedRows(t *testing.T) {
	t.Parallel()
	type seen struct {
		mu  sync.Mutex
		ids []int
		ptr *score
	}
	orig := &score{ID: 1, Score: 10}
	handlers := map[string]func(s *seen) any{
		"pointer generic": func(s *seen) any {
			return kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*score) error {
				s.ptr = rows[0]
				for _, r := range rows {
					s.ids = append(s.ids, r.ID)
				}
				return nil
			})
		},
		"value generic": func(s *seen) any {
			return kisflow.FuncValues(func(ctx context.Context, f kisflow.Flow, rows []score) error {
				for _, r := range rows {
					s.ids = append(s.ids, r.ID)
				}
				return nil
			})
		},
		"pointer reflect": func(s *seen) any {
			return func(ctx context.Context, f kisflow.Flow, rows []*score) error {
				s.ptr = rows[0]
				for _, r := range rows {
					s.ids = append(s.ids, r.ID)
				}
				return nil
			}
		},
		"value reflect": func(s *seen) any {
			return func(ctx context.Context, f kisflow.Flow, rows []score) error {
				for _, r := range rows {
					s.ids = append(s.ids, r.ID)
				}
				return nil
			}
		},
	}
	for name, mk := range handlers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var s seen
			reg := kisflow.NewRegistry()
			reg.MustRegister("Take", mk(&s))
			fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "Take")), "F")
			rows := []any{
				orig,                                // *T: passed as is
				score{ID: 2},                        // T
				`{"id":3,"score":30}`,               // JSON string
				[]byte(`{"id":4}`),                  // JSON bytes
				map[string]any{"id": 5, "score": 1}, // map
				`{"id": "not a number"}`,            // bad JSON: rejected
				42,                                  // wrong type: rejected
				`{"id":8}`,
			}
			if err := fl.CommitRowBatch(rows); err != nil {
				t.Fatal(err)
			}
			res, err := fl.Run(context.Background())
			var rejErr *kisflow.RejectedError
			if !errors.As(err, &rejErr) || len(rejErr.Rows) != 2 {
				t.Fatalf("Run: %v, want a RejectedError with 2 rows", err)
			}
			if got := fmt.Sprint(s.ids); got != "[1 2 3 4 5 8]" {
				t.Errorf("ids seen: %s", got)
			}
			if strings.HasPrefix(name, "pointer") && s.ptr != orig {
				t.Error("a *T row was copied instead of passed as is")
			}
			if len(res.Rejected) != 2 {
				t.Fatalf("rejected: %v", res.Rejected)
			}
			for i, wantIdx := range []int{5, 6} {
				re := res.Rejected[i]
				if re.Func != "Take" || re.Flow != "F" || re.Index != wantIdx || re.Row != rows[wantIdx] || re.Err == nil {
					t.Errorf("rejected[%d] = %+v", i, re)
				}
				if !strings.Contains(re.Error(), `function "Take": row `+fmt.Sprint(wantIdx)) {
					t.Errorf("error text: %v", re)
				}
			}
		})
	}
}

func TestValueRowsFromPointers(t *testing.T) {
	t.Parallel()
	var got []score
	reg := kisflow.NewRegistry()
	reg.MustRegister("Take", kisflow.FuncValues(func(ctx context.Context, f kisflow.Flow, rows []score) error {
		got = append(got, rows...)
		return nil
	}))
	fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "Take")), "F")
	_ = fl.CommitRow(&score{ID: 7})
	_ = fl.CommitRow((*score)(nil))
	res, err := fl.Run(context.Background())
	var rowErr *kisflow.RowError
	if !errors.As(err, &rowErr) || rowErr.Index != 1 {
		t.Fatalf("Run: %v, want the nil row's RowError", err)
	}
	if len(got) != 1 || got[0].ID != 7 || len(res.Rejected) != 1 {
		t.Fatalf("got %v, rejected %v", got, res.Rejected)
	}
}

func TestEmptyInputReachesEveryForm(t *testing.T) {
	t.Parallel()
	forms := map[string]any{
		"pointer generic": kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*score) error { return f.CommitRow(len(rows)) }),
		"value generic":   kisflow.FuncValues(func(ctx context.Context, f kisflow.Flow, rows []score) error { return f.CommitRow(len(rows)) }),
		"pointer reflect": func(ctx context.Context, f kisflow.Flow, rows []*score) error { return f.CommitRow(len(rows)) },
		"value reflect":   func(ctx context.Context, f kisflow.Flow, rows []score) error { return f.CommitRow(len(rows)) },
		"any reflect":     func(ctx context.Context, f kisflow.Flow, rows []interface{}) error { return f.CommitRow(len(rows)) },
		"no rows":         func(ctx context.Context, f kisflow.Flow) error { return f.CommitRow(len(f.Input())) },
	}
	for name, fn := range forms {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := kisflow.NewRegistry()
			reg.MustRegister("Skip", kisflow.FuncNoRows(func(ctx context.Context, f kisflow.Flow) error {
				return f.Next(kisflow.ForceEntryNext)
			}))
			reg.MustRegister("Count", fn)
			fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "Skip", "Count")), "F")
			_ = fl.CommitRow(&score{})
			res, err := fl.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(res.Rows) != "[0]" {
				t.Fatalf("got %v", res.Rows)
			}
		})
	}
}

func TestRegisterSignatures(t *testing.T) {
	t.Parallel()
	good := []any{
		func(context.Context, kisflow.Flow, []*score) error { return nil },
		func(context.Context, kisflow.Flow, []score) error { return nil },
		func(context.Context, kisflow.Flow, []any) error { return nil },
		func(context.Context, kisflow.Flow, []interface{}) error { return nil },
		func(context.Context, kisflow.Flow) error { return nil },
	}
	for i, fn := range good {
		if err := kisflow.NewRegistry().Register("F", fn); err != nil {
			t.Errorf("good[%d]: %v", i, err)
		}
	}
	bad := []struct {
		fn   any
		want string
	}{
		{nil, "nil function"},
		{42, "is not a function"},
		{func(kisflow.Flow, []score) error { return nil }, "first parameter must be context.Context"},
		{func(context.Context, kisflow.Flow, []score, int) error { return nil }, "4 parameters"},
		{func(context.Context, kisflow.Flow, []score) {}, "exactly one error"},
		{func(context.Context, kisflow.Flow, []score) (int, error) { return 0, nil }, "exactly one error"},
		{func(context.Context, string, []score) error { return nil }, "second parameter must be kisflow.Flow"},
		{func(string, kisflow.Flow, []score) error { return nil }, "first parameter must be context.Context"},
		{func(context.Context, kisflow.Flow, score) error { return nil }, "must be a slice"},
		{func(context.Context, kisflow.Flow, []**score) error { return nil }, "pointer to pointer"},
		{func(context.Context, kisflow.Flow, []fmt.Stringer) error { return nil }, "non-empty interface"},
		{func(context.Context, kisflow.Flow, ...score) error { return nil }, "variadic"},
	}
	for i, tt := range bad {
		err := kisflow.NewRegistry().Register("F", tt.fn)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"F"`) {
			t.Errorf("bad[%d]: got %v, want it to mention %q", i, err, tt.want)
		}
	}
	reg := kisflow.NewRegistry()
	reg.MustRegister("F", kisflow.FuncNoRows(func(context.Context, kisflow.Flow) error { return nil }))
	if err := reg.Register("F", good[0]); !errors.Is(err, kisflow.ErrDuplicate) {
		t.Errorf("duplicate: got %v", err)
	}
}

func TestParamsMerged(t *testing.T) {
	t.Parallel()
	var got []map[string]string
	reg := kisflow.NewRegistry()
	reg.MustRegister("P", kisflow.FuncNoRows(func(ctx context.Context, f kisflow.Flow) error {
		got = append(got, map[string]string{"a": f.Param("a"), "b": f.Param("b"), "c": f.Param("c"), "n": fmt.Sprint(len(f.Params()))})
		return f.CommitRowBatch(f.Input())
	}))
	eng := testenv.Engine(t, reg, map[string]string{
		"func.yml": "kistype: func\nfname: P\nfmode: Calculate\noption:\n  default_params:\n    a: default-a\n    b: default-b\n",
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: P\n    params:\n      b: flow-b\n      c: flow-c\n  - fname: P\n",
	})
	fl := mustFlow(t, eng, "F")
	_ = fl.CommitRow("x")
	if _, err := fl.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := `[map[a:default-a b:flow-b c:flow-c n:3] map[a:default-a b:default-b c: n:2]]`
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v\nwant %s", got, want)
	}
}

// stepLog records which functions ran, with the rows each one got.
type stepLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *stepLog) add(name string, rows []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%s%v", name, rows))
}

func (l *stepLog) String() string { return strings.Join(l.lines, " ") }

func TestActions(t *testing.T) {
	t.Parallel()
	type fn = func(ctx context.Context, f kisflow.Flow, rows []any) error
	double := func(ctx context.Context, f kisflow.Flow, rows []any) error {
		for _, r := range rows {
			_ = f.CommitRow(r.(int) * 2)
		}
		return nil
	}
	tests := []struct {
		name    string
		a, b, c fn
		src     []any
		trace   string // functions run and their inputs
		out     string // the run's result rows
		errIs   error
	}{
		{
			name: "plain chain",
			a:    double, b: double, c: double,
			src:   []any{1, 2},
			trace: "A[1 2] B[2 4] C[4 8]", out: "[8 16]",
		},
		{
			name: "empty layer ends the run",
			a:    func(context.Context, kisflow.Flow, []any) error { return nil },
			b:    double, c: double,
			src:   []any{1},
			trace: "A[1]", out: "[]",
		},
		{
			name: "DataReuse passes the input on",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(99)
				return f.Next(kisflow.DataReuse)
			},
			b: double, c: double,
			src:   []any{1, 2},
			trace: "A[1 2] B[1 2] C[2 4]", out: "[4 8]",
		},
		{
			name: "ForceEntryNext runs the next layer on no rows",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				return f.Next(kisflow.ForceEntryNext)
			},
			b: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(len(rows))
				return nil
			},
			c:     double,
			src:   []any{1, 2},
			trace: "A[1 2] B[] C[0]", out: "[0]",
		},
		{
			name: "ForceEntryNext keeps committed rows",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(5)
				return f.Next(kisflow.ForceEntryNext)
			},
			b: double, c: double,
			src:   []any{1},
			trace: "A[1] B[5] C[10]", out: "[20]",
		},
		{
			name: "Abort ends the run with the aborting layer's rows",
			a:    double,
			b: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(7)
				return f.Next(kisflow.Abort)
			},
			c:     double,
			src:   []any{1},
			trace: "A[1] B[2]", out: "[7]",
		},
		{
			name: "Abort wins over JumpFunc and ForceEntryNext",
			a:    double,
			b: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				return f.Next(kisflow.JumpFunc("A"), kisflow.ForceEntryNext, kisflow.Abort)
			},
			c:     double,
			src:   []any{1},
			trace: "A[1] B[2]", out: "[]",
		},
		{
			name: "JumpFunc re-runs a function over its predecessor's output",
			a:    double,
			b: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				n, _ := f.Cache("rounds")
				rounds, _ := n.(int)
				f.SetCache("rounds", rounds+1, 0)
				for _, r := range rows {
					_ = f.CommitRow(r.(int) + 1)
				}
				if rounds < 2 {
					return f.Next(kisflow.JumpFunc("B"))
				}
				return nil
			},
			c:     double,
			src:   []any{1},
			trace: "A[1] B[2] B[2] B[2] C[3]", out: "[6]",
		},
		{
			name: "JumpFunc back to the first function reads the source rows",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRowBatch(rows)
				return nil
			},
			b: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(rows[0].(int) + 100)
				if _, again := f.Cache("again"); !again {
					f.SetCache("again", true, 0)
					return f.Next(kisflow.JumpFunc("A"))
				}
				return nil
			},
			c:     double,
			src:   []any{1},
			trace: "A[1] B[1] A[1] B[1] C[101]", out: "[202]",
		},
		{
			name: "JumpFunc forward skips functions",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRow(3)
				return f.Next(kisflow.JumpFunc("C"))
			},
			b: double, c: double,
			src:   []any{1},
			trace: "A[1] C[3]", out: "[6]",
		},
		{
			name: "endless JumpFunc fails instead of looping",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRowBatch(rows)
				return f.Next(kisflow.JumpFunc("A"))
			},
			b: double, c: double,
			src:   []any{1},
			errIs: errTooManyJumps,
		},
		{
			name: "JumpFunc to an unknown function fails",
			a: func(ctx context.Context, f kisflow.Flow, rows []any) error {
				_ = f.CommitRowBatch(rows)
				return f.Next(kisflow.JumpFunc("Nope"))
			},
			b: double, c: double,
			src:   []any{1},
			errIs: errUnknownJump,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var log stepLog
			reg := kisflow.NewRegistry()
			for name, f := range map[string]fn{"A": tt.a, "B": tt.b, "C": tt.c} {
				reg.MustRegister(name, kisflow.FuncRows(func(ctx context.Context, fl kisflow.Flow, rows []any) error {
					log.add(name, rows)
					return f(ctx, fl, rows)
				}))
			}
			fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "A", "B", "C"), kisflow.WithMaxJumps(5)), "F")
			_ = fl.CommitRowBatch(tt.src)
			res, err := fl.Run(context.Background())
			if tt.errIs != nil {
				if err == nil || !strings.Contains(err.Error(), tt.errIs.Error()) {
					t.Fatalf("got error %v, want %v", err, tt.errIs)
				}
				var fe *kisflow.FuncError
				if !errors.As(err, &fe) || fe.Func != "A" {
					t.Fatalf("want a FuncError naming A, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if log.String() != tt.trace {
				t.Errorf("trace: %s\nwant:  %s", log.String(), tt.trace)
			}
			if got := fmt.Sprint(res.Rows); got != tt.out {
				t.Errorf("result rows: %s, want %s", got, tt.out)
			}
		})
	}
}

var (
	errTooManyJumps = errors.New("too many jumps: more than 5 jumps in one run")
	errUnknownJump  = errors.New(`jump to "Nope": no such function in this flow`)
)

func TestFailedFunctionRowsAreDiscarded(t *testing.T) {
	t.Parallel()
	var seenByB []string
	fail := true
	reg := kisflow.NewRegistry()
	reg.MustRegister("A", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		for _, r := range rows {
			_ = f.CommitRow(r.(string) + "'")
		}
		if fail {
			return errors.New("boom")
		}
		return nil
	}))
	reg.MustRegister("B", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		seenByB = append(seenByB, fmt.Sprint(rows))
		return f.CommitRowBatch(rows)
	}))
	fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "A", "B")), "F")
	_ = fl.CommitRow("first")
	_, err := fl.Run(context.Background())
	var fe *kisflow.FuncError
	if !errors.As(err, &fe) || fe.Func != "A" || fe.Flow != "F" || fe.Layer != 0 || fe.Err.Error() != "boom" {
		t.Fatalf("got %v", err)
	}
	fail = false
	_ = fl.CommitRow("second")
	res, err := fl.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Rows) != "[second']" || fmt.Sprint(seenByB) != "[[second']]" {
		t.Fatalf("rows of the failed run leaked: result %v, B saw %v", res.Rows, seenByB)
	}
}

func TestPanickingFunctionIsAnError(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("A", passThrough[score])
	reg.MustRegister("B", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*score) error {
		var m map[string]int
		m["x"] = rows[0].ID // nil map write
		return nil
	}))
	fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "A", "B")), "F")
	_ = fl.CommitRow(&score{ID: 1})
	_, err := fl.Run(context.Background())
	var fe *kisflow.FuncError
	var pe *kisflow.PanicError
	if !errors.As(err, &fe) || fe.Func != "B" || !errors.As(err, &pe) || len(pe.Stack) == 0 {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), `flow "F": function "B" (step 2): panic: assignment to entry in nil map`) {
		t.Fatalf("message: %v", err)
	}
	// The instance is usable after the panic.
	reg2ok := func() error { _ = fl.CommitRow(&score{ID: 2}); _, err := fl.Run(context.Background()); return err }
	if err := reg2ok(); err == nil {
		t.Fatal("second run should panic again in B")
	}
}

func TestEngineErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := kisflow.NewRegistry()
	reg.MustRegister("A", passThrough[score])
	if err := memory.Install(reg); err != nil {
		t.Fatal(err)
	}

	docs := chain("F", "A", "Unregistered")
	set, err := config.ImportFS(mapFS(docs), ".")
	if err != nil {
		t.Fatal(err)
	}
	// As in KisFlow, a function without a body fails when its flow is
	// built, not when the engine is made.
	unreg, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatalf("an engine whose flow names an unregistered function: %v", err)
	}
	if _, err := unreg.Flow(ctx, "F"); !errors.Is(err, kisflow.ErrUnknownFunction) || !strings.Contains(err.Error(), `"Unregistered"`) || !strings.Contains(err.Error(), "calc in YAML") {
		t.Errorf("unregistered function: %v", err)
	}

	docs = chain("F", "A")
	docs["off.yml"] = "kistype: flow\nstatus: 0\nflow_name: Off\nflows:\n  - fname: Unregistered\n"
	docs["func-Unregistered.yml"] = "kistype: func\nfname: Unregistered\nfmode: Expand\n"
	eng := testenv.Engine(t, reg, docs) // disabled flows may name unregistered functions
	if _, err := eng.Flow(ctx, "Off"); !errors.Is(err, kisflow.ErrFlowDisabled) {
		t.Errorf("disabled flow: %v", err)
	}
	if _, err := eng.Flow(ctx, "Nope"); !errors.Is(err, kisflow.ErrUnknownFlow) {
		t.Errorf("unknown flow: %v", err)
	}

	docs = map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: S\nflows:\n  - fname: Store\n",
		"func.yml": "kistype: func\nfname: Store\nfmode: Save\noption:\n  cname: Broken\n",
		"conn.yml": "kistype: conn\ncname: Broken\ntype: memory\nparams:\n  fail_start: \"true\"\n",
	}
	reg.MustRegister("Store", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		_, err = c.Call(ctx, f, rows)
		return err
	}))
	eng = testenv.Engine(t, reg, docs)
	// Store has a Go body and no stream uses Broken: it starts when Call
	// first needs its client, and that call fails.
	sfl, err := eng.Flow(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	_ = sfl.CommitRow(&score{ID: 1})
	if _, err = sfl.Run(ctx); err == nil || !strings.Contains(err.Error(), `connector "Broken" (type memory) failed to start`) || !strings.Contains(err.Error(), `"Store"`) {
		t.Errorf("failing connector: %v", err)
	}

	docs["conn.yml"] = "kistype: conn\ncname: Broken\ntype: redis\n"
	set, err = config.ImportFS(mapFS(docs), ".")
	if err != nil {
		t.Fatal(err)
	}
	// A type without a driver is a label, as in KisFlow: the engine is
	// made, the connector starts with no client, and a Save through it
	// fails naming the missing driver.
	labelled, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatalf("a connector type without a driver: %v", err)
	}
	c, err := labelled.Connector(ctx, "Broken")
	if err != nil || c.Driver() != nil {
		t.Fatalf("label connector: %v, driver %v", err, c)
	}
	fl, err := labelled.Flow(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	_ = fl.CommitRow(&score{ID: 1})
	if _, err := fl.Run(ctx); err == nil || !strings.Contains(err.Error(), `no driver for type "redis"`) {
		t.Errorf("Save through a connector without a driver: %v", err)
	}

	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Flow(ctx, "S"); !errors.Is(err, kisflow.ErrClosed) {
		t.Errorf("closed engine: %v", err)
	}
}

func TestPanickingDriverIsAnError(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	_ = reg.RegisterDriver("bomb", func(cfg *config.Conn) (kisflow.Driver, error) { panic("no driver today") })
	reg.MustRegister("Store", passThrough[score])
	set, err := config.ImportFS(mapFS(map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: S\nflows:\n  - fname: Store\n",
		"func.yml": "kistype: func\nfname: Store\nfmode: Save\noption:\n  cname: B\n",
		"conn.yml": "kistype: conn\ncname: B\ntype: bomb\n",
	}), ".")
	if err != nil {
		t.Fatal(err)
	}
	// Drivers are built (not started) to check their config when the
	// engine is made: for the connector of a YAML-only Save, the panic is
	// an error at the connector's position. (A registry with no Go function
	// cannot tell a YAML-only Save from one whose Go body is elsewhere: a
	// Save not run by a stream says so with body: yaml.)
	set.Funcs["Store"].Option.DefaultParams = map[string]string{"body": "yaml"}
	bare := kisflow.NewRegistry()
	_ = bare.RegisterDriver("bomb", func(cfg *config.Conn) (kisflow.Driver, error) { panic("no driver today") })
	if _, err := kisflow.NewEngine(bare, set); err == nil || !strings.Contains(err.Error(), `conn.yml:1: connector "B": panic: no driver today`) {
		t.Fatalf("got %v", err)
	}
	// Store has a Go body: B starts when it first needs its client, and
	// the panic is that use's error.
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(context.Background())
	c, err := eng.Connector(context.Background(), "B")
	if err == nil || c != nil || !strings.Contains(err.Error(), "panic: no driver today") {
		t.Fatalf("Connector: %v", err)
	}
}

func mapFS(docs map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, doc := range docs {
		fsys[name] = &fstest.MapFile{Data: []byte(doc)}
	}
	return fsys
}

// dirEngine imports the configuration folder dir and builds an engine of
// reg over it.
func dirEngine(t testing.TB, reg *kisflow.Registry, dir string) *kisflow.Engine {
	t.Helper()
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}
