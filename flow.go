package kisflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/engine"
	"github.com/kisflow-go/kisflow/internal/flatjson"
	"github.com/kisflow-go/kisflow/internal/runtime"
	"github.com/kisflow-go/kisflow/internal/state"
)

// Flow is a running instance of a flow: functions call it to read their input,
// commit rows and ask for actions; callers commit source rows and Run it.
//
// A Flow is used by one goroutine at a time. Fork returns an independent
// instance that can run in parallel; all instances share connectors.
type Flow interface {
	// Name is the flow's flow_name.
	Name() string
	// ID identifies this instance; each Fork has its own.
	ID() string
	// Config is the flow's configuration. Do not modify it.
	Config() *config.Flow

	// CommitRow adds a row: to the next run's input when called outside a
	// run, to the running function's output inside one.
	//
	// The row is kept as given, not copied: a pointer *T reaches a []*T
	// function as that same pointer, so a function that changes its rows
	// changes the caller's values, and one pointer committed to several
	// forks running in parallel is a data race. Commit a copy to each
	// fork (or commit values T, which each function decodes afresh).
	CommitRow(row any) error
	// CommitRowBatch adds every element of a slice as CommitRow does (the
	// elements are not copied either: see CommitRow).
	CommitRowBatch(rows any) error
	// Input is the running function's input, as the rows arrived (the
	// pending source rows outside a run).
	Input() []any
	// Next records actions for the running function (see Action). The
	// actions of one call combine; a later call replaces an earlier one, as
	// in KisFlow: f.Next(DataReuse) then f.Next() asks for nothing.
	Next(actions ...Action) error

	// Function is the running function, nil outside a run.
	Function() *Function
	// Param is Function().Param(key) for the running function.
	Param(key string) string
	// Params is Function().Params() for the running function.
	Params() map[string]string
	// Connector is the running function's connector.
	Connector() (*Connector, error)

	// Cache returns a value cached on this flow instance.
	Cache(key string) (any, bool)
	// SetCache caches a value on this flow instance for ttl (<= 0: forever);
	// a nil value deletes key, so that Cache reports it absent.
	SetCache(key string, value any, ttl time.Duration)
	// Meta returns a metadata value of this flow instance.
	Meta(key string) any
	// SetMeta sets a metadata value of this flow instance; nil deletes it.
	SetMeta(key string, value any)
	// Logger is the engine's logger with the flow's name and ID.
	Logger() *slog.Logger

	// Run runs the committed source rows through the functions, layer by
	// layer, and returns the last layer's rows. The source rows are consumed
	// whatever the outcome. A failing function ends the run with a
	// *FuncError wrapping the function's error (test it with errors.Is
	// and errors.As, not == or a type switch); the rows it committed are
	// dropped.
	//
	// ctx is honoured between functions: with ctx cancelled or past its
	// deadline before a function starts, the run stops there and returns
	// ctx's error (flow "F": context canceled); a ctx done before Run runs
	// no function at all. A function sees ctx and stops as it sees fit.
	// (The original KisFlow ran every function whatever ctx said.)
	Run(ctx context.Context) (Result, error)
	// Fork returns an independent instance of the same flow sharing the
	// connectors, with empty buffers, cache and metadata.
	Fork() Flow
}

// Result is what a run produced.
type Result struct {
	// Rows is the last layer's output. It is valid until the next Run of
	// the same instance.
	Rows []any
	// Rejected are the rows a function could not receive (see RowError),
	// with the function and the row's position.
	Rejected []*RowError
}

// flow implements Flow over an engine.Run.
type flow struct {
	store
	eng      *Engine
	c        *compiled
	cfg      *config.Flow
	id       string
	funcs    []*Function
	run      *engine.Run
	rejected []*RowError
	log      *slog.Logger
	codec    Codec

	mustDec   flatjson.Decoder // reads JSON text rows for the source.must check
	checkMust bool             // a Job's instance: source rows lacking a source.must field are rejected (and dead-lettered)
	// textRows: an instance of Engine.Invoke, whose rows leave as JSON
	// text: a YAML function writes its output rows as JSON text when it
	// can do so without building them as maps first.
	textRows bool

	call  filter.Call    // of the flow chain, reused from run to run
	chain filter.Handler // the flow's filters around execute
	saved []any          // the source rows, kept for a retried run
	out   []any          // the last execute's output
	state *state.Txn     // the keyed state of the run a Job gives it; nil outside a Job
	clock state.Clock    // the event time of the run a Job gives it

	firing map[int][]state.Timer // the due timers of a timer run, by step
	steps  []*step               // the engine's steps, in the order of the flow

	flushing flushMode // what the current run closes (see flush)
}

