package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// deliver writes a part's output, made by the runs segs, to the sink
// (at-least-once); see rowWriter.
func (w *worker) deliver(ctx context.Context, p *part, rows []any, segs []seg) bool {
	r := w.r
	rw := &rowWriter{r: r, write: r.parts.Sink.Write, dead: func(row any, m *stream.Message, cause error, attempts int) {
		p.ep.addDead(m, r.rowDeadLetter(r.sinkLink.label(), m, row, cause, attempts), cause)
	}}
	if r.trace {
		rw.retrace = func() ([]any, []*stream.Message) { return w.retrace(ctx, rows, segs) }
	}
	return rw.deliver(ctx, rows, nil)
}

// rowWriter writes rows to a sink and isolates the rows it refuses.
type rowWriter struct {
	r     *Runner
	write func(ctx context.Context, rows []any) error
	// dead takes a row the sink refused, after attempts writes, with its
	// message when known.
	dead func(row any, m *stream.Message, cause error, attempts int)
	// retrace, when set, is called once, when the sink first refuses the
	// rows (none of them written yet): it returns the rows, made again
	// where needed, with the message of each, for a source that answers
	// per message.
	retrace func() ([]any, []*stream.Message)
}

// deliver writes rows; from, nil or as long as rows, holds the message of
// each. A write the sink refuses with an error marked stream.ErrPermanent
// (a value a column does not take, a constraint) is split in halves down
// to the refused rows, which are dead-lettered at once; the rest is
// written. Any other failure (a lost connection, a full disk) is the
// sink's state, not the rows' fault: the rows it struck are retried with
// capped backoff for as long as it takes, never dead-lettered. deliver
// returns false when the work context ended or the sink failed fatally.
func (rw *rowWriter) deliver(ctx context.Context, rows []any, from []*stream.Message) bool {
	r := rw.r
	for round := 1; ; round++ {
		var st isolation
		if !rw.isolate(ctx, rows, from, &st) {
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
		rows, from = st.stuck, st.from
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
	stuck []any             // rows struck by an unmarked failure
	from  []*stream.Message // their messages, when known
	err   error             // the first such failure
}

// isolate writes rows (from: their messages, or nil), splitting a failed
// write in halves. It returns false when the work context ended or the
// sink failed fatally.
func (rw *rowWriter) isolate(ctx context.Context, rows []any, from []*stream.Message, st *isolation) bool {
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
		st.from = append(st.from, from...)
		if st.err == nil {
			st.err = err
		}
		return true
	case rw.retrace != nil:
		// Refused whole, before any row was written (only a permanent
		// refusal splits): trace the rows to their messages first.
		retrace := rw.retrace
		rw.retrace = nil
		rows, from = retrace()
		return rw.isolate(ctx, rows, from, st)
	case len(rows) == 1:
		var m *stream.Message
		if len(from) == 1 {
			m = from[0]
		}
		rw.dead(rows[0], m, err, 1)
		return true
	}
	mid := len(rows) / 2
	fa, fb := halve(from, mid)
	return rw.isolate(ctx, rows[:mid], fa, st) && rw.isolate(ctx, rows[mid:], fb, st)
}

// halve splits from at mid; a nil from gives two nils.
func halve(from []*stream.Message, mid int) (a, b []*stream.Message) {
	if from == nil {
		return nil, nil
	}
	return from[:mid], from[mid:]
}

// rowDeadLetter is the dead letter of a row past the first function:
// rejected by a later function, or by the sink. Its payload is the row as
// JSON (the flow's buffers are reused by later runs); m, the message the
// row came from, is nil when not known.
func (r *Runner) rowDeadLetter(fn string, m *stream.Message, row any, cause error, attempts int) *stream.DeadLetter {
	var payload any = row
	if b, err := json.Marshal(row); err == nil {
		payload = json.RawMessage(b)
	} else if b, err := json.Marshal(finite(row)); err == nil {
		// The row is dead for a value JSON has no text for (±Inf,
		// NaN): its letter must still be written, with that value as text.
		payload = json.RawMessage(b)
	} else {
		payload = fmt.Sprint(row)
	}
	r.cfg.Logger.Debug("row dead-lettered", "func", fn, "err", cause)
	r.deadFor(fn)
	dl := &stream.DeadLetter{
		LetterID: r.letterID(nil, ""), Flow: r.cfg.Name, Func: fn, Error: cause.Error(), Attempts: attempts,
		Payload: payload, Time: time.Now().UTC(),
	}
	if m != nil {
		dl.ID, dl.Position, dl.Headers = m.ID, m.Position, m.Headers
	}
	return dl
}

// commitTx commits a group's rows (made by the runs segs), position and
// message IDs in one transaction of the sink, retrying with backoff while
// the sink is unavailable. When the sink refuses the batch with an error
// marked stream.ErrPermanent, the rows are committed in parts split down to
// the rows it refuses, which are dead-lettered; the position and IDs then
// commit on their own. A crash during that split may repeat the rows of the
// group committed before it. It returns the dead letters of refused rows
// traced to their messages (see Runner.trace), and those messages. The
// group's keyed state changes commit with the position.
func (r *Runner) commitTx(ctx context.Context, pos string, ids []string, rows []any, segs []seg, changes []stream.StateChange) ([]*stream.Message, []*stream.DeadLetter, error) {
	jids, jsize, err := r.journalIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	all := append(ids[:len(ids):len(ids)], jids...)
	for attempt := 1; ; attempt++ {
		err := r.commitBatch(ctx, pos, all, rows, changes)
		if err == nil || attempt > 1 && ownFence(err, pos) {
			r.committedTx(pos, len(rows), jsize)
			return nil, nil, nil
		}
		if errors.Is(err, stream.ErrAlreadyCommitted) || r.stopOn(ctx, err) {
			return nil, nil, err
		}
		if len(rows) > 0 && stream.IsPermanent(err) {
			return r.commitIsolated(ctx, pos, ids, rows, segs, changes)
		}
		r.sinkLink.fail(err)
		if err := r.cfg.Sleep(ctx, linkWait(attempt)); err != nil {
			return nil, nil, err
		}
		// A commit whose answer was lost (the server went away after
		// committing) must not be made twice: ask the sink what it holds.
		if landed, lerr := r.commitLanded(ctx, pos, all); lerr == nil && landed {
			r.cfg.Logger.Warn("the sink had committed a batch whose answer was lost; not committing it again", "position", pos)
			r.committedTx(pos, len(rows), jsize)
			return nil, nil, nil
		}
	}
}

// commitBatch commits through the sink's transaction, with the group's
// keyed state changes, fenced on the position this runner last committed
// when it fences (see Config.Fence).
func (r *Runner) commitBatch(ctx context.Context, pos string, ids []string, rows []any, changes []stream.StateChange) error {
	if len(changes) > 0 {
		ss := r.parts.TxSink.(stream.StateSink)
		if r.fence != nil {
			return ss.CommitStateAfter(ctx, r.cfg.StateKey, r.txPos, pos, ids, rows, changes)
		}
		return ss.CommitState(ctx, r.cfg.StateKey, pos, ids, rows, changes)
	}
	if r.fence != nil {
		return r.fence.CommitBatchAfter(ctx, r.cfg.StateKey, r.txPos, pos, ids, rows)
	}
	return r.parts.TxSink.CommitBatch(ctx, r.cfg.StateKey, pos, ids, rows)
}

// ownFence reports whether err, from a commit of pos tried again after a
// failure, is the fence finding pos itself: the failed attempt committed
// and its answer was lost. Only a retry may be judged so: a first attempt
// that finds its own position found another process's commit.
func ownFence(err error, pos string) bool {
	var fe *stream.FenceError
	return pos != "" && errors.As(err, &fe) && fe.Found == pos
}

// committedTx records a transaction that committed.
func (r *Runner) committedTx(pos string, rows int, jsize int64) {
	r.sinkLink.ok()
	r.out.Add(int64(rows))
	r.journalAt = jsize
	if pos != "" {
		r.txPos = pos
		r.positionCommitted(context.Background(), pos)
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
// refuses, then the position and IDs; see commitTx. With a source that
// answers per message, the rows of runs of several messages are first made
// again message by message, on a flow instance of the commit loop's own,
// so that each refused row is traced to its message.
func (r *Runner) commitIsolated(ctx context.Context, pos string, ids []string, rows []any, segs []seg, changes []stream.StateChange) ([]*stream.Message, []*stream.DeadLetter, error) {
	var dead []any
	var deadOf []*stream.Message
	var letters []*stream.DeadLetter
	rw := &rowWriter{r: r,
		write: func(ctx context.Context, rs []any) error { return r.commitBatch(ctx, "", nil, rs, nil) },
		dead: func(row any, m *stream.Message, cause error, attempts int) {
			dl := r.rowDeadLetter(r.sinkLink.label(), m, row, cause, attempts)
			dead = append(dead, dl)
			if m != nil {
				deadOf, letters = append(deadOf, m), append(letters, dl)
			}
		},
	}
	if r.trace {
		rw.retrace = func() ([]any, []*stream.Message) {
			if r.tracer == nil {
				r.tracer = &worker{r: r, flow: r.parts.NewFlow(r.cfg.Workers)}
			}
			tctx := ctx
			if r.parts.State != nil {
				tctx = state.NewContext(ctx, r.parts.State.Scratch())
			}
			return r.tracer.retrace(tctx, rows, segs)
		}
	}
	if !rw.deliver(ctx, rows, nil) {
		return nil, nil, errors.Join(errors.New("sink refused rows; isolating them did not finish"), ctx.Err())
	}
	if err := r.writeDead(ctx, dead); err != nil {
		return nil, nil, err
	}
	if err := r.syncDeadLetters(ctx); err != nil {
		return nil, nil, err
	}
	jids, jsize, err := r.journalIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	ids = append(ids[:len(ids):len(ids)], jids...)
	retried := false
	if err := r.retryForever(ctx, r.sinkLink, func() error {
		err := r.commitBatch(ctx, pos, ids, nil, changes)
		if retried && ownFence(err, pos) {
			return nil // an earlier attempt committed; its answer was lost
		}
		retried = err != nil
		return err
	}); err != nil {
		return nil, nil, err
	}
	r.journalAt = jsize
	if pos != "" {
		r.txPos = pos
	}
	return deadOf, letters, nil
}

// finite is v with each float ±Inf or NaN inside maps and slices replaced
// by its text ("+Inf", "-Inf", "NaN"), which JSON can hold.
func finite(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = finite(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = finite(e)
		}
		return out
	}
	return v
}
