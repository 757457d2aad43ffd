package kisflow

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/engine"
	"github.com/kisflow-go/kisflow/internal/flatjson"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
	"github.com/kisflow-go/kisflow/window"
)

// windowHandler is the body of a Calculate function with a window block:
// one window.Operator for the function's step in the flow, shared by
// every instance of the flow (a job's worker forks) behind a mutex, and
// alive across runs. Rows reach it in the order the runs take the lock.
type windowHandler struct {
	name string
	tick time.Duration // processing time: how often an idle stream ticks; 0 for event time

	mu   sync.Mutex
	op   *window.Operator
	spec window.Spec
	seq  uint64 // the Seq of the saved state op holds; 0: a new operator
	last uint64 // the largest Seq written or read
}

// windowSaved is the state of a window function as a job keeps it, an
// entry of its keyed state (see savedWindow): the operator's
// snapshot and the number of the write that made it, which tells whether
// the operator still holds what the state machinery says is current.
type windowSaved struct {
	Seq  uint64 `json:"seq"`
	Op   []byte `json:"op"`
	Open int    `json:"open"` // the open window-groups
}

func newWindowHandler(fc *config.Func) (*windowHandler, error) {
	spec, err := fc.Window.Spec()
	if err != nil {
		return nil, fmt.Errorf("function %q: window: %w", fc.FName, err)
	}
	op, err := window.New(spec)
	if err != nil {
		return nil, fmt.Errorf("function %q: %w", fc.FName, err)
	}
	h := &windowHandler{name: fc.FName, op: op, spec: spec}
	if spec.TimeField == "" {
		h.tick = idleTick(spec)
	}
	return h, nil
}

// idleTick is how often a stream that reads nothing closes the windows of
// a processing-time spec: a quarter of its shortest span (the size of a
// tumbling window, the slide of a sliding one, the gap of a session),
// between 10ms and 1s.
func idleTick(spec window.Spec) time.Duration {
	span := spec.Size
	switch spec.Type {
	case window.Sliding:
		span = spec.Slide
	case window.Session:
		span = spec.Gap
	}
	return min(max(span/4, 10*time.Millisecond), time.Second)
}

// open returns the number of open windows (window-groups) it holds.
func (h *windowHandler) open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.op.Len()
}

func (h *windowHandler) signature() string { return "YAML window" }

func (h *windowHandler) bind(fl *flow, layer int) binding {
	return &windowBinding{h: h, fl: fl, layer: layer, rows: rowReader{fl: fl}}
}

// process adds rows and returns what closed: with control set (a flush
// run, see flow.flush), also what processing time closed (tick) or
// everything (final). With saved set, the operator first takes the state
// saved reads as current, and its new state is written there.
func (h *windowHandler) process(rows []map[string]any, ctl flushMode, saved *savedWindow, clk state.Clock) ([]map[string]any, []window.Rejected, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if saved != nil {
		if err := saved.sync(h); err != nil {
			return nil, nil, err
		}
	}
	var out []map[string]any
	var rej []window.Rejected
	// With the stream's event time, rows are judged against its watermark
	// before their batch, and the batch's closes what it passed.
	out = append(out, streamAdvance(h, clk.Watermark, clk)...)
	if len(rows) > 0 {
		var more []map[string]any
		more, rej = h.op.Process(rows)
		out = append(out, more...)
	}
	out = append(out, streamAdvance(h, clk.Fire, clk)...)
	switch {
	case ctl == flushFinal:
		out = append(out, h.op.Flush()...)
	case h.tick > 0:
		out = append(out, h.op.Tick()...)
	}
	if saved != nil && (len(rows) > 0 || len(out) > 0) {
		if err := saved.write(h); err != nil {
			return nil, nil, err
		}
	}
	return out, rej, nil
}

// savedWindow is where the state of a window function of a job is kept:
// an entry of the job's keyed state, changed by each batch and committed
// with it (in the exactly-once sink's transaction, or with the position in
// the checkpoint store), loaded when the job starts. The operator is a
// cache of that entry: when a batch is returned to its source or a run
// fails, the state machinery drops or rolls back its change, and the next
// run finds an entry other than the one the operator last wrote and
// restores the operator from it.
type savedWindow struct {
	fl *flow
	x  *state.Txn
	id state.ID
}