func (fl *flow) Name() string         { return fl.cfg.FlowName }
func (fl *flow) ID() string           { return fl.id }
func (fl *flow) Config() *config.Flow { return fl.cfg }
func (fl *flow) Logger() *slog.Logger { return fl.log }
func (fl *flow) Input() []any         { return fl.run.Input() }

func (fl *flow) CommitRow(row any) error {
	fl.run.Commit(row)
	return nil
}

func (fl *flow) CommitRowBatch(rows any) error {
	switch rs := rows.(type) {
	case []any:
		fl.run.CommitBatch(rs)
		return nil
	case nil:
		return nil
	}
	v := reflect.ValueOf(rows)
	if v.Kind() != reflect.Slice && v.Kind() != reflect.Array {
		return fmt.Errorf("CommitRowBatch: %T is not a slice", rows)
	}
	for i := range v.Len() {
		fl.run.Commit(v.Index(i).Interface())
	}
	return nil
}

func (fl *flow) Next(actions ...Action) error {
	if !fl.run.Running() {
		return errors.New("Next called outside a running function")
	}
	var a Actions
	for _, act := range actions {
		if act != nil {
			act(&a)
		}
	}
	fl.run.Act(engine.Action(a))
	return nil
}

func (fl *flow) Function() *Function {
	if i := fl.run.Current(); i >= 0 {
		return fl.funcs[i]
	}
	return nil
}

func (fl *flow) Param(key string) string {
	if fn := fl.Function(); fn != nil {
		return fn.Param(key)
	}
	return ""
}

func (fl *flow) Params() map[string]string {
	if fn := fl.Function(); fn != nil {
		return fn.Params()
	}
	return nil
}

func (fl *flow) Connector() (*Connector, error) {
	fn := fl.Function()
	if fn == nil {
		return nil, fmt.Errorf("flow %q: Connector called outside a running function", fl.Name())
	}
	return fn.Connector()
}

func (fl *flow) Run(ctx context.Context) (Result, error) {
	res, err := fl.runOnce(ctx)
	if re, ok := err.(*RejectedError); ok {
		fl.log.WarnContext(ctx, "rows rejected: they lacked a source.must field, could not be converted to a function's type or failed its expression", "rejected", len(re.Rows), "first", re.Rows[0].Error())
	}
	return res, err
}

// runOnce is Run without its log of rejected rows: the streaming runtime
// dead-letters them itself.
func (fl *flow) runOnce(ctx context.Context) (Result, error) {
	fl.rejected = fl.rejected[:0]
	dbg := fl.log.Enabled(ctx, slog.LevelDebug)
	var start time.Time
	if dbg {
		start = time.Now()
		fl.log.DebugContext(ctx, "flow run starts", "rows", fl.run.Pending())
	}
	fl.call.In, fl.call.Out, fl.call.Attempt = fl.run.Pending(), 0, 1
	if fl.c.retryRuns {
		fl.saved = append(fl.saved[:0], fl.run.Input()...)
	}
	err := fl.chain(ctx, &fl.call)
	fl.run.Reset() // source rows are consumed whatever the filters did
	clear(fl.saved)
	fl.saved = fl.saved[:0]
	out := fl.out
	fl.out = nil
	res := Result{Rows: out}
	if len(fl.rejected) > 0 {
		res.Rejected = append([]*RowError(nil), fl.rejected...)
		clear(fl.rejected)
	}
	if err != nil {
		res.Rows = nil
		var se *engine.StepError
		if errors.As(err, &se) {
			err = &FuncError{Flow: fl.Name(), Func: fl.funcs[se.Index].Name(), Layer: se.Index, Err: se.Err}
		} else {
			err = fmt.Errorf("flow %q: %w", fl.Name(), err)
		}
		if dbg {
			fl.log.DebugContext(ctx, "flow run failed", "err", err)
		}
		return res, err
	}
	if dbg {
		fl.log.DebugContext(ctx, "flow run done", "rows", len(out), "rejected", len(res.Rejected), "took", time.Since(start))
	}
	if len(res.Rejected) > 0 {
		return res, &RejectedError{Flow: fl.Name(), Rows: res.Rejected}
	}
	return res, nil
}

// execute is the centre of the flow's chain: one pass of the engine over
// the source rows (restored from saved when a filter runs it again).
func (fl *flow) execute(ctx context.Context, c *filter.Call) (err error) {
	defer undoOnError(fl.state, &err)()
	if c.Attempt > 1 {
		fl.rejected = fl.rejected[:0]
		fl.run.Reset()
		fl.run.CommitBatch(fl.saved)
	}
	if fl.checkMust && len(fl.c.must) > 0 {
		fl.run.KeepSource(fl.carriesMust)
	}
	out, err := fl.run.Execute(ctx)
	fl.out, c.Out = out, len(out)
	return err
}

