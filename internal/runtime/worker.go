package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// worker runs parts of epochs on its own flow instance.
type worker struct {
	r    *Runner
	flow Flow
	rows []any
}

// process runs a part, retrying and isolating failures, then writes its
// output (at-least-once) or keeps it for the commit (exactly-once). A part
// that cannot finish because the work context ended, or because a run
// failed with an error marked stream.ErrFatal (which aborts the job),
// marks its epoch failed.
func (w *worker) process(ctx context.Context, p *part) {
	r := w.r
	top := r.cfg.PolicyFor("").Retries
	if r.cfg.RunContext != nil {
		ctx = r.cfg.RunContext(ctx, p.msgs)
	}
	ctx = w.beginState(ctx, p)
	ctx = state.WithClock(ctx, p.clockOf())
	if p.control != runMsgs {
		w.flush(ctx, p)
		return
	}
	out, segs, ok := w.group(ctx, p, p.msgs, top)
	if !ok {
		p.ep.failed.Store(true)
		return
	}
	if tf, fires := w.timers(); fires {
		// The part's rows first, then the timers its batch made due.
		out = append([]any(nil), out...) // the timers' run reuses the flow's buffers
		more, ok := w.control(ctx, p, "firing timers", func() ([]any, []Rejected, error) { return tf.FireTimers(ctx, time.Now()) })
		if !ok {
			return
		}
		if len(more) > 0 {
			out = append(out, more...)
			segs = append(segs, seg{n: len(more)}) // made by no message
		}
	}
	w.output(ctx, p, out, segs)
}

// timers returns the worker's flow as a TimerFirer when the flow fires
// timers.
func (w *worker) timers() (TimerFirer, bool) {
	if !w.r.cfg.Timers {
		return nil, false
	}
	tf, ok := w.flow.(TimerFirer)
	return tf, ok
}

// output writes a part's output (at-least-once) or keeps it for the
// commit (exactly-once).
func (w *worker) output(ctx context.Context, p *part, out []any, segs []seg) {
	r := w.r
	p.ep.out.Add(int64(len(out)))
	if len(out) == 0 {
		return
	}
	if r.cfg.Delivery == ExactlyOnce {
		// Kept until the commit: copy it out of the flow's buffers.
		p.out, p.segs = append([]any(nil), out...), segs
		return
	}
	if r.parts.Sink == nil {
		return
	}
	if !w.deliver(ctx, p, out, segs) {
		p.ep.failed.Store(true)
	}
}

// flush runs a control part: Flusher.Flush on the worker's flow, retried
// by the flow's policy. Its rejected rows are dead-lettered; a flush that
// still fails ends the run with its error (what the windows held is not
// known to be safe to emit again).
func (w *worker) flush(ctx context.Context, p *part) {
	var out []any
	// Each lane closes the windows it keeps (its keys').
	if f, ok := w.flow.(Flusher); ok {
		final := p.control == runFlush
		var ok bool
		if out, ok = w.control(ctx, p, "closing windows", func() ([]any, []Rejected, error) { return f.Flush(ctx, final) }); !ok {
			return
		}
	}
	if tf, fires := w.timers(); fires {
		more, ok := w.control(ctx, p, "firing timers", func() ([]any, []Rejected, error) { return tf.FireTimers(ctx, time.Now()) })
		if !ok {
			return
		}
		out = append(out, more...)
	}
	w.output(ctx, p, out, nil)
}

