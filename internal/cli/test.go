package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// The connectors a test adds to a flow that has no source or no sink of
// its own: the test's input and the rows it checks.
const (
	testInputConn  = "kisflow-test-input"
	testOutputConn = "kisflow-test-output"
	testFlowPrefix = "kisflow-test:"
)

type testOptions struct {
	timeout  time.Duration
	run      string
	logLevel string
}

func testCmd(reg *kisflow.Registry) *cobra.Command {
	o := testOptions{}
	cmd := &cobra.Command{
		Use:   "test DIR",
		Short: "Run the tests (kistype: test) of DIR's flows, without any service",
		Long: "Lint DIR, then run every `kistype: test` document below it: each feeds its\n" +
			"input rows to a flow (or to one function) and compares the rows the flow\n" +
			"produces, its dead letters and what its Save functions write with the\n" +
			"test's expect block. Every connector is replaced by an in-memory double:\n" +
			"no service is contacted; a YAML Load reads the records the test's mocks\n" +
			"give. Prints ok or FAIL per test, with a diff per row and field.\n" +
			"Exits 0 when every test passes, 1 when one fails, 2 when DIR has a lint\n" +
			"error, a test document is malformed or names what does not exist.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTests(cmd.Context(), reg, args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().DurationVar(&o.timeout, "timeout", time.Minute, "how long each test may run")
	cmd.Flags().StringVar(&o.run, "run", "", "run only the tests whose name or file contains this text")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "error", "log level of the flows under test: debug, info, warn, error")
	return cmd
}