func (fl *flow) Fork() Flow { return fl.eng.instance(fl.c) }

// carriesMust reports whether source row i carries every field of the
// first function's source.must, and rejects it, naming the fields it
// lacks, when it does not. JSON text is decoded for the check only; the
// function receives the row as it came.
func (fl *flow) carriesMust(i int, row any) bool {
	var m any = row
	reason := ""
	switch v := row.(type) {
	case string:
		m, reason = fl.jsonFields(unsafe.Slice(unsafe.StringData(v), len(v)))
	case []byte:
		m, reason = fl.jsonFields(v)
	case json.RawMessage:
		m, reason = fl.jsonFields(v)
	}
	var missing []string
	for j, path := range fl.c.must {
		if !fields.Has(m, path) {
			missing = append(missing, fl.c.mustNames[j])
		}
	}
	if missing == nil {
		return true
	}
	fl.reject(0, i, row, &MissingFieldError{Fields: missing, Reason: reason})
	return false
}

// jsonFields decodes a JSON object, or says why data is not one.
func (fl *flow) jsonFields(data []byte) (map[string]any, string) {
	if m, ok := fl.mustDec.Decode(data); ok {
		return m, ""
	}
	var m map[string]any
	if err := fl.codec.Unmarshal(data, &m); err != nil {
		return nil, fmt.Sprintf("row is not a JSON object: %v", err)
	}
	if m == nil {
		return nil, "row is JSON null"
	}
	return m, ""
}

func (fl *flow) decode(row any, dst any) error { return decodeRow(fl.codec, row, dst) }

func (fl *flow) reject(layer, index int, row any, err error) {
	fn := fl.funcs[layer].Name()
	fl.rejected = append(fl.rejected, &RowError{Flow: fl.Name(), Func: fn, Layer: layer, Index: index, Row: row, Err: err})
	if fl.run.Running() && fl.run.Current() == layer {
		fl.run.Drop(index) // never handed on by DataReuse
	}
	if m := fl.eng.metrics; m != nil {
		m.RowsRejected.WithLabelValues(fl.Name(), fn).Inc()
	}
}

// step runs one function of one flow instance through its filter chain;
// the centre of the chain turns panics into errors.
type step struct {
	fl    *flow
	index int
	b     binding
	win   bool // the function is a window
	run   *engine.Run
	call  filter.Call
	chain filter.Handler
	in    []any
	count *runtime.Step // a Job's instance: the step's counters, shared by its workers; nil otherwise
}

func (s *step) Call(ctx context.Context, in []any) error {
	if due := s.fl.firing[s.index]; len(due) > 0 {
		if len(in) > 0 {
			if err := s.call1(ctx, in); err != nil {
				return err
			}
		}
		if err := s.fire(ctx, due); err != nil {
			return err
		}
		s.run.Act(engine.Action{ForceEntryNext: true}) // on to the functions further on
		return nil
	}
	if len(in) == 0 && !s.win && s.fl.flushing != flushNone {
		s.run.Act(engine.Action{ForceEntryNext: true}) // on to the windows further on
		return nil
	}
	return s.call1(ctx, in)
}

// call1 calls the function on in through its filter chain.
func (s *step) call1(ctx context.Context, in []any) error {
	s.in = in
	s.call.In, s.call.Out, s.call.Attempt = len(in), 0, 1
	if s.count == nil {
		err := s.chain(ctx, &s.call)
		s.in = nil
		return err
	}
	began := s.count.Enter()
	err := s.chain(ctx, &s.call)
	s.count.Leave(began, len(in), s.call.Out, err != nil)
	s.in = nil
	return err
}

// centre calls the function once; a retried call starts from a clean layer.
func (s *step) centre(ctx context.Context, c *filter.Call) (err error) {
	defer undoOnError(s.fl.state, &err)() // runs after the recover below set err
	if c.Attempt > 1 {
		s.run.ResetLayer()
		if s.count != nil {
			s.count.Retried()
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
		c.Out = s.run.Produced()
	}()
	return s.b.call(ctx, s.in)
}

// undoOnError returns a function, to defer, that undoes the keyed state
// changes x records from now on when *err is set when it runs: the changes
// of a call or run that failed. With no state it does nothing.
func undoOnError(x *state.Txn, err *error) func() {
	if x == nil {
		return noop
	}
	sp := x.Savepoint()
	return func() {
		if *err != nil {
			x.Rollback(sp)
		}
	}
}

func noop() {}
