// Package engine runs one batch through a flow's functions, layer by layer.
//
// It knows nothing about YAML, registries or typed rows: a flow is a list of
// steps, each a Step that reads its input rows and commits output rows through
// the Run it is given. The public kisflow package builds the steps and wraps a
// Run in its Flow type.
//
// The rules kept here are DESIGN.md's semantics 1 and 2: a layer's input is
// the previous layer's output; a layer with no output ends the run unless the
// function asked ForceEntryNext; rows committed by a function that failed are
// discarded; JumpFunc re-runs a named function over its predecessor's output,
// bounded by MaxJumps; Abort wins over every other action.
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// DefaultMaxJumps bounds the JumpFunc actions of one run when Plan.MaxJumps is zero.
const DefaultMaxJumps = 1000

// ErrTooManyJumps is returned (wrapped) when a run jumps more often than its bound.
var ErrTooManyJumps = errors.New("too many jumps")

// Step is one function of a flow bound to one flow instance.
type Step interface {
	// Call runs the function on in. It commits output through the Run.
	Call(ctx context.Context, in []any) error
}

// Action is what a function asked of the flow for the step it is running.
type Action struct {
	DataReuse      bool   // the next layer reads this layer's input
	ForceEntryNext bool   // go on even when this layer committed nothing
	JumpFunc       string // run this function next
	Abort          bool   // end the run after this layer
}

// Plan is the shape of a flow shared by all its instances: the step names in
// order and the jump bound. It is read-only once built and safe to share.
type Plan struct {
	names    []string
	index    map[string]int
	maxJumps int
}

// NewPlan returns the plan of a flow whose functions are names, in order.
// maxJumps <= 0 selects DefaultMaxJumps.
func NewPlan(names []string, maxJumps int) *Plan {
	if maxJumps <= 0 {
		maxJumps = DefaultMaxJumps
	}
	idx := make(map[string]int, len(names))
	for i, n := range names {
		if _, dup := idx[n]; !dup {
			idx[n] = i
		}
	}
	return &Plan{names: names, index: idx, maxJumps: maxJumps}
}

// Len is the number of steps.
func (p *Plan) Len() int { return len(p.names) }

// Name is the name of step i.
func (p *Plan) Name(i int) string { return p.names[i] }