func runTests(ctx context.Context, reg *kisflow.Registry, dir string, o testOptions, stdout, stderr io.Writer) error {
	if o.timeout <= 0 {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --timeout %s: give how long each test may run, more than 0 (such as 30s)", o.timeout)}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	if err := installMemory(reg); err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.err != nil && strings.Contains(ee.err.Error(), "has no body") {
			return &exitError{code: ee.code, err: fmt.Errorf("%w\n(a function written in Go is tested through the project's own binary, which has this command too: go run . test %s)", ee.err, dir)}
		}
		return err
	}
	tests, probs, err := readTests(dir)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	base := problemSet(set.Check(reg.LintOptions()...))
	for _, tc := range tests {
		ps := checkTest(reg, set, tc)
		if len(ps) == 0 {
			ps = checkTestParams(reg, set, tc, base)
		}
		probs = append(probs, ps...)
	}
	// Warnings (a param a test sets that nothing reads) are printed; the
	// tests still run.
	probs = slices.DeleteFunc(probs, func(p config.Problem) bool {
		if p.Severity == config.SevWarning {
			fmt.Fprintln(stderr, p)
			return true
		}
		return false
	})
	if len(probs) > 0 {
		slices.SortStableFunc(probs, func(a, b config.Problem) int {
			if c := strings.Compare(a.Pos.File, b.Pos.File); c != 0 {
				return c
			}
			return a.Pos.Line - b.Pos.Line
		})
		for _, p := range probs {
			fmt.Fprintln(stdout, p)
		}
		return &exitError{code: ExitUsage, err: fmt.Errorf("%d problem(s) in the tests of %s; no test ran", len(probs), dir)}
	}
	if o.run != "" {
		names := make([]string, len(tests))
		for i, tc := range tests {
			names[i] = tc.title()
		}
		tests = slices.DeleteFunc(tests, func(tc *testCase) bool {
			return !strings.Contains(tc.Name, o.run) && !strings.Contains(tc.pos.String(), o.run)
		})
		if len(tests) == 0 && len(names) > 0 {
			return &exitError{code: ExitUsage, err: fmt.Errorf("%s: --run %q matched none of the %d test(s) (by name or file:line): %s", dir, o.run, len(names), strings.Join(names, ", "))}
		}
	}
	if len(tests) == 0 {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%s: no test to run: write a YAML document with kistype: test (see `kisflow new`, conf/orders_test.yml)", dir)}
	}
	red := set.Redactor()
	stdout = red.Writer(stdout)
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: stderr, red: red}, &slog.HandlerOptions{Level: level}))
	failed, broken, abandoned := 0, 0, false
	for _, tc := range tests {
		start := time.Now()
		diffs, err := runTest(ctx, reg, set, tc, o.timeout, log, &abandoned)
		if err != nil {
			broken++
			fmt.Fprintf(stdout, "ERROR %s: could not run\n    %s\n", tc.title(), red.Redact(err.Error()))
			continue
		}
		if len(diffs) == 0 {
			fmt.Fprintf(stdout, "ok    %s (%s)\n", tc.title(), time.Since(start).Round(time.Millisecond))
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL  %s (%s)\n", tc.title(), time.Since(start).Round(time.Millisecond))
		for _, d := range diffs {
			fmt.Fprintf(stdout, "    %s\n", d)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if abandoned {
		fmt.Fprintln(stderr, "kisflow: a test's run did not stop after its timeout; it is abandoned as the command exits")
	}
	if broken > 0 {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%d of %d test(s) could not run, %d failed", broken, len(tests), failed)}
	}
	if failed > 0 {
		return &exitError{code: ExitProblem, err: fmt.Errorf("%d of %d test(s) failed", failed, len(tests))}
	}
	fmt.Fprintf(stderr, "ok: %d test(s) passed\n", len(tests))
	return nil
}

// installMemory registers the memory connector, which a test's own input
// and output connectors use, in a registry that lacks it.
func installMemory(reg *kisflow.Registry) error {
	if _, ok := reg.ConnectorSpec(memory.Type); ok || slices.Contains(reg.DriverTypes(), memory.Type) {
		return nil
	}
	return memory.Install(reg)
}

// testLoads returns, for each step of the flow a test runs, the connector
// a Load written in YAML reads through (cname -> function).
func testLoads(reg *kisflow.Registry, set *config.Set, steps []config.FlowStep) map[string]string {
	goFuncs := reg.Functions()
	out := map[string]string{}
	for _, st := range steps {
		fc := set.Funcs[st.FName]
		if fc == nil || fc.FMode != config.Load || fc.ConfigOnly() || fc.Window != nil || fc.Option.CName == "" || slices.Contains(goFuncs, st.FName) {
			continue
		}
		if _, ok := out[fc.Option.CName]; !ok {
			out[fc.Option.CName] = st.FName
		}
	}
	return out
}

// checkTest reports what a test names that the configuration lacks, and
// the mocks it needs, before any test runs.
func checkTest(reg *kisflow.Registry, set *config.Set, tc *testCase) []config.Problem {
	var probs []config.Problem
	addAt := func(pos config.Pos, format string, args ...any) {
		probs = append(probs, config.Problem{Pos: pos, Msg: "test: " + fmt.Sprintf(format, args...)})
	}
	add := func(format string, args ...any) { addAt(tc.pos, format, args...) }
	var steps []config.FlowStep
	switch {
	case tc.Func != "":
		if set.Funcs[tc.Func] == nil && !slices.Contains(reg.Functions(), tc.Func) {
			add("no function %q in the configuration%s", tc.Func, config.SuggestName(tc.Func, slices.Sorted(maps.Keys(set.Funcs))))
			return probs
		}
		if set.Funcs[tc.Func] == nil {
			add("function %q is registered in Go but has no kistype: func document; write one (fname, fmode) so that it can run", tc.Func)
			return probs
		}
		steps = []config.FlowStep{{FName: tc.Func}}
	case tc.Flow != "":
		fl := set.Flows[tc.Flow]
		if fl == nil {
			add("no flow %q in the configuration%s", tc.Flow, config.SuggestName(tc.Flow, set.FlowNames()))
			return probs
		}
		steps = fl.Flows
		for fname := range tc.Params {
			if !slices.ContainsFunc(steps, func(s config.FlowStep) bool { return s.FName == fname }) {
				var names []string
				for _, s := range steps {
					names = append(names, s.FName)
				}
				add("params: flow %q has no function %q%s", tc.Flow, fname, config.SuggestName(fname, names))
			}
		}
	default:
		return nil
	}
	if tc.Flow != "" && set.Flows[tc.Flow].Stream != nil {
		if src := set.Flows[tc.Flow].Stream.Source; csvSource(set.Conns[src]) {
			for i, row := range tc.Input {
				if _, ok := row.(string); ok {
					add("input[%d]: flow %q reads CSV (connector %q), but a string input is fed as a JSON line; give the record as the source decodes it, a map of its columns ({col: value, ...}; CSV numbers become numbers)", i, tc.Flow, src)
				}
			}
		}
	}
	loads := testLoads(reg, set, steps)
	for cname, fname := range loads {
		if tc.Mocks[cname] == nil {
			c := set.Conns[cname]
			typ := ""
			if c != nil {
				typ = " (type " + c.Type + ")"
			}
			add("function %q loads through connector %q%s, which a test does not contact: give the records it holds, as\n      mocks:\n        %s:\n          records:\n            - {field: value, ...}   # with the field its key reads", fname, cname, typ, cname)
		}
	}
	remotes := testRemotes(reg, set, steps)
	for cname, fname := range remotes {
		if m := tc.Mocks[cname]; m == nil || m.Provider == "" {
			add("function %q is remote (connector %q of type remote): a test runs no provider; give the folder of the provider's configuration, whose functions then run in the test's process, as\n      mocks:\n        %s:\n          provider: ../pricing   # relative to this file", fname, cname, cname)
		}
	}
	for cname, m := range tc.Mocks {
		_, remote := remotes[cname]
		if set.Conns[cname] == nil {
			addAt(tc.at("mocks."+cname), "mocks: no connector %q%s", cname, config.SuggestName(cname, slices.Sorted(maps.Keys(set.Conns))))
		} else if m.Provider != "" && !remote {
			addAt(tc.at("mocks."+cname), "mocks.%s.provider: no function of the test's flow is remote through connector %q (provider stands in for a connector of type remote)", cname, cname)
		} else if _, ok := loads[cname]; !ok && !remote {
			addAt(tc.at("mocks."+cname), "mocks: no function of the test's flow loads through connector %q in YAML (a Load with a load_query or key template); mocks give the records such a Load reads", cname)
		}
	}
	for cname := range tc.Expect.Written {
		if set.Conns[cname] == nil {
			addAt(tc.at("expect.written."+cname), "expect.written: no connector %q%s", cname, config.SuggestName(cname, slices.Sorted(maps.Keys(set.Conns))))
		}
	}
	return probs
}

// problemSet is the messages of probs, to tell those a test's params add.
func problemSet(probs []config.Problem) map[string]bool {
	m := make(map[string]bool, len(probs))
	for _, p := range probs {
		m[p.Msg] = true
	}
	return m
}

// checkTestParams applies lint's param checks to the params a test sets:
// a param the function's YAML body (a Load, a Save, an expression's
// filters) does not read is an error when lint names the param it
// resembles, else a warning. A Go
// function's params are not declared to the registry: a param is refused
// only when it is not one the configuration gives the function (its
// default_params, a step's params) but resembles one of them (tax_rat for
// tax_rate).
func checkTestParams(reg *kisflow.Registry, set *config.Set, tc *testCase, base map[string]bool) []config.Problem {
	if len(tc.Params) == 0 {
		return nil
	}
	var probs []config.Problem
	fnames := []string{tc.Func}
	if tc.Flow != "" {
		fnames = slices.Sorted(maps.Keys(tc.Params))
	}
	ts, _ := testSet(set, tc)
	added := ts.Check(reg.LintOptions()...)
	goFuncs := reg.Functions()
	for _, fname := range fnames {
		for _, p := range slices.Sorted(maps.Keys(tc.stepParams(fname))) {
			if slices.Contains(goFuncs, fname) {
				known := declaredParams(set, fname)
				if hint := config.SuggestName(p, known); !slices.Contains(known, p) && hint != "" {
					probs = append(probs, config.Problem{Pos: tc.paramsPos, Msg: fmt.Sprintf("test: params: function %q is not given param %q by the configuration (it is given %s)%s", fname, p, strings.Join(known, ", "), hint)})
				}
				continue
			}
			for _, q := range added {
				if !base[q.Msg] && strings.Contains(q.Msg, fmt.Sprintf("function %q: param %q ", fname, p)) {
					// A misspelling (lint names the param it resembles) is
					// an error; a param merely read by nothing, a warning.
					sev := config.SevWarning
					if strings.Contains(q.Msg, "(did you mean ") {
						sev = config.SevError
					}
					probs = append(probs, config.Problem{Pos: tc.paramsPos, Severity: sev, Msg: "test: params: " + q.Msg})
				}
			}
		}
	}
	return probs
}

// declaredParams lists the params the configuration gives function
// fname: its default_params and those of the flow steps that run it.
func declaredParams(set *config.Set, fname string) []string {
	var out []string
	if fc := set.Funcs[fname]; fc != nil {
		out = slices.Collect(maps.Keys(fc.Option.DefaultParams))
	}
	for _, fl := range set.Flows {
		for _, st := range fl.Flows {
			if st.FName == fname {
				out = append(out, slices.Collect(maps.Keys(st.Params))...)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// csvSource reports whether connector c is a file or stdin source that
// reads CSV: a header line, then records the source decodes into maps.
func csvSource(c *config.Conn) bool {
	if c == nil || (c.Type != file.TypeFile && c.Type != file.TypeStdin) {
		return false
	}
	if f := c.Params["format"]; f != "" {
		return f == "csv"
	}
	return c.Type == file.TypeFile && strings.HasSuffix(strings.TrimSuffix(c.Params["path"], ".gz"), ".csv")
}

// testRun is the state of one test's run: the doubles' records.
type testRun struct {
	tc      *testCase
	source  string
	sink    string
	input   []string
	mocks   map[string]*testMock
	reg     *kisflow.Registry
	log     *slog.Logger
	mu      sync.Mutex
	out     []any
	written map[string][]any
	letters []gotLetter
	memory  map[string]*memory.Store // connectors of type memory, kept real
}

// testSet returns a copy of set in which the test's flow runs as a stream
// from the test's input to a sink it reads, with one worker so that the
// output keeps the order of the input.
func testSet(set *config.Set, tc *testCase) (*config.Set, string) {
	s := *set
	s.Flows = maps.Clone(set.Flows)
	s.Conns = maps.Clone(set.Conns)
	// The global document's plugins (shared clients, exporters) would
	// reach services; a test runs without them.
	s.Global = &config.Global{}
	var fl config.Flow
	if tc.Func != "" {
		fl = config.Flow{Status: config.FlowEnabled, FlowName: testFlowPrefix + tc.Func,
			Flows: []config.FlowStep{{FName: tc.Func, Params: tc.stepParams(tc.Func)}}}
	} else {
		fl = *set.Flows[tc.Flow]
		fl.Status = config.FlowEnabled
		fl.Flows = slices.Clone(fl.Flows)
		for i, st := range fl.Flows {
			if p := tc.stepParams(st.FName); p != nil {
				m := maps.Clone(st.Params)
				if m == nil {
					m = map[string]string{}
				}
				maps.Copy(m, p)
				fl.Flows[i].Params = m
			}
		}
	}
	st := config.Stream{}
	if fl.Stream != nil {
		st = *fl.Stream
	}
	if st.Source == "" {
		st.Source = testInputConn
		s.Conns[testInputConn] = &config.Conn{CName: testInputConn, Type: memory.Type}
	}
	if st.Sink == "" {
		st.Sink = testOutputConn
		s.Conns[testOutputConn] = &config.Conn{CName: testOutputConn, Type: memory.Type}
	}
	st.Workers = 1
	// A test that times out is not drained for long: its run must end
	// within testGrace of its timeout.
	st.DrainTimeout = config.Duration(testGrace / 2)
	st.Delivery = config.AtLeastOnce
	fl.Stream = &st
	s.Flows[fl.FlowName] = &fl
	return &s, fl.FlowName
}

// testGrace is how long a test's run has to stop once its timeout has
// passed (and its engine to close) before it is abandoned.
const testGrace = 2 * time.Second

// runTest runs one test and returns its differences from what it expects.
// err is a test that could not run (its flow failed to build).
//
// abandoned is set when the run did not stop within testGrace of its
// timeout: it goes on in the background and the caller must exit.
func runTest(ctx context.Context, reg *kisflow.Registry, set *config.Set, tc *testCase, timeout time.Duration, log *slog.Logger, abandoned *bool) ([]string, error) {
	ts, flowName := testSet(set, tc)
	r := &testRun{tc: tc, reg: reg, log: log, source: ts.Flows[flowName].Stream.Source, sink: ts.Flows[flowName].Stream.Sink, mocks: tc.Mocks, written: map[string][]any{}, memory: map[string]*memory.Store{}}
	for i, row := range tc.Input {
		text, err := inputText(row)
		if err != nil {
			return nil, fmt.Errorf("input[%d]: %w", i, err)
		}
		r.input = append(r.input, text)
	}
	eng, err := kisflow.NewEngine(reg, ts, kisflow.WithLogger(log), kisflow.WithConnectorOverride(r.override))
	if err != nil {
		return nil, err
	}
	defer func() {
		if *abandoned {
			return // its Close would wait for the run that did not stop
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), testGrace)
		defer cancel()
		_ = eng.Close(cctx)
	}()
	stateDir, err := os.MkdirTemp("", "kisflow-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stateDir)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	job, err := eng.Job(rctx, flowName,
		kisflow.WithStateDir(stateDir),
		kisflow.WithCheckpoints(&testCheckpoints{m: map[string]string{}}),
		kisflow.WithDeadLetterSink(testLetters{r}),
		kisflow.WithRetrySleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() }))
	if err != nil {
		return nil, err
	}
	// The run is in a goroutine so that the timeout holds even against a
	// function that ignores its context: once it passes, the run has
	// testGrace to end; if it does not, the test is reported as failed
	// and abandoned (its goroutines end with the process, which exits
	// once every test is reported).
	done := make(chan error, 1)
	go func() { done <- job.Run(rctx) }()
	var runErr error
	select {
	case runErr = <-done:
	case <-rctx.Done():
		select {
		case runErr = <-done:
		case <-time.After(testGrace):
			*abandoned = true
			return []string{fmt.Sprintf("did not finish within %s (--timeout), and did not stop %s after it was cancelled (a function that ignores its context: it was abandoned); %d of %d input rows were read", timeout, testGrace, job.Stats().Read, len(r.input))}, nil
		}
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return []string{fmt.Sprintf("did not finish within %s (--timeout); %d of %d input rows were read", timeout, job.Stats().Read, len(r.input))}, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var diffs []string
	switch want := tc.Expect.ErrorContains; {
	case want == "" && runErr != nil:
		diffs = append(diffs, fmt.Sprintf("the flow failed: %v", runErr))
	case want != "" && runErr == nil:
		diffs = append(diffs, fmt.Sprintf("error: want the flow to fail with an error containing %q, it did not fail", want))
	case want != "" && !strings.Contains(runErr.Error(), want):
		diffs = append(diffs, fmt.Sprintf("error: want an error containing %q, got %v", want, runErr))
	}
	want := make([]any, len(tc.Expect.Rows))
	for i, w := range tc.Expect.Rows {
		want[i] = normalize(jsonSafe(w))
	}
	ignore := tc.Expect.IgnoreFields
	diffs = append(diffs, diffRows("rows", withoutFields(want, ignore), withoutFields(r.out, ignore), tc.Expect.Unordered)...)
	diffs = append(diffs, diffLetters(tc.Expect.DeadLetters, r.letters)...)
	for cname, st := range r.memory {
		for _, row := range st.Rows("") {
			r.written[cname] = append(r.written[cname], normalize(row))
		}
	}
	for _, cname := range slices.Sorted(maps.Keys(tc.Expect.Written)) {
		rows := tc.Expect.Written[cname]
		want := make([]any, len(rows))
		for i, w := range rows {
			want[i] = normalize(jsonSafe(w))
		}
		diffs = append(diffs, diffRows("written["+cname+"]", withoutFields(want, ignore), withoutFields(r.written[cname], ignore), tc.Expect.Unordered)...)
	}
	return diffs, nil
}

// override builds the in-memory double that stands in for connector
// cname: the test's input for the flow's source, a recorder of the rows
// written for every other, which also answers a YAML Load from the test's
// mocks. No real driver is started; one is built (as lint does, without
// connecting) only to read a Load's key from its params.
func (r *testRun) override(cname string, cfg *config.Conn, factory kisflow.DriverFactory) (kisflow.Driver, error) {
	if cname == r.source {
		return &testSource{rows: r.input}, nil
	}
	d := &testDouble{run: r, name: cname}
	if factory == nil {
		return d, nil
	}
	if cfg.Type == memory.Type && cname != r.sink {
		// Already in memory: the real one, so that Go functions that use
		// its store (f.Connector().Driver().(*memory.Store)) run as they
		// do in production; what it appends counts as written.
		drv, err := factory(cfg)
		if st, ok := drv.(*memory.Store); ok && err == nil {
			r.memory[cname] = st
		}
		return drv, err
	}
	real, err := factory(cfg)
	if err != nil {
		return nil, err
	}
	if ld, ok := real.(kisflow.Loader); ok {
		return &testLoadDouble{testDouble: d, real: ld, mock: r.mocks[cname]}, nil
	}
	if _, ok := real.(driver.Invoker); ok {
		if m := r.mocks[cname]; m != nil && m.Provider != "" {
			return r.provider(cname, m.Provider)
		}
	}
	return d, nil
}

// testDouble records the rows written through a connector.
type testDouble struct {
	run  *testRun
	name string
}

func (d *testDouble) Start(context.Context) error { return nil }
func (d *testDouble) Close(context.Context) error { return nil }

// Write records rows: the flow's output when the connector is its sink.
func (d *testDouble) Write(_ context.Context, rows []any) error {
	d.run.mu.Lock()
	defer d.run.mu.Unlock()
	for _, row := range rows {
		n := normalize(row)
		if d.name == d.run.sink {
			d.run.out = append(d.run.out, n)
		} else {
			d.run.written[d.name] = append(d.run.written[d.name], n)
		}
	}
	return nil
}

// Call records what a Go function saves through Connector.Call, as the
// memory connector does.
func (d *testDouble) Call(ctx context.Context, _ *kisflow.Connector, _ kisflow.Flow, args any) (any, error) {
	if rows, ok := args.([]any); ok {
		return nil, d.Write(ctx, rows)
	}
	return nil, d.Write(ctx, []any{args})
}

// testLoadDouble answers a YAML Load from a test's mock records: a record
// is a row's when the connector's own key (a load_query's field, a Redis
// key template) reads the same key from both.
type testLoadDouble struct {
	*testDouble
	real kisflow.Loader
	mock *testMock
}

// LoadLookup wraps the real driver's lookup: its keys, the mock's records.
func (d *testLoadDouble) LoadLookup(params map[string]string) (kisflow.Lookup, error) {
	lk, err := d.real.LoadLookup(params)
	if err != nil {
		return nil, err
	}
	return &testLookup{real: lk, name: d.name, mock: d.mock}, nil
}

// LoadParams is the real driver's.
func (d *testLoadDouble) LoadParams() []string { return d.real.LoadParams() }

type testLookup struct {
	real  kisflow.Lookup
	name  string
	mock  *testMock
	once  sync.Once
	index map[string]map[string]any
	err   error
}

func (l *testLookup) Key(row map[string]any) (any, error) { return l.real.Key(row) }

func (l *testLookup) Fetch(_ context.Context, keys []any) ([]map[string]any, error) {
	l.once.Do(func() {
		l.index = map[string]map[string]any{}
		if l.mock == nil {
			return
		}
		for i, rec := range l.mock.Records {
			m, _ := normalize(jsonSafe(rec)).(map[string]any)
			k, err := l.real.Key(m)
			if err != nil {
				l.err = stream.Fatal(fmt.Errorf("mocks.%s.records[%d]: %w (a record carries the fields its key reads)", l.name, i, err))
				return
			}
			if kt := fields.KeyText(k); l.index[kt] == nil {
				l.index[kt] = m
			}
		}
	})
	if l.err != nil {
		return nil, l.err
	}
	out := make([]map[string]any, len(keys))
	for i, k := range keys {
		if rec := l.index[fields.KeyText(k)]; rec != nil {
			out[i] = maps.Clone(rec)
		}
	}
	return out, nil
}

// testSource feeds a test's input rows, as JSON text, then ends like a
// file does.
type testSource struct {
	rows []string
	next int
}

func (s *testSource) Start(context.Context) error { return nil }
func (s *testSource) Close(context.Context) error { return nil }

// OpenSource opens the input from its first row.
func (s *testSource) OpenSource(context.Context, stream.SourceOptions) (stream.Source, error) {
	s.next = 0
	return s, nil
}

// Read returns up to max rows, and io.EOF with the last ones.
func (s *testSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var msgs []*stream.Message
	for s.next < len(s.rows) && len(msgs) < max {
		msgs = append(msgs, &stream.Message{Payload: s.rows[s.next], ID: fmt.Sprintf("input[%d]", s.next)})
		s.next++
	}
	if s.next >= len(s.rows) {
		return msgs, io.EOF
	}
	return msgs, nil
}

// Ack does nothing: the input is read once.
func (s *testSource) Ack(context.Context, []*stream.Message) error { return nil }

// testLetters records a test's dead letters.
type testLetters struct{ run *testRun }

func (t testLetters) Write(_ context.Context, rows []any) error {
	t.run.mu.Lock()
	defer t.run.mu.Unlock()
	for _, row := range rows {
		var dl *stream.DeadLetter
		switch x := row.(type) {
		case *stream.DeadLetter:
			dl = x
		case stream.DeadLetter:
			dl = &x
		default:
			t.run.letters = append(t.run.letters, gotLetter{reason: "(not a dead letter)", row: normalize(row)})
			continue
		}
		t.run.letters = append(t.run.letters, gotLetter{fn: dl.Func, reason: dl.Error, row: normalize(dl.Payload)})
	}
	return nil
}

// testCheckpoints keeps a test's positions in memory.
type testCheckpoints struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *testCheckpoints) Position(_ context.Context, stream string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[stream], nil
}

func (c *testCheckpoints) SavePosition(_ context.Context, stream, position string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[stream] = position
	return nil
}