// control runs run, a run of the flow with no messages (windows closing,
// timers firing), retried by the flow's policy: its rejected rows are
// dead-lettered and a copy of its output returned. A run that still fails
// ends the job with its error (what it would emit is not known to be safe
// to emit again); false when it did not succeed.
func (w *worker) control(ctx context.Context, p *part, what string, run func() ([]any, []Rejected, error)) ([]any, bool) {
	r := w.r
	txn := state.FromContext(ctx)
	for try := 0; ; try++ {
		var sp int
		if txn != nil {
			sp = txn.Savepoint()
		}
		out, rej, err := run()
		if err != nil && txn != nil {
			txn.Rollback(sp) // the functions after the windows failed
		}
		if ctx.Err() != nil {
			p.ep.failed.Store(true)
			return nil, false
		}
		if err == nil {
			for _, rj := range rej {
				p.ep.addDead(nil, r.rowDeadLetter(rj.Func, nil, rj.Row, rj.Err, 1), rj.Err)
			}
			return append([]any(nil), out...), true
		}
		fn := r.cfg.FuncOf(err)
		if stream.IsPermanent(err) || try >= r.cfg.PolicyFor(fn).Retries {
			r.abort(fmt.Errorf("%s: %w", what, err))
			p.ep.failed.Store(true)
			return nil, false
		}
		r.retried(fn)
		r.cfg.Logger.Warn(what+" failed; retrying", "func", fn, "try", try+1, "err", err)
		if w.backoff(ctx, fn, try+1) != nil {
			p.ep.failed.Store(true)
			return nil, false
		}
	}
}

// attempt runs msgs through the flow once. It returns the output, which
// stays valid until the flow's next run, the rejected rows, and the run's
// failure, if any; permanent tells a failure retrying cannot fix (an error
// marked stream.ErrPermanent). The keyed state changes of a failed run are
// undone.
func (w *worker) attempt(ctx context.Context, msgs []*stream.Message) (out []any, rejected []Rejected, fn string, err error, permanent bool) {
	txn := state.FromContext(ctx)
	var sp int
	if txn != nil {
		sp = txn.Savepoint()
	}
	res, rej, err := w.run(ctx, msgs)
	for outage := 1; err != nil && stream.IsUnavailable(err) && ctx.Err() == nil; outage++ {
		// A service the step needs is down (stream.ErrUnavailable): the
		// batch is not to blame, so it waits the outage out.
		if txn != nil {
			txn.Rollback(sp)
		}
		l := w.r.funcLink(w.r.cfg.FuncOf(err))
		l.fail(err)
		if !w.r.stopping() {
			l.still(unavailableLog)
			if w.r.sleepUnlessStopping(ctx, linkWait(outage)) != nil && ctx.Err() != nil {
				break
			}
		}
		if w.r.stopping() {
			// The run is stopping: waiting would hold the shutdown for
			// the whole drain timeout, and the batch would go back to the
			// source anyway. It does now, unacknowledged: the next run
			// reads it again.
			err = fmt.Errorf("%w: %w", errStopped, err)
			break
		}
		if res, rej, err = w.run(ctx, msgs); err == nil {
			l.ok()
		}
	}
	if err != nil {
		if txn != nil {
			txn.Rollback(sp)
		}
		if stream.IsFatal(err) {
			// A configuration error (a missing table, a query without its
			// key column): no retry mends it and no row is to blame, so
			// the job ends, and the epoch is not acknowledged.
			w.r.abort(err)
		}
		return nil, nil, w.r.cfg.FuncOf(err), err, stream.IsPermanent(err)
	}
	return res, rej, "", nil, false
}

// errStopped marks a batch given up because the run stopped while a
// service its flow needs was unavailable: not processed, it goes back to
// the source.
var errStopped = errors.New("the run stopped while a service the flow needs was unavailable")

// unfinished reports whether a part cannot finish after an attempt that
// returned err: the work context ended, the run stopped during an outage
// (errStopped), or err is fatal.
func unfinished(ctx context.Context, err error) bool {
	return ctx.Err() != nil || stream.IsFatal(err) || errors.Is(err, errStopped)
}

// unavailableLog is how often a function's outage is logged again while
// it lasts.
const unavailableLog = 30 * time.Second

// run runs msgs' payloads through the flow once.
func (w *worker) run(ctx context.Context, msgs []*stream.Message) ([]any, []Rejected, error) {
	w.rows = w.rows[:0]
	for _, m := range msgs {
		w.rows = append(w.rows, m.Payload)
	}
	res, rej, err := w.flow.Run(ctx, w.rows)
	clear(w.rows)
	return res, rej, err
}