// savedWindowOf returns where the window of step layer of fl's run is
// kept, nil when it is not: outside a job, when nothing stores the job's
// state, or with several workers (the window is shared by all of them
// while keyed state is per worker).
func savedWindowOf(fl *flow, layer int) *savedWindow {
	x := fl.state
	if x == nil || !x.Kept() || x.Lanes() != 1 {
		return nil
	}
	return &savedWindow{fl: fl, x: x, id: state.ID{Name: "kisflow.window/" + strconv.Itoa(layer) + "/" + fl.c.funcs[layer].FName}}
}

// sync makes h's operator hold the state the run's Txn reads as current.
func (s *savedWindow) sync(h *windowHandler) error {
	e, ok, err := s.x.Get(s.id)
	if err != nil {
		return err
	}
	var v windowSaved
	if ok {
		if v, err = decodeEntry[windowSaved](s.fl, s.id.Name, e); err != nil {
			return stream.Fatal(fmt.Errorf("function %q: saved windows: %w", h.name, err))
		}
	}
	if v.Seq == h.seq {
		return nil
	}
	if !ok {
		op, err := window.New(h.spec)
		if err != nil {
			return err
		}
		h.op = op
	} else if err := h.op.Restore(v.Op); err != nil {
		if v.Open > 0 {
			return stream.Fatal(fmt.Errorf("function %q: %d open windows saved by an earlier run cannot be restored (%w): restore the window block they were saved with and let the run close them, or delete state entry %q of the flow to drop them", h.name, v.Open, err, s.id.Name))
		}
		// Nothing open (the window block changed after its windows
		// closed): start afresh.
		if h.op, err = window.New(h.spec); err != nil {
			return err
		}
	}
	h.seq, h.last = v.Seq, max(h.last, v.Seq)
	return nil
}

// write sets the entry to h's operator's state.
func (s *savedWindow) write(h *windowHandler) error {
	snap, err := h.op.Snapshot()
	if err != nil {
		return err
	}
	h.last++
	h.seq = h.last
	return s.x.Put(s.id, windowSaved{Seq: h.seq, Op: snap, Open: h.op.Len()}, 0)
}

type windowBinding struct {
	h     *windowHandler
	fl    *flow
	layer int
	rows  rowReader
	flat  flatjson.Decoder
	maps  []map[string]any
	at    []int            // at[i] is the input position of maps[i]
	pool  []map[string]any // maps JSON rows are decoded into, reused from run to run
}

func (b *windowBinding) call(ctx context.Context, in []any) error {
	b.maps, b.at = b.maps[:0], b.at[:0]
	for i, row := range in {
		m, err := b.fields(row)
		if err != nil {
			b.fl.reject(b.layer, i, row, err)
			continue
		}
		b.maps, b.at = append(b.maps, m), append(b.at, i)
	}
	out, rej, err := b.h.process(b.maps, b.fl.flushing, savedWindowOf(b.fl, b.layer), b.fl.clock)
	if err != nil {
		clear(b.maps)
		return err
	}
	for _, r := range rej {
		i := b.at[r.Index]
		err := r.Err
		if errors.Is(err, window.ErrLate) || errors.Is(err, window.ErrTooLate) {
			// Late rows are data a window turns away by design, not a
			// broken flow: dead-lettered, but no failure for the streak.
			err = stream.Expected(err)
		}
		b.fl.reject(b.layer, i, in[i], err)
	}
	for _, r := range out {
		b.fl.run.Commit(r)
	}
	clear(b.maps)
	for _, m := range b.pool {
		clear(m) // keep no value of this run alive
	}
	if b.fl.flushing != flushNone {
		// A flush goes on to the windows further on whatever this one emitted.
		b.fl.run.Act(engine.Action{ForceEntryNext: true})
	}
	return nil
}

// fields reads a row as fields. The operator keeps nothing of the maps it
// is given, so flat JSON rows are decoded into maps of the binding's own,
// reused; other rows are read as every YAML function reads them.
func (b *windowBinding) fields(row any) (map[string]any, error) {
	var data []byte
	switch v := row.(type) {
	case string:
		data = unsafe.Slice(unsafe.StringData(v), len(v))
	case []byte:
		data = v
	default:
		return b.rows.fields(row, false)
	}
	n := len(b.maps)
	if n == len(b.pool) {
		b.pool = append(b.pool, make(map[string]any, 8))
	}
	if m := b.pool[n]; b.flat.DecodeInto(m, data) {
		return m, nil
	}
	return b.rows.fields(row, false)
}

