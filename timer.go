package kisflow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/runtime"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/window"
)

// Timer is a named timer per stream key, set by a function of a Job and
// fired by the callback registered for that function (Registry.OnTimer).
// A key has at most one event-time and one processing-time time per
// timer: setting it again moves it. Timers are keyed-state entries: they
// commit with the batch that set them (exactly once with an exactly-once
// sink), are loaded when the job starts, and a fired timer's deletion
// commits with the rows its callback made. Declare a Timer once (a
// package-level variable is fine); it is safe for concurrent use.
type Timer struct{ name string }

// NewTimer declares a timer. Names are per function.
func NewTimer(name string) *Timer { return &Timer{name: name} }

// Name is the timer's name.
func (t *Timer) Name() string { return t.name }

// FiredTimer is a timer that fired, as its callback gets it.
type FiredTimer struct {
	// Timer is the timer's name (see NewTimer).
	Timer string
	// Key is the stream key it was set for: the callback may read and
	// write that key's state.
	Key string
	// Time is the time it was set to.
	Time time.Time
	// EventTime is true for an event-time timer, false for a
	// processing-time one.
	EventTime bool
}

// TimerFunc is the callback of a function's timers (Registry.OnTimer). It
// runs in the function's place in the flow: the rows it commits go on to
// the next functions and the sink like the function's own, committed with
// the timer's deletion. A failing callback is retried by the function's
// policy; one that still fails ends the job.
type TimerFunc func(ctx context.Context, f Flow, t FiredTimer) error

// ErrNoTimer is returned (wrapped) by timer methods called outside a
// function run by a Job.
var ErrNoTimer = errors.New("timers are available only inside a function run by a Job")

func (t *Timer) target(f Flow, key string, event bool) (*state.Txn, state.ID, error) {
	x, fl, err := txnOf(f, t.name)
	if err != nil {
		return nil, state.ID{}, fmt.Errorf("timer %q: %w", t.name, ErrNoTimer)
	}
	fn := fl.Function()
	if fn == nil {
		return nil, state.ID{}, fmt.Errorf("timer %q: %w", t.name, ErrNoTimer)
	}
	return x, state.TimerID(fn.Name(), t.name, key, event), nil
}

// SetEventTime sets key's event-time timer to fire at at: after the rows
// of the batch that moves the flow's watermark (stream.time_field) to at
// or past it, or at the end of a bounded source. Without a time_field only
// the end of a bounded source fires it.
func (t *Timer) SetEventTime(f Flow, key string, at time.Time) error {
	return t.set(f, key, at, true)
}

// SetProcessingTime sets key's processing-time timer to fire once the
// wall clock reaches at (looked at after each batch and at least every
// 100ms while the stream is idle).
func (t *Timer) SetProcessingTime(f Flow, key string, at time.Time) error {
	return t.set(f, key, at, false)
}

func (t *Timer) set(f Flow, key string, at time.Time, event bool) error {
	x, id, err := t.target(f, key, event)
	if err != nil {
		return err
	}
	return timerErr(t.name, x.SetTimer(id, at.UnixMilli()))
}

// Delete deletes key's timers, event-time and processing-time.
func (t *Timer) Delete(f Flow, key string) error {
	for _, event := range []bool{true, false} {
		x, id, err := t.target(f, key, event)
		if err != nil {
			return err
		}
		if _, ok, err := x.TimerAt(id); err != nil || !ok {
			if err != nil {
				return timerErr(t.name, err)
			}
			continue
		}
		if err := x.Delete(id); err != nil {
			return timerErr(t.name, err)
		}
	}
	return nil
}

// EventTime returns the time key's event-time timer is set to, false when
// it is not set.
func (t *Timer) EventTime(f Flow, key string) (time.Time, bool, error) { return t.at(f, key, true) }

// ProcessingTime returns the time key's processing-time timer is set to,
// false when it is not set.
func (t *Timer) ProcessingTime(f Flow, key string) (time.Time, bool, error) {
	return t.at(f, key, false)
}

func (t *Timer) at(f Flow, key string, event bool) (time.Time, bool, error) {
	x, id, err := t.target(f, key, event)
	if err != nil {
		return time.Time{}, false, err
	}
	ms, ok, err := x.TimerAt(id)
	if err != nil || !ok {
		return time.Time{}, false, timerErr(t.name, err)
	}
	return time.UnixMilli(ms).UTC(), true, nil
}

func timerErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("timer %q: %w", name, err)
}

// Watermark returns the flow's event-time watermark that the rows of the
// current run are judged against: the one before their batch was read (a
// row whose time is before it is late). False outside a Job, before any
// event time was seen, or when the stream declares no time_field.
func Watermark(f Flow) (time.Time, bool) {
	fl, ok := f.(*flow)
	if !ok || !fl.clock.Set || fl.clock.Watermark == math.MinInt64 {
		return time.Time{}, false
	}
	return time.UnixMilli(fl.clock.Watermark).UTC(), true
}