// rejected dead-letters the rows a successful run rejected, at once: a
// rejection is deterministic. A first-layer rejection is its message; one
// further on is the message when the run had one, else the row as it
// arrived at the function that rejected it (which message it came from is
// not known, and finding out would cost runs of the batch: group pays them
// only for a source that answers per message, see Runner.trace).
func (w *worker) rejected(p *part, msgs []*stream.Message, rej []Rejected) {
	for _, rj := range rej {
		switch {
		case rj.Layer == 0:
			w.deadLetter(p, msgs[rj.Index], "", rj.Func, rj.Err, 1)
		case len(msgs) == 1:
			w.deadLetter(p, msgs[0], rowPlace(rj.Layer, rj.Index), rj.Func, rj.Err, 1)
		default:
			p.ep.addDead(nil, w.r.rowDeadLetter(rj.Func, nil, rj.Row, rj.Err, 1), rj.Err)
		}
	}
}

// group processes msgs. Rejected rows are dead-lettered at once and the
// rest goes on. A run that fails deterministically (an error marked
// permanent) is split in halves at once, without backoff, until the
// failing messages stand alone and are dead-lettered. Any other failure is taken as transient: the run is
// retried up to retries times with backoff, then split, and messages that
// still fail alone are retried by their function's policy before they are
// dead-lettered. With a source that answers per message (Runner.trace), a
// run in which a function past the first rejected rows is split in halves
// too, until each rejection is traced to its message. It returns the
// output of the messages that succeeded, the runs it came from, and false
// if the work context ended.
func (w *worker) group(ctx context.Context, p *part, msgs []*stream.Message, retries int) ([]any, []seg, bool) {
	r := w.r
	txn := state.FromContext(ctx)
	for try := 0; ; try++ {
		var sp int
		if txn != nil {
			sp = txn.Savepoint()
		}
		out, rej, fn, err, perm := w.attempt(ctx, msgs)
		if unfinished(ctx, err) {
			return nil, nil, false
		}
		if err == nil {
			if r.trace && len(msgs) > 1 && slices.ContainsFunc(rej, func(rj Rejected) bool { return rj.Layer > 0 }) {
				if txn != nil {
					txn.Rollback(sp) // the halves run these messages again
				}
				return w.halves(ctx, p, msgs)
			}
			w.rejected(p, msgs, rej)
			return out, segOf(msgs, len(out)), true
		}
		if len(msgs) == 1 {
			if perm {
				w.deadLetter(p, msgs[0], "", fn, err, 1)
				return nil, nil, true
			}
			return w.single(ctx, p, msgs[0], 1, fn, err)
		}
		if !perm && try < retries {
			r.retried(fn)
			r.cfg.Logger.Warn("batch failed; retrying", "func", fn, "rows", len(msgs), "try", try+1, "err", err)
			if w.backoff(ctx, fn, try+1) != nil {
				return nil, nil, false
			}
			continue
		}
		return w.halves(ctx, p, msgs)
	}
}

// halves processes msgs in two halves (see group).
func (w *worker) halves(ctx context.Context, p *part, msgs []*stream.Message) ([]any, []seg, bool) {
	mid := len(msgs) / 2
	a, sa, ok := w.group(ctx, p, msgs[:mid], 0)
	if !ok {
		return nil, nil, false
	}
	a = append([]any(nil), a...) // the second half's runs reuse the buffers
	b, sb, ok := w.group(ctx, p, msgs[mid:], 0)
	if !ok {
		return nil, nil, false
	}
	return append(a, b...), append(sa, sb...), true
}

// seg is the output of one run: n rows made by running msgs together. The
// rows of a one-message run are traced to their message.
type seg struct {
	msgs []*stream.Message
	n    int
}

// segOf is the segment list of a run of msgs that made n rows.
func segOf(msgs []*stream.Message, n int) []seg {
	if n == 0 {
		return nil
	}
	return []seg{{msgs: msgs, n: n}}
}

