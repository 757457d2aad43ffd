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
		p.ep.addDead(nil, r.rowDeadLetter("sink "+r.sinkLink.name, row, cause, attempts))
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

// deliver writes rows. A write the sink refuses with an error marked
// stream.ErrPermanent (a value a column does not take, a constraint) is
// split in halves down to the refused rows, which are dead-lettered at
// once; the rest is written. Any other failure (a lost connection, a full
// disk) is the sink's state, not the rows' fault: the rows it struck are
// retried with capped backoff for as long as it takes, never
// dead-lettered. deliver returns false when the work context ended or the
// sink failed fatally.
func (rw rowWriter) deliver(ctx context.Context, rows []any) bool {
	r := rw.r
	for round := 1; ; round++ {
		var st isolation
		if !rw.isolate(ctx, rows, &st) {
			return false
		}
		if len(st.stuck) == 0 {
			r.sinkLink.ok()
			return true
		}
		r.sinkLink.fail(st.err)
		if r.cfg.Sleep(ctx, linkWait(round)) != nil {
			return false
		}
		rows = st.stuck
	}
}

// linkBackoff is the first wait before a source or sink that failed is
// tried again; it doubles up to linkBackoffCap, with jitter, so that a
// service back after a long outage is found again within seconds.
const (
	linkBackoff    = 50 * time.Millisecond
	linkBackoffCap = 5 * time.Second
)

// linkWait is the wait before attempt number attempt on a failed link.
func linkWait(attempt int) time.Duration {
	return filter.CappedBackoff(linkBackoff, attempt, linkBackoffCap)
}

// isolation collects the rows a round of isolate could not write.
type isolation struct {
	stuck []any // rows struck by an unmarked failure
	err   error // the first such failure
}

// isolate writes rows, splitting a failed write in halves. It returns
// false when the work context ended or the sink failed fatally.
func (rw rowWriter) isolate(ctx context.Context, rows []any, st *isolation) bool {
	r := rw.r
	err := rw.write(ctx, rows)
	switch {
	case err == nil:
		r.out.Add(int64(len(rows)))
		return true
	case r.stopOn(ctx, err):
		return false
	case !stream.IsPermanent(err):
		st.stuck = append(st.stuck, rows...)
		if st.err == nil {
			st.err = err
		}
		return true
	case len(rows) == 1:
		rw.dead(rows[0], err, 1)
		return true
	}
	mid := len(rows) / 2
	return rw.isolate(ctx, rows[:mid], st) && rw.isolate(ctx, rows[mid:], st)
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
// unavailable. When the sink refuses the batch with an error marked
// stream.ErrPermanent, the rows are committed in parts split down to the
// rows it refuses, which are dead-lettered; the position and IDs then
// commit on their own. A crash during that split may repeat the rows of
// the group committed before it.
func (r *Runner) commitTx(ctx context.Context, pos string, ids []string, rows []any) error {
	tx := r.parts.TxSink
	jids, jsize, err := r.journalIDs(ctx)
	if err != nil {
		return err
	}
	all := append(ids[:len(ids):len(ids)], jids...)
	for attempt := 1; ; attempt++ {
		err := tx.CommitBatch(ctx, r.cfg.StateKey, pos, all, rows)
		if err == nil {
			r.committedTx(pos, len(rows), jsize)
			return nil
		}
		if errors.Is(err, stream.ErrAlreadyCommitted) || r.stopOn(ctx, err) {
			return err
		}
		if len(rows) > 0 && stream.IsPermanent(err) {
			return r.commitIsolated(ctx, pos, ids, rows)
		}
		r.sinkLink.fail(err)
		if err := r.cfg.Sleep(ctx, linkWait(attempt)); err != nil {
			return err
		}
		// A commit whose answer was lost (the server went away after
		// committing) must not be made twice: ask the sink what it holds.
		if landed, lerr := r.commitLanded(ctx, pos, all); lerr == nil && landed {
			r.cfg.Logger.Warn("the sink had committed a batch whose answer was lost; not committing it again", "position", pos)
			r.committedTx(pos, len(rows), jsize)
			return nil
		}
	}
}

// committedTx records a transaction that committed.
func (r *Runner) committedTx(pos string, rows int, jsize int64) {
	r.sinkLink.ok()
	r.out.Add(int64(rows))
	r.journalAt = jsize
	if pos != "" {
		r.txPos = pos
	}
}

// commitLanded reports whether a commit that failed with an unknown outcome
// is in the sink after all: its position is the sink's (and differs from the
// last one this runner committed), or its first message ID is recorded (the
// IDs of a batch commit all or none).
func (r *Runner) commitLanded(ctx context.Context, pos string, ids []string) (bool, error) {
	tx := r.parts.TxSink
	if pos != "" && pos != r.txPos {
		cur, err := tx.Position(ctx, r.cfg.StateKey)
		return err == nil && cur == pos, err
	}
	if len(ids) > 0 {
		seen, err := tx.Seen(ctx, r.cfg.StateKey, ids[:1])
		return err == nil && seen[ids[0]], err
	}
	return false, nil
}

// commitIsolated commits rows in parts, dead-letters those the sink
// refuses, then the position and IDs; see commitTx.
func (r *Runner) commitIsolated(ctx context.Context, pos string, ids []string, rows []any) error {
	tx := r.parts.TxSink
	var dead []any
	rw := rowWriter{r: r,
		write: func(ctx context.Context, rs []any) error { return tx.CommitBatch(ctx, r.cfg.StateKey, "", nil, rs) },
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
	if err := r.retryForever(ctx, r.sinkLink, func() error { return tx.CommitBatch(ctx, r.cfg.StateKey, pos, ids, nil) }); err != nil {
		return err
	}
	r.journalAt = jsize
	return nil
}
