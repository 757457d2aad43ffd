package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/stream"
)

// deliver writes a part's output to the sink (at-least-once); see
// rowWriter.
func (w *worker) deliver(ctx context.Context, p *part, rows []any) bool {
	r := w.r
	rw := rowWriter{r: r, write: r.parts.Sink.Write, dead: func(row any, cause error, attempts int) {
		p.ep.addDead(r.rowDeadLetter("sink "+r.sinkLink.name, row, cause, attempts))
	}}
	return rw.deliver(ctx, rows)
}

// rowWriter writes rows to a sink and isolates the rows it refuses.
type rowWriter struct {
	r     *Runner
	write func(ctx context.Context, rows []any) error
	// dead takes a row the sink refused, after attempts writes.
	dead func(row any, cause error, attempts int)
}

// deliver writes rows. A write that fails is split in halves down to the
// rows that fail alone. A row the sink rejects with an error marked
// stream.ErrPermanent is dead-lettered at once. A row that fails with an
// unmarked error while other rows went through (the sink is up and refuses
// it) is retried by the stream's policy, then dead-lettered. When nothing
// goes through, the sink is taken as down: the rows are retried with
// capped backoff for as long as it takes, split again only when the
// failure changes. deliver returns false when the work context ended or
// the sink failed fatally.
func (rw rowWriter) deliver(ctx context.Context, rows []any) bool {
	r := rw.r
	downErr := ""
	for round := 1; ; round++ {
		st := isolation{downErr: downErr}
		if !rw.isolate(ctx, rows, &st) {
			return false
		}
		if len(st.stuck) == 0 {
			r.sinkLink.ok()
			return true
		}
		if st.alive {
			r.sinkLink.ok()
			for i, row := range st.stuck {
				if !rw.rejectRow(ctx, row, st.errs[i]) {
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
func (rw rowWriter) isolate(ctx context.Context, rows []any, st *isolation) bool {
	r := rw.r
	err := rw.write(ctx, rows)
	switch {
	case err == nil:
		st.alive = true
		r.out.Add(int64(len(rows)))
		return true
	case r.stopOn(ctx, err):
		return false
	case len(rows) == 1 && stream.IsPermanent(err):
		st.alive = true
		rw.dead(rows[0], err, 1)
		return true
	case len(rows) == 1 || (err.Error() == st.downErr && !stream.IsPermanent(err)):
		st.stuck = append(st.stuck, rows...)
		for range rows {
			st.errs = append(st.errs, err)
		}
		return true
	}
	mid := len(rows) / 2
	return rw.isolate(ctx, rows[:mid], st) && rw.isolate(ctx, rows[mid:], st)
}

// rejectRow retries one row that failed alone while the sink was up, by
// the stream's policy, and dead-letters it when the retries run out or the
// sink rejects it permanently.
func (rw rowWriter) rejectRow(ctx context.Context, row any, cause error) bool {
	r := rw.r
	pol := r.cfg.PolicyFor("")
	tried := 1
	for ; tried <= pol.Retries && !stream.IsPermanent(cause); tried++ {
		r.retries.Add(1)
		if r.cfg.Sleep(ctx, filter.Backoff(pol.Base, tried)) != nil {
			return false
		}
		err := rw.write(ctx, []any{row})
		if err == nil {
			r.out.Add(1)
			return true
		}
		if r.stopOn(ctx, err) {
			return false
		}
		cause = err
	}
	rw.dead(row, cause, tried)
	return true
}

// rowDeadLetter is the dead letter of a row that cannot be traced to its
// message: rejected by a later function, or by the sink. Its payload is the
// row as JSON: the flow's buffers are reused by later runs.
func (r *Runner) rowDeadLetter(fn string, row any, cause error, attempts int) *stream.DeadLetter {
	var payload any = row
	if b, err := json.Marshal(row); err == nil {
		payload = json.RawMessage(b)
	}
	r.cfg.Logger.Debug("row dead-lettered", "func", fn, "err", cause)
	return &stream.DeadLetter{
		Flow: r.cfg.Name, Func: fn, Error: cause.Error(), Attempts: attempts,
		Payload: payload, Time: time.Now().UTC(),
	}
}

// commitTx commits a group's rows, position and message IDs in one
// transaction of the sink, retrying with backoff while the sink is
// unavailable. When the sink refuses the batch while it is up (the error
// is marked permanent, or the same error comes twice while the sink
// answers a read of the position), the
// rows are committed in parts split down to the rows it refuses, which
// are dead-lettered; the position and IDs then commit on their own. A
// crash during that split may repeat the rows of the group committed
// before it.
func (r *Runner) commitTx(ctx context.Context, pos string, ids []string, rows []any) error {
	tx := r.parts.TxSink
	jids, jsize, err := r.journalIDs(ctx)
	if err != nil {
		return err
	}
	all := append(ids[:len(ids):len(ids)], jids...)
	last := ""
	for attempt := 1; ; attempt++ {
		err := tx.CommitBatch(ctx, r.cfg.Name, pos, all, rows)
		if err == nil {
			r.sinkLink.ok()
			r.out.Add(int64(len(rows)))
			r.journalAt = jsize
			return nil
		}
		if errors.Is(err, stream.ErrAlreadyCommitted) || r.stopOn(ctx, err) {
			return err
		}
		// The same unmarked failure twice while the sink answers reads is
		// a refusal; a single one may be a commit whose answer was lost,
		// which the retry then finds already committed.
		if len(rows) > 0 && (stream.IsPermanent(err) || (err.Error() == last && r.sinkAnswers(ctx))) {
			return r.commitIsolated(ctx, pos, ids, rows)
		}
		last = err.Error()
		r.sinkLink.fail(err)
		if err := r.cfg.Sleep(ctx, filter.Backoff(linkBackoff, attempt)); err != nil {
			return err
		}
	}
}

// sinkAnswers reports whether the transactional sink answers a read.
func (r *Runner) sinkAnswers(ctx context.Context) bool {
	_, err := r.parts.TxSink.Position(ctx, r.cfg.Name)
	return err == nil
}

// commitIsolated commits rows in parts, dead-letters those the sink
// refuses, then the position and IDs; see commitTx.
func (r *Runner) commitIsolated(ctx context.Context, pos string, ids []string, rows []any) error {
	tx := r.parts.TxSink
	var dead []any
	rw := rowWriter{r: r,
		write: func(ctx context.Context, rs []any) error { return tx.CommitBatch(ctx, r.cfg.Name, "", nil, rs) },
		dead: func(row any, cause error, attempts int) {
			dead = append(dead, r.rowDeadLetter("sink "+r.sinkLink.name, row, cause, attempts))
		},
	}
	if !rw.deliver(ctx, rows) {
		return errors.Join(errors.New("sink refused rows; isolating them did not finish"), ctx.Err())
	}
	if len(dead) > 0 {
		if err := r.retryForever(ctx, r.dlqLink, func() error { return r.parts.DeadLetter.Write(ctx, dead) }); err != nil {
			return err
		}
		r.dead.Add(int64(len(dead)))
		r.deadDirty = true
		if err := r.syncDeadLetters(ctx); err != nil {
			return err
		}
	}
	jids, jsize, err := r.journalIDs(ctx)
	if err != nil {
		return err
	}
	ids = append(ids[:len(ids):len(ids)], jids...)
	if err := r.retryForever(ctx, r.sinkLink, func() error { return tx.CommitBatch(ctx, r.cfg.Name, pos, ids, nil) }); err != nil {
		return err
	}
	r.journalAt = jsize
	return nil
}
