package runtime

import (
	"context"
	"encoding/json"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/stream"
)

// deliver writes a part's output to the sink (at-least-once). A write that
// fails is split in halves down to the rows that fail alone. A row the sink
// rejects with an error marked stream.ErrPermanent is dead-lettered at
// once. A row that fails with an unmarked error while other rows went
// through (the sink is up and refuses it) is retried by the stream's
// policy, then dead-lettered. When nothing goes through, the sink is taken
// as down: the rows are retried with capped backoff for as long as it
// takes, split again only when the failure changes. deliver returns false
// when the work context ended or the sink failed fatally.
func (w *worker) deliver(ctx context.Context, p *part, rows []any) bool {
	r := w.r
	downErr := ""
	for round := 1; ; round++ {
		st := isolation{downErr: downErr}
		if !w.isolate(ctx, p, rows, &st) {
			return false
		}
		if len(st.stuck) == 0 {
			r.sinkLink.ok()
			return true
		}
		if st.alive {
			r.sinkLink.ok()
			for i, row := range st.stuck {
				if !w.rejectRow(ctx, p, row, st.errs[i]) {
					return false
				}
			}
			return true
		}
		r.sinkLink.fail(st.errs[0])
		if r.cfg.Sleep(ctx, filter.Backoff(linkBackoff, round)) != nil {
			return false
		}
		rows, downErr = st.stuck, st.errs[0].Error()
	}
}

// linkBackoff is the first wait before a source or sink that failed is
// tried again; it doubles up to filter.MaxBackoff, with jitter.
const linkBackoff = 50 * time.Millisecond

// isolation collects what a round of isolate found.
type isolation struct {
	downErr string  // the failure of a sink taken as down: not split again
	alive   bool    // some write went through, or was refused row by row
	stuck   []any   // rows that failed alone with an unmarked error
	errs    []error // their errors
}

// isolate writes rows, splitting a failed write in halves. It returns
// false when the work context ended or the sink failed fatally.
func (w *worker) isolate(ctx context.Context, p *part, rows []any, st *isolation) bool {
	r := w.r
	err := r.parts.Sink.Write(ctx, rows)
	switch {
	case err == nil:
		st.alive = true
		r.out.Add(int64(len(rows)))
		return true
	case r.stopOn(ctx, err):
		return false
	case len(rows) == 1 && stream.IsPermanent(err):
		st.alive = true
		w.sinkDeadLetter(p, rows[0], err, 1)
		return true
	case len(rows) == 1 || (err.Error() == st.downErr && !stream.IsPermanent(err)):
		st.stuck = append(st.stuck, rows...)
		for range rows {
			st.errs = append(st.errs, err)
		}
		return true
	}
	mid := len(rows) / 2
	return w.isolate(ctx, p, rows[:mid], st) && w.isolate(ctx, p, rows[mid:], st)
}

// rejectRow retries one row that failed alone while the sink was up, by
// the stream's policy, and dead-letters it when the retries run out or the
// sink rejects it permanently.
func (w *worker) rejectRow(ctx context.Context, p *part, row any, cause error) bool {
	r := w.r
	pol := r.cfg.PolicyFor("")
	tried := 1
	for ; tried <= pol.Retries && !stream.IsPermanent(cause); tried++ {
		r.retries.Add(1)
		if r.cfg.Sleep(ctx, filter.Backoff(pol.Base, tried)) != nil {
			return false
		}
		err := r.parts.Sink.Write(ctx, []any{row})
		if err == nil {
			r.out.Add(1)
			return true
		}
		if r.stopOn(ctx, err) {
			return false
		}
		cause = err
	}
	w.sinkDeadLetter(p, row, cause, tried)
	return true
}

// sinkDeadLetter dead-letters an output row the sink refused.
func (w *worker) sinkDeadLetter(p *part, row any, cause error, attempts int) {
	w.rowDeadLetter(p, "sink "+w.r.sinkLink.name, row, cause, attempts)
}

// rowDeadLetter dead-letters a row that cannot be traced to its message:
// rejected by a later function, or by the sink. Its payload is the row as
// JSON: the flow's buffers are reused by later runs.
func (w *worker) rowDeadLetter(p *part, fn string, row any, cause error, attempts int) {
	var payload any = row
	if b, err := json.Marshal(row); err == nil {
		payload = json.RawMessage(b)
	}
	w.r.cfg.Logger.Debug("row dead-lettered", "func", fn, "err", cause)
	p.ep.addDead(&stream.DeadLetter{
		Flow: w.r.cfg.Name, Func: fn, Error: cause.Error(), Attempts: attempts,
		Payload: payload, Time: time.Now().UTC(),
	})
}