// OnTimer registers the callback of the timers that function fname sets.
// A second callback for the same function is an error.
func (r *Registry) OnTimer(fname string, fn TimerFunc) error {
	if fname == "" || fn == nil {
		return errors.New("register timer callback: empty function name or nil callback")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timers == nil {
		r.timers = map[string]TimerFunc{}
	}
	if _, dup := r.timers[fname]; dup {
		return fmt.Errorf("register timer callback of %q: %w", fname, ErrDuplicate)
	}
	r.timers[fname] = fn
	return nil
}

func (r *Registry) timerFunc(fname string) TimerFunc {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.timers[fname]
}

// hasTimers reports whether a function of the flow has a timer callback.
func (c *compiled) hasTimers() bool {
	for _, cb := range c.onTimer {
		if cb != nil {
			return true
		}
	}
	return false
}

// fireTimers runs the callbacks of the timers of the run's lane that are
// due (event-time ones at the watermark the run's clock says, processing
// ones at now), each in its function's place, and the rest of the flow on
// their rows; functions given no rows are skipped.
func (fl *flow) fireTimers(ctx context.Context, now time.Time) (Result, error) {
	x := fl.state
	if x == nil || !fl.c.hasTimers() {
		return Result{}, nil
	}
	due := x.DueTimers(fl.clock.Fire, now.UnixMilli())
	if len(due) == 0 {
		return Result{}, nil
	}
	firing := map[int][]state.Timer{}
	for _, tm := range due {
		fn, _, _ := state.TimerOf(tm.ID)
		layer := -1
		for i, fc := range fl.c.funcs {
			if fc.FName == fn && fl.c.onTimer[i] != nil {
				layer = i
				break
			}
		}
		if layer < 0 {
			// Set by a function this flow no longer runs, or whose
			// callback is gone: nothing can fire it.
			fl.log.WarnContext(ctx, "a due timer has no callback in this flow: it is deleted", "func", fn, "timer", tm.ID.Name, "key", tm.ID.Key)
			if err := x.Delete(tm.ID); err != nil {
				return Result{}, err
			}
			continue
		}
		firing[layer] = append(firing[layer], tm)
	}
	if len(firing) == 0 {
		return Result{}, nil
	}
	fl.firing, fl.flushing = firing, flushTimers
	defer func() { fl.firing, fl.flushing = nil, flushNone }()
	fl.run.Reset()
	return fl.runOnce(ctx)
}

// fire runs the callbacks of the step's due timers, each after deleting
// its timer (a callback may set it again).
func (s *step) fire(ctx context.Context, due []state.Timer) (err error) {
	fl := s.fl
	defer undoOnError(fl.state, &err)()
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	cb := fl.c.onTimer[s.index]
	for _, tm := range due {
		_, name, _ := state.TimerOf(tm.ID)
		if err := fl.state.Delete(tm.ID); err != nil {
			return err
		}
		ft := FiredTimer{Timer: name, Key: tm.ID.Key, Time: time.UnixMilli(tm.At).UTC(), EventTime: tm.Event()}
		if err := cb(ctx, fl, ft); err != nil {
			return fmt.Errorf("timer %q of key %q: %w", name, tm.ID.Key, err)
		}
	}
	return nil
}

// FireTimers runs the due timers of the run's lane (see runtime.TimerFirer).
func (j *jobFlow) FireTimers(ctx context.Context, now time.Time) ([]any, []runtime.Rejected, error) {
	j.enter(ctx)
	defer j.leave()
	return j.result(j.fl.fireTimers(ctx, now))
}

// flushTimers is the mode of a timer run (see flow.fireTimers).
const flushTimers = flushFinal + 1

// checkTimers lints the flows whose functions have timer callbacks: with
// several workers, timers need the stream's key (each key's timers live on
// the worker its rows go to).
func (r *Registry) checkTimers(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range s.FlowNames() {
		fl := s.Flows[name]
		if !fl.Enabled() || fl.Stream == nil || fl.Stream.Workers <= 1 || fl.Stream.Key != "" {
			continue
		}
		for _, st := range fl.Flows {
			if r.timerFunc(st.FName) == nil {
				continue
			}
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.workers"), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: function %q sets timers, which with %d workers need stream.key (the field its timers and state are keyed by): set stream.key, or workers: 1", name, st.FName, fl.Stream.Workers)})
			break
		}
	}
	return probs
}

// streamAdvance moves op, an event-time window of h, to the stream's
// watermark wm when the stream declares its event time (clk.Set) and wm is
// a time.
func streamAdvance(h *windowHandler, op *window.Operator, wm int64, clk state.Clock) []map[string]any {
	if !clk.Set || h.spec.TimeField == "" || wm == math.MinInt64 || wm == math.MaxInt64 {
		return nil
	}
	return op.Advance(time.UnixMilli(wm))
}
