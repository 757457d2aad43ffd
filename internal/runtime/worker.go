package runtime

import (
	"context"
	"encoding/json"
	"time"

	"github.com/kisflow-go/kisflow/filter"
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
// that cannot finish because the work context ended marks its epoch failed.
func (w *worker) process(ctx context.Context, p *part) {
	r := w.r
	top := r.cfg.PolicyFor("").Retries
	if r.cfg.RunContext != nil {
		ctx = r.cfg.RunContext(ctx, p.msgs)
	}
	out, ok := w.group(ctx, p, p.msgs, top)
	if !ok {
		p.ep.failed.Store(true)
		return
	}
	p.ep.out.Add(int64(len(out)))
	if len(out) == 0 {
		return
	}
	if r.cfg.Delivery == ExactlyOnce {
		// Kept until the commit: copy it out of the flow's buffers.
		p.out = append([]any(nil), out...)
		return
	}
	if r.parts.Sink == nil {
		return
	}
	if !w.deliver(ctx, p, out) {
		p.ep.failed.Store(true)
	}
}

// attempt runs msgs through the flow once. It returns the output, which
// stays valid until the flow's next run, the rejected rows, and the run's
// failure, if any; permanent tells a failure retrying cannot fix (an error
// marked stream.ErrPermanent).
func (w *worker) attempt(ctx context.Context, msgs []*stream.Message) (out []any, rejected []Rejected, fn string, err error, permanent bool) {
	w.rows = w.rows[:0]
	for _, m := range msgs {
		w.rows = append(w.rows, m.Payload)
	}
	res, rej, err := w.flow.Run(ctx, w.rows)
	clear(w.rows)
	if err != nil {
		return nil, nil, w.r.cfg.FuncOf(err), err, stream.IsPermanent(err)
	}
	return res, rej, "", nil, false
}

// rejected dead-letters the rows a successful run rejected, at once: a
// rejection is deterministic. A first-layer rejection is its message; one
// further on is the message when the run had one, else the row as it
// arrived at the function that rejected it (which message it came from is
// not known, and finding out would cost runs of the batch).
func (w *worker) rejected(p *part, msgs []*stream.Message, rej []Rejected) {
	for _, rj := range rej {
		switch {
		case rj.Layer == 0:
			w.deadLetter(p, msgs[rj.Index], "", rj.Func, rj.Err, 1)
		case len(msgs) == 1:
			w.deadLetter(p, msgs[0], rowPlace(rj.Layer, rj.Index), rj.Func, rj.Err, 1)
		default:
			p.ep.addDead(nil, w.r.rowDeadLetter(rj.Func, rj.Row, rj.Err, 1))
		}
	}
}

// group processes msgs. Rejected rows are dead-lettered at once and the
// rest goes on. A run that fails deterministically (an error marked
// permanent) is split in halves at once, without backoff, until the
// failing messages stand alone and are dead-lettered. Any other failure is taken as transient: the run is
// retried up to retries times with backoff, then split, and messages that
// still fail alone are retried by their function's policy before they are
// dead-lettered. It returns the output of the messages that succeeded, and
// false if the work context ended.
func (w *worker) group(ctx context.Context, p *part, msgs []*stream.Message, retries int) ([]any, bool) {
	r := w.r
	for try := 0; ; try++ {
		out, rej, fn, err, perm := w.attempt(ctx, msgs)
		if ctx.Err() != nil {
			return nil, false
		}
		if err == nil {
			w.rejected(p, msgs, rej)
			return out, true
		}
		if len(msgs) == 1 {
			if perm {
				w.deadLetter(p, msgs[0], "", fn, err, 1)
				return nil, true
			}
			return w.single(ctx, p, msgs[0], 1, fn, err)
		}
		if !perm && try < retries {
			r.retries.Add(1)
			r.cfg.Logger.Warn("batch failed; retrying", "func", fn, "rows", len(msgs), "try", try+1, "err", err)
			if w.backoff(ctx, fn, try+1) != nil {
				return nil, false
			}
			continue
		}
		mid := len(msgs) / 2
		a, ok := w.group(ctx, p, msgs[:mid], 0)
		if !ok {
			return nil, false
		}
		a = append([]any(nil), a...) // the second half's runs reuse the buffers
		b, ok := w.group(ctx, p, msgs[mid:], 0)
		if !ok {
			return nil, false
		}
		return append(a, b...), true
	}
}

// single retries one message that failed transiently by the failing
// function's policy, having already made tried attempts, and dead-letters
// it when they run out or when it fails deterministically.
func (w *worker) single(ctx context.Context, p *part, m *stream.Message, tried int, fn string, cause error) ([]any, bool) {
	r := w.r
	pol := r.cfg.PolicyFor(fn)
	for tried <= pol.Retries {
		r.retries.Add(1)
		if w.backoff(ctx, fn, tried) != nil {
			return nil, false
		}
		tried++
		out, rej, f, err, perm := w.attempt(ctx, []*stream.Message{m})
		if ctx.Err() != nil {
			return nil, false
		}
		if err == nil {
			w.rejected(p, []*stream.Message{m}, rej)
			return append([]any(nil), out...), true
		}
		fn, cause = f, err
		if perm {
			break
		}
		pol = r.cfg.PolicyFor(fn)
	}
	w.deadLetter(p, m, "", fn, cause, tried)
	return nil, true
}

// deadLetter adds m (row: a row of it, see rowPlace) to its epoch's dead
// letters, written when the epoch commits.
func (w *worker) deadLetter(p *part, m *stream.Message, row, fn string, cause error, attempts int) {
	w.r.cfg.Logger.Debug("message dead-lettered", "func", fn, "attempts", attempts, "err", cause)
	p.ep.addDead(m, w.r.deadLetter(fn, m, row, cause, attempts))
}

func (w *worker) backoff(ctx context.Context, fn string, attempt int) error {
	return w.r.cfg.Sleep(ctx, filter.Backoff(w.r.cfg.PolicyFor(fn).Base, attempt))
}

// deadLetter is the dead letter of message m, or of a row of it (see
// rowPlace), that function fn failed.
func (r *Runner) deadLetter(fn string, m *stream.Message, row string, cause error, attempts int) *stream.DeadLetter {
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
