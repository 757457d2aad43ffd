package runtime

import (
	"sync/atomic"
	"time"
)

// Step counts one step (one function of the flow) across every worker
// of a runner. The flow updates it once per call of the function, never
// per row: a few atomic additions per batch and step. Make the steps of a
// flow with NewSteps, give them to the flow's instances (which call
// Enter and Leave) and to the runner (Config.Steps, which counts the
// step's dead letters and retries), and read them with Runner.StepStats.
type Step struct {
	name                                          string
	calls, in, out, errs, retries, dead, busy, ns atomic.Int64
	_                                             [64]byte // the next step's counters on another cache line
}

// NewSteps returns the counters of a flow's steps, one per function name
// in the order of the flow.
func NewSteps(names []string) []*Step {
	out := make([]*Step, len(names))
	for i, n := range names {
		out[i] = &Step{name: n}
	}
	return out
}

// Enter tells that a worker's batch entered the step; pass what it
// returns to Leave.
func (s *Step) Enter() time.Time {
	s.busy.Add(1)
	return time.Now()
}

// Leave tells that the call begun at start took in rows and committed out
// rows, and whether it returned an error.
func (s *Step) Leave(start time.Time, in, out int, failed bool) {
	s.ns.Add(int64(time.Since(start)))
	s.calls.Add(1)
	s.in.Add(int64(in))
	s.out.Add(int64(out))
	if failed {
		s.errs.Add(1)
	}
	s.busy.Add(-1)
}

// Retried counts a call of the function retried by its retry filter.
func (s *Step) Retried() { s.retries.Add(1) }

// StepStats are a step's counters so far.
type StepStats struct {
	Func    string `json:"func"`
	Calls   int64  `json:"calls"`   // calls of the function (one per batch, worker and layer)
	In      int64  `json:"in"`      // rows the function was called with
	Out     int64  `json:"out"`     // rows it committed
	Errors  int64  `json:"errors"`  // calls that returned an error
	Retries int64  `json:"retries"` // calls retried by its retry filter, and batch runs retried for its errors
	Dead    int64  `json:"dead"`    // rows and messages dead-lettered for it (its errors and rejections)
	Busy    int64  `json:"busy"`    // batches inside the function now, at most one per worker
	BusyNs  int64  `json:"busy_ns"` // time spent in the function, summed over workers, in nanoseconds
}

// Stats returns the step's counters so far; safe for concurrent use.
func (s *Step) Stats() StepStats {
	return StepStats{Func: s.name, Calls: s.calls.Load(), In: s.in.Load(), Out: s.out.Load(), Errors: s.errs.Load(),
		Retries: s.retries.Load(), Dead: s.dead.Load(), Busy: s.busy.Load(), BusyNs: s.ns.Load()}
}

// StepStats returns the counters of each step of Config.Steps; safe for
// concurrent use.
func (r *Runner) StepStats() []StepStats {
	out := make([]StepStats, len(r.cfg.Steps))
	for i, s := range r.cfg.Steps {
		out[i] = s.Stats()
	}
	return out
}

// CheckpointedAt returns when the runner last made its progress durable:
// a position committed (saved in the checkpoint store, or in an
// exactly-once sink's transaction) or, for a source whose position its
// broker keeps, messages acknowledged. ok is false before the first.
func (r *Runner) CheckpointedAt() (at time.Time, ok bool) {
	n := r.checkpointAt.Load()
	if n == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

func (r *Runner) checkpointed() { r.checkpointAt.Store(time.Now().UnixNano()) }

// stepOf returns the step of function fn, nil for none (fn "", or a flow
// without Config.Steps). A function named twice in a flow counts on its
// first step.
func (r *Runner) stepOf(fn string) *Step {
	for _, s := range r.cfg.Steps {
		if s.name == fn {
			return s
		}
	}
	return nil
}

// retried counts a batch run retried for function fn's error.
func (r *Runner) retried(fn string) {
	r.retries.Add(1)
	if s := r.stepOf(fn); s != nil {
		s.retries.Add(1)
	}
}

// deadFor counts a dead letter of function fn.
func (r *Runner) deadFor(fn string) {
	if s := r.stepOf(fn); s != nil {
		s.dead.Add(1)
	}
}
