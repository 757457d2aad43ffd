package runtime

import (
	"context"
	"fmt"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// txns returns the state transactions of the epoch's parts, in order.
func (ep *epoch) txns() []*state.Txn {
	var out []*state.Txn
	for _, p := range ep.parts {
		if p.txn != nil {
			out = append(out, p.txn)
		}
	}
	return out
}

// beginState gives part p a state transaction in the context its flow
// runs get, when the job keeps keyed state.
func (w *worker) beginState(ctx context.Context, p *part) context.Context {
	st := w.r.parts.State
	if st == nil {
		return ctx
	}
	p.txn = st.Begin(p.worker)
	return state.NewContext(ctx, p.txn)
}

// canKeepState returns a fatal error when nothing can keep the job's
// keyed state.
func (r *Runner) canKeepState() error {
	if r.cfg.Delivery == ExactlyOnce {
		if _, ok := r.parts.TxSink.(stream.StateSink); !ok {
			return stream.Fatal(fmt.Errorf("flow %s changes keyed state, which its exactly-once sink %s cannot keep (the SQLite, PostgreSQL and MySQL sinks can)", r.cfg.Name, r.sinkLink.name))
		}
	} else if r.parts.StateStore == nil {
		return stream.Fatal(fmt.Errorf("flow %s changes keyed state, which its checkpoint store cannot keep", r.cfg.Name))
	}
	return nil
}

// keepsStateWithPosition reports whether state changes wait for the
// position to be saved with them: at-least-once, with a stored position.
func (r *Runner) keepsStateWithPosition(pos string) bool {
	return pos != "" && r.cfg.Delivery == AtLeastOnce
}

// keepState saves the state changes of a committed group outside a
// transactional sink. With a stored position (at-least-once) they are
// kept until the position is saved, and saved with it in one transaction
// of the store, so that a replay from the saved position never applies
// them twice. Without one (a broker that takes acknowledgements, or
// at-most-once) they are saved now (changes), before the acknowledgement.
// A watermark to keep (mark, nil: none) goes with them.
func (r *Runner) keepState(ctx context.Context, pos string, txns []*state.Txn, changes []stream.StateChange, mark []byte) error {
	if r.keepsStateWithPosition(pos) {
		if r.pendingState == nil {
			r.pendingState = map[state.ID]state.Entry{}
		}
		state.Merge(r.pendingState, txns)
		if mark != nil {
			r.pendingState[watermarkID] = state.Entry{Raw: mark}
		}
		return nil
	}
	return r.retryForever(ctx, r.stateLink, func() error {
		return r.parts.StateStore.SaveState(ctx, r.cfg.StateKey, "", changes)
	})
}

// storeCommitted saves the position of what was committed, with the state
// changes kept since the last save in the same transaction. Only the
// commit loop calls it.
func (r *Runner) storeCommitted(ctx context.Context, pos string) error {
	if len(r.pendingState) == 0 {
		return r.storePosition(ctx, pos)
	}
	changes, err := r.parts.State.Encode(r.pendingState)
	if err != nil {
		return err
	}
	if err := r.parts.StateStore.SaveState(context.WithoutCancel(ctx), r.cfg.StateKey, pos, changes); err != nil {
		return fmt.Errorf("save state and position: %w", err)
	}
	clear(r.pendingState)
	return nil
}