// flushMode says what a run without source rows closes (see flow.flush).
type flushMode int

const (
	flushNone  flushMode = iota // an ordinary run
	flushTick                   // what processing time closed
	flushFinal                  // every open window: the source is exhausted
)

// flush runs the flow with no source rows: each window function emits what
// closed (final: every window it holds) and the functions after it run on
// those rows; functions given no rows in such a run are skipped.
func (fl *flow) flush(ctx context.Context, final bool) (Result, error) {
	fl.flushing = flushTick
	if final {
		fl.flushing = flushFinal
	}
	defer func() { fl.flushing = flushNone }()
	fl.run.Reset()
	return fl.runOnce(ctx)
}

// windowed reports whether the flow has a window function, and the most
// often an idle stream must tick for its processing-time windows (0: none).
func (c *compiled) windowed() (has bool, tick time.Duration) {
	for _, h := range c.handlers {
		if w, ok := h.(*windowHandler); ok {
			has = true
			if w.tick > 0 && (tick == 0 || w.tick < tick) {
				tick = w.tick
			}
		}
	}
	return has, tick
}

// WindowState is the state of one window function in a flow of an engine:
// its open windows, watermark and, under late: update, the windows kept
// for late rows. A store that commits state with each batch saves its
// Snapshot and, before the flow runs again, Restores it. It is safe for
// concurrent use with the flow's runs.
type WindowState struct{ h *windowHandler }

// Snapshot encodes the window's state (see window.Operator.Snapshot).
func (w *WindowState) Snapshot() ([]byte, error) {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	return w.h.op.Snapshot()
}

// Restore replaces the window's state with a snapshot of a window with the
// same spec (see window.Operator.Restore).
func (w *WindowState) Restore(data []byte) error {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	return w.h.op.Restore(data)
}

// WindowState returns the state of the window of step step (0-based) of
// flow, compiling the flow (and starting its connectors) when it is not
// yet. The state is the one every instance of the flow in this engine
// shares, a Job's included.
func (e *Engine) WindowState(ctx context.Context, flowName string, step int) (*WindowState, error) {
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	c, err := e.compile(ctx, flowName)
	if err != nil {
		return nil, err
	}
	if step < 0 || step >= len(c.handlers) {
		return nil, fmt.Errorf("flow %q has no step %d", flowName, step)
	}
	h, ok := c.handlers[step].(*windowHandler)
	if !ok {
		return nil, fmt.Errorf("flow %q: step %d (function %q) has no window", flowName, step, c.funcs[step].FName)
	}
	return &WindowState{h: h}, nil
}

// checkWindows warns of a window function that an enabled stream flow
// runs before a function that may fail a batch transiently (a Go
// function, a YAML Load or Save): the runtime retries such a batch from
// its first function, and the window takes its rows again. It also warns
// of an event-time window in a flow with workers > 1: the workers' parts
// reach the window in the order they finish, so which rows are late
// depends on that order.
func (r *Registry) checkWindows(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range s.FlowNames() {
		fl := s.Flows[name]
		if !fl.Enabled() || fl.Stream == nil {
			continue
		}
		for i, st := range fl.Flows {
			fc := s.Funcs[st.FName]
			if _, goBody := r.handler(st.FName); fc == nil || fc.Window == nil || goBody {
				continue
			}
			if fc.Window.TimeField != "" && fl.Stream.Workers > 1 {
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindFunc, fc.FName, "window"), Severity: config.SevWarning,
					Msg: fmt.Sprintf("function %q: flow %q runs %d workers: their parts of the stream reach this event-time window in the order they finish, so the watermark and which rows are late depend on that order; use workers: 1 for a flow with an event-time window", fc.FName, name, fl.Stream.Workers)})
			}
			for _, next := range fl.Flows[i+1:] {
				nc := s.Funcs[next.FName]
				_, goBody := r.handler(next.FName)
				if nc == nil || !goBody && (nc.ConfigOnly() || nc.Window != nil) {
					continue
				}
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindFunc, fc.FName, "window"), Severity: config.SevWarning,
					Msg: fmt.Sprintf("function %q: flow %q runs %q after this window: a batch it fails is retried from the start and the window counts its rows again; run the window last, or follow it with filter, calc and window functions only", fc.FName, name, next.FName)})
				break
			}
		}
	}
	return probs
}