// retrace runs again, one message at a time, the messages of each run of
// several messages in segs, so that each of rows (the output of segs) is
// traced to its message: it returns the rows anew and their messages. The
// rows of one-message runs are kept. Rejections met again are not
// dead-lettered again (they were when the runs first ran). A run whose
// messages do not all succeed again alone keeps its first rows, untraced.
// The keyed state changes of the runs made again are undone: the state
// keeps those of the first runs (which the runs made again also see).
func (w *worker) retrace(ctx context.Context, rows []any, segs []seg) ([]any, []*stream.Message) {
	if txn := state.FromContext(ctx); txn != nil {
		defer txn.Rollback(txn.Savepoint())
	}
	rows = append([]any(nil), rows...) // the runs below reuse the flow's buffers
	out := make([]any, 0, len(rows))
	from := make([]*stream.Message, 0, len(rows))
	at := 0
	for _, s := range segs {
		first := rows[at : at+s.n]
		at += s.n
		again, againFrom, ok := first, make([]*stream.Message, s.n), true
		if len(s.msgs) == 0 {
			// Rows of no message (timers): kept, untraced.
		} else if len(s.msgs) == 1 {
			for i := range againFrom {
				againFrom[i] = s.msgs[0]
			}
		} else {
			again, againFrom = nil, nil
			for _, m := range s.msgs {
				res, _, _, err, _ := w.attempt(ctx, []*stream.Message{m})
				if err != nil {
					w.r.cfg.Logger.Warn("a message run again alone to trace a refused row failed; the rows of its batch stay untraced", "err", err)
					ok = false
					break
				}
				again = append(again, res...)
				for range res {
					againFrom = append(againFrom, m)
				}
			}
			if !ok {
				again, againFrom = first, make([]*stream.Message, s.n)
			}
		}
		out = append(out, again...)
		from = append(from, againFrom...)
	}
	return out, from
}

// single retries one message that failed transiently by the failing
// function's policy, having already made tried attempts, and dead-letters
// it when they run out or when it fails deterministically.
func (w *worker) single(ctx context.Context, p *part, m *stream.Message, tried int, fn string, cause error) ([]any, []seg, bool) {
	r := w.r
	pol := r.cfg.PolicyFor(fn)
	for tried <= pol.Retries {
		r.retried(fn)
		if w.backoff(ctx, fn, tried) != nil {
			return nil, nil, false
		}
		tried++
		out, rej, f, err, perm := w.attempt(ctx, []*stream.Message{m})
		if unfinished(ctx, err) {
			return nil, nil, false
		}
		if err == nil {
			w.rejected(p, []*stream.Message{m}, rej)
			return append([]any(nil), out...), segOf([]*stream.Message{m}, len(out)), true
		}
		fn, cause = f, err
		if perm {
			break
		}
		pol = r.cfg.PolicyFor(fn)
	}
	w.deadLetter(p, m, "", fn, cause, tried)
	return nil, nil, true
}

// deadLetter adds m (row: a row of it, see rowPlace) to its epoch's dead
// letters, written when the epoch commits.
func (w *worker) deadLetter(p *part, m *stream.Message, row, fn string, cause error, attempts int) {
	w.r.cfg.Logger.Debug("message dead-lettered", "func", fn, "attempts", attempts, "err", cause)
	p.ep.addDead(m, w.r.deadLetter(fn, m, row, cause, attempts), cause)
}

func (w *worker) backoff(ctx context.Context, fn string, attempt int) error {
	return w.r.cfg.Sleep(ctx, filter.Backoff(w.r.cfg.PolicyFor(fn).Base, attempt))
}

// deadLetter is the dead letter of message m, or of a row of it (see
// rowPlace), that function fn failed.
func (r *Runner) deadLetter(fn string, m *stream.Message, row string, cause error, attempts int) *stream.DeadLetter {
	r.deadFor(fn)
	return &stream.DeadLetter{
		LetterID: r.letterID(m, row), Flow: r.cfg.Name, Func: fn, Error: cause.Error(), Attempts: attempts, ID: m.ID,
		Payload: dlqPayload(m.Payload), Position: m.Position, Headers: m.Headers, Time: time.Now().UTC(),
	}
}

// dlqPayload keeps JSON text readable in the dead-letter record.
func dlqPayload(p any) any {
	switch v := p.(type) {
	case string:
		if json.Valid([]byte(v)) {
			return json.RawMessage(v)
		}
	case []byte:
		if json.Valid(v) {
			return json.RawMessage(v)
		}
		return string(v)
	}
	return p
}