// StepError is a step's failure, with the position of the step.
type StepError struct {
	Index int
	Err   error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %d: %v", e.Index, e.Err) }

// Unwrap returns the step's error.
func (e *StepError) Unwrap() error { return e.Err }

// Run is the per-instance state of a flow: the source rows of the next run,
// one output buffer per layer, and the action of the running step. A Run is
// used by one goroutine at a time; buffers are reused from run to run so a
// steady stream of batches does not allocate per row.
type Run struct {
	plan    *Plan
	steps   []Step
	src     []any
	outs    [][]any
	ran     []bool // outs[i] holds a result of this run
	cur     int    // running step, -1 when idle
	in      []any
	action  Action
	running bool
	dropped []int // positions in in of the rows the running step rejected
}

// NewRun binds steps (one per plan name) into a runnable instance.
func NewRun(p *Plan, steps []Step) *Run {
	if len(steps) != p.Len() {
		panic(fmt.Sprintf("engine: %d steps for a plan of %d", len(steps), p.Len()))
	}
	return &Run{plan: p, steps: steps, outs: make([][]any, len(steps)), ran: make([]bool, len(steps)), cur: -1}
}

// Plan returns the run's plan.
func (r *Run) Plan() *Plan { return r.plan }

// Current is the index of the running step, or -1 outside a run.
func (r *Run) Current() int { return r.cur }

// Running reports whether a step is executing.
func (r *Run) Running() bool { return r.running }

// Commit adds a row: to the running layer's output while a step runs, to the
// source rows of the next run otherwise.
func (r *Run) Commit(row any) {
	if r.running {
		r.outs[r.cur] = append(r.outs[r.cur], row)
		return
	}
	r.src = append(r.src, row)
}

// CommitBatch adds rows as Commit does.
func (r *Run) CommitBatch(rows []any) {
	if r.running {
		r.outs[r.cur] = append(r.outs[r.cur], rows...)
		return
	}
	r.src = append(r.src, rows...)
}

// Pending is the number of source rows waiting for the next Execute.
func (r *Run) Pending() int { return len(r.src) }

// Input is the running step's input (the source rows outside a run).
func (r *Run) Input() []any {
	if r.running {
		return r.in
	}
	return r.src
}

// ResetLayer drops the rows and actions the running step committed so far,
// so that a retried call starts clean.
func (r *Run) ResetLayer() {
	if !r.running {
		return
	}
	clear(r.outs[r.cur])
	r.outs[r.cur] = r.outs[r.cur][:0]
	r.action = Action{}
	r.dropped = r.dropped[:0]
}

// Drop records that the running step rejected its input row i (it could
// not be converted, failed an expression, ...): DataReuse does not hand a
// rejected row on to the next step.
func (r *Run) Drop(i int) {
	if r.running && i >= 0 && i < len(r.in) {
		r.dropped = append(r.dropped, i)
	}
}

// Produced is the number of rows the running step has produced so far (its
// input when it asked DataReuse).
func (r *Run) Produced() int {
	if !r.running {
		return 0
	}
	if r.action.DataReuse {
		return len(r.in)
	}
	return len(r.outs[r.cur])
}

// Act records the action for the running step, replacing an earlier one:
// as in KisFlow, the last call of Next wins.
func (r *Run) Act(a Action) { r.action = a }

// KeepSource keeps, in order, the pending source rows for which keep
// returns true and drops the others; keep gets each row with its position
// among the pending rows.
func (r *Run) KeepSource(keep func(i int, row any) bool) {
	kept := r.src[:0]
	for i, row := range r.src {
		if keep(i, row) {
			kept = append(kept, row)
		}
	}
	clear(r.src[len(kept):])
	r.src = kept
}

// Reset drops pending source rows.
func (r *Run) Reset() {
	clear(r.src)
	r.src = r.src[:0]
}

// reuse appends to dst the rows of in the running step did not reject.
func (r *Run) reuse(dst, in []any) []any {
	if len(r.dropped) == 0 {
		return append(dst, in...)
	}
	slices.Sort(r.dropped)
	d := 0
	for j, row := range in {
		for d < len(r.dropped) && r.dropped[d] < j {
			d++
		}
		if d < len(r.dropped) && r.dropped[d] == j {
			continue
		}
		dst = append(dst, row)
	}
	return dst
}

// Execute runs the pending source rows through the steps and returns the last
// layer's output, which stays valid until the next Execute. The source rows
// are consumed whatever the outcome. On a step failure the rows that step
// committed are dropped and a *StepError is returned.
func (r *Run) Execute(ctx context.Context) (out []any, err error) {
	if r.running {
		return nil, errors.New("flow instance is already running (use Fork for concurrent runs)")
	}
	for i := range r.outs {
		clear(r.outs[i])
		r.outs[i] = r.outs[i][:0]
		r.ran[i] = false
	}
	src := r.src
	defer r.finish(src)
	if len(r.steps) == 0 {
		return nil, nil
	}

	in := src
	jumps := 0
	i := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.cur, r.in, r.action, r.running = i, in, Action{}, true
		r.dropped = r.dropped[:0]
		r.outs[i] = r.outs[i][:0]
		callErr := r.steps[i].Call(ctx, in)
		r.running = false
		if callErr != nil {
			clear(r.outs[i])
			r.outs[i] = r.outs[i][:0]
			return nil, &StepError{Index: i, Err: callErr}
		}
		act := r.action
		if act.DataReuse {
			r.outs[i] = r.reuse(r.outs[i][:0], in)
		}
		r.ran[i] = true
		out = r.outs[i]

		if act.Abort {
			return out, nil
		}
		next := i + 1
		if act.JumpFunc != "" {
			j, ok := r.plan.index[act.JumpFunc]
			if !ok {
				return nil, &StepError{Index: i, Err: fmt.Errorf("jump to %q: no such function in this flow", act.JumpFunc)}
			}
			jumps++
			if jumps > r.plan.maxJumps {
				return nil, &StepError{Index: i, Err: fmt.Errorf("%w: more than %d jumps in one run (last to %q)", ErrTooManyJumps, r.plan.maxJumps, act.JumpFunc)}
			}
			next = j
			// The target re-runs over its predecessor's output of this run;
			// a forward jump past steps that did not run carries this
			// layer's output instead.
			switch {
			case j == 0:
				in = src
			case r.ran[j-1]:
				in = r.outs[j-1]
			default:
				in = out
			}
			if j <= i {
				for k := j; k <= i; k++ {
					r.ran[k] = false
				}
			}
			if len(in) == 0 && !act.ForceEntryNext {
				return in, nil
			}
			i = next
			continue
		}
		if next >= len(r.steps) {
			return out, nil
		}
		if len(out) == 0 && !act.ForceEntryNext {
			return out, nil
		}
		in = out
		i = next
	}
}

// finish ends a run: the source rows src are consumed and the instance
// is ready for the next.
func (r *Run) finish(src []any) {
	clear(src)
	r.src = src[:0]
	r.running = false
	r.cur = -1
	r.in = nil
	r.action = Action{}
}

// ExecuteFirst runs the first step alone over the pending source rows and
// returns its output and the action it asked for, without following the
// action: a provider of remote functions runs one function for a flow in
// another process, which follows the action itself. With DataReuse the
// output is the input. The output is valid until the next Execute; the
// source rows are consumed whatever the outcome.
func (r *Run) ExecuteFirst(ctx context.Context) (out []any, act Action, err error) {
	if r.running {
		return nil, Action{}, errors.New("flow instance is already running (use Fork for concurrent runs)")
	}
	if len(r.steps) == 0 {
		return nil, Action{}, errors.New("flow has no step")
	}
	src := r.src
	defer r.finish(src)
	if err := ctx.Err(); err != nil {
		return nil, Action{}, err
	}
	clear(r.outs[0])
	r.cur, r.in, r.action, r.running = 0, src, Action{}, true
	r.outs[0] = r.outs[0][:0]
	callErr := r.steps[0].Call(ctx, src)
	r.running = false
	if callErr != nil {
		clear(r.outs[0])
		r.outs[0] = r.outs[0][:0]
		return nil, Action{}, &StepError{Index: 0, Err: callErr}
	}
	act = r.action
	if act.DataReuse {
		r.outs[0] = append(r.outs[0][:0], src...)
	}
	return r.outs[0], act, nil
}
