package runtime

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

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
	w.r.keyPartitions(p)
	return state.NewContext(ctx, p.txn)
}

// canKeepState returns a fatal error when nothing can keep the job's
// keyed state.
func (r *Runner) canKeepState() error {
	if r.cfg.Delivery == ExactlyOnce {
		if _, ok := r.parts.TxSink.(stream.StateSink); !ok {
			return stream.Fatal(fmt.Errorf("flow %s changes keyed state, which its exactly-once sink %s cannot keep (the SQLite, PostgreSQL, MySQL, Redis and transactional Kafka sinks can)", r.cfg.Name, r.sinkLink.name))
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
// them twice: it returns true, and the group's changes are applied with
// ApplyUnsaved, which marks the entries they change for the next save.
// Without one (a broker that takes acknowledgements, or at-most-once)
// they are saved now (changes), before the acknowledgement. A watermark
// to keep (mark, nil: none) goes with them.
func (r *Runner) keepState(ctx context.Context, pos string, changes []stream.StateChange, mark []byte) (bool, error) {
	if r.keepsStateWithPosition(pos) || r.unsavedState() {
		// A group without a position (a tick, the final flush) after
		// groups whose changes wait for their position joins them: saved
		// now, its changes (a fired timer's deletion, a closed window's)
		// would be overwritten by the older ones saved later.
		if mark != nil {
			if r.pendingState == nil {
				r.pendingState = map[state.ID]state.Entry{}
			}
			r.pendingState[watermarkID] = state.Entry{Raw: mark}
		}
		return true, nil
	}
	// A save under way writes older changes: it must land first.
	if err := r.waitSave(ctx); err != nil {
		return false, err
	}
	return false, r.retryForever(ctx, r.stateLink, func() error {
		return r.parts.StateStore.SaveState(ctx, r.cfg.StateKey, "", changes)
	})
}

// unsavedState reports whether state changes wait for the next save.
func (r *Runner) unsavedState() bool {
	return len(r.pendingState) > 0 || r.parts.State != nil && r.parts.State.HasUnsaved()
}

// takeUnsaved returns the state changes to write at a save: those a save
// that failed left, with the entries changed in memory since (see
// state.Table.TakeUnsaved), nil when there are none. r.pendingState is
// then empty.
func (r *Runner) takeUnsaved() map[state.ID]state.Entry {
	pend := r.pendingState
	if r.parts.State != nil && r.parts.State.HasUnsaved() {
		if pend == nil {
			pend, r.spareState = r.spareState, nil
			if pend == nil {
				pend = map[state.ID]state.Entry{}
			}
		}
		r.parts.State.TakeUnsaved(pend)
	}
	r.pendingState = nil
	return pend
}

// storeCommitted saves the position of what was committed, with the state
// changes kept since the last save in the same transaction, and waits for
// it. Only the commit loop calls it, when no save runs (see startSave).
func (r *Runner) storeCommitted(ctx context.Context, pos string) error {
	pend := r.takeUnsaved()
	err := r.saveCommitted(ctx, pos, pend)
	r.savedState(ctx, pos, pend, err)
	return err
}

// saveDone is the outcome of a save startSave began.
type saveDone struct {
	pos   string
	state map[state.ID]state.Entry // the changes it saved
	began time.Time
	err   error
}

// startSave syncs the dead letters written so far, then begins saving pos
// with the state changes kept since the last save (see storeCommitted) on
// a goroutine of its own, whose outcome r.saving delivers: the commit loop
// goes on committing batches in memory meanwhile, their changes kept for
// the next save. Saves are made one at a time, in order, so that the
// store never holds a state older than one it held. Only the commit loop
// calls it, when no save runs.
func (r *Runner) startSave(ctx context.Context, pos string) error {
	began := time.Now()
	if err := r.syncDeadLetters(ctx); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	pend := r.takeUnsaved()
	done := make(chan saveDone, 1)
	r.saving = done
	go func() {
		err := r.saveCommitted(ctx, pos, pend)
		done <- saveDone{pos: pos, state: pend, began: began, err: err}
	}()
	return nil
}

// savedState ends a save on the commit loop: a source that wants to know
// is told that pos is saved; changes that could not be saved are kept
// for the next save, under those committed since.
func (r *Runner) savedState(ctx context.Context, pos string, saved map[state.ID]state.Entry, err error) {
	if err != nil {
		if len(saved) > 0 {
			if r.pendingState == nil {
				r.pendingState = saved
				return
			}
			for id, e := range saved {
				if _, ok := r.pendingState[id]; !ok {
					r.pendingState[id] = e
				}
			}
		}
		return
	}
	if saved != nil {
		clear(saved)
		r.spareState = saved
	}
	r.positionCommitted(ctx, pos)
}

// waitSave waits for the save under way, if any, and ends it; the error
// is the save's.
func (r *Runner) waitSave(ctx context.Context) error {
	if r.saving == nil {
		return nil
	}
	res := <-r.saving
	r.saving = nil
	r.savedState(ctx, res.pos, res.state, res.err)
	return res.err
}

// saveCommitted writes pos with the state changes pend in one transaction
// of the store (the position alone when there are none).
func (r *Runner) saveCommitted(ctx context.Context, pos string, pend map[state.ID]state.Entry) error {
	if len(pend) == 0 {
		return r.storePosition(ctx, pos)
	}
	changes, err := r.parts.State.Encode(pend)
	if err != nil {
		return err
	}
	if err := r.parts.StateStore.SaveState(context.WithoutCancel(ctx), r.cfg.StateKey, pos, changes); err != nil {
		return fmt.Errorf("save state and position: %w", err)
	}
	return nil
}

// LoadState loads into table the entries of stream's keyed state that
// from keeps: all of them when partitions is nil, else those of the
// source partitions named ("" names the entries without one), through
// stream.PartitionStateLoader when from has it, else by reading it all and
// keeping those.
func LoadState(ctx context.Context, from stream.StateLoader, table *state.Table, key string, partitions []string) error {
	if partitions == nil {
		return from.LoadState(ctx, key, table.Load)
	}
	if pl, ok := from.(stream.PartitionStateLoader); ok {
		return pl.LoadPartitionState(ctx, key, partitions, table.Load)
	}
	return from.LoadState(ctx, key, func(c stream.StateChange) error {
		if !slices.Contains(partitions, c.Partition) {
			return nil
		}
		return table.Load(c)
	})
}

// partitionHandler is the runner's stream.PartitionHandler: the keyed
// state in memory follows the partitions the source owns.
type partitionHandler struct{ r *Runner }

// Assigned drops what memory holds of partitions (state kept from an
// earlier ownership, or applied by a batch that finished after they were
// revoked) and loads their committed state from the store, retrying
// while the store is unavailable.
func (h partitionHandler) Assigned(ctx context.Context, partitions []string) error {
	if rc := h.r.readCtx; rc != nil {
		// Not the read's own context, which a linger or tick deadline
		// may end before a large partition is loaded: the run's.
		ctx = rc
	}
	return h.r.loadPartitions(ctx, partitions)
}

// loadPartitions drops the state partitions hold in memory and loads it
// from the store.
func (r *Runner) loadPartitions(ctx context.Context, partitions []string) error {
	parts := slices.DeleteFunc(slices.Clone(partitions), func(p string) bool { return p == "" })
	if len(parts) == 0 {
		return nil
	}
	began := time.Now()
	err := r.retryForever(ctx, r.stateLink, func() error {
		r.parts.State.DropPartitions(parts)
		return LoadState(ctx, r.parts.StateLoader, r.parts.State, r.cfg.StateKey, parts)
	})
	// What was built from the entries (a window lane's operator) is
	// built again with those loaded: see state.Table.Moves.
	r.parts.State.PartitionsLoaded()
	if err != nil {
		return fmt.Errorf("load keyed state of partitions %s: %w", strings.Join(parts, ", "), err)
	}
	r.cfg.Logger.Info("partitions assigned: keyed state loaded", "flow", r.cfg.Name, "partitions", strings.Join(parts, ","), "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// Revoked drops the state of partitions from memory: their batches were
// committed (the source waited for them), and their next owner loads it.
func (h partitionHandler) Revoked(partitions []string) {
	r := h.r
	n := r.parts.State.DropPartitions(partitions)
	r.cfg.Logger.Info("partitions revoked: keyed state dropped from memory", "flow", r.cfg.Name, "partitions", strings.Join(partitions, ","), "entries", n)
}

// keyPartitions tells a part's state transaction the source partition of
// each stream key of its messages, when state follows partitions; the
// keys are read when the part first changes state.
func (r *Runner) keyPartitions(p *part) {
	if !r.partitioned || len(p.msgs) == 0 {
		return
	}
	msgs := p.msgs
	p.txn.SetPartitions(func() map[string]string {
		keys := make(map[string]string, len(msgs))
		for _, m := range msgs {
			if m.Partition == "" {
				continue
			}
			if k := r.keys.of(m); k != "" {
				keys[k] = m.Partition
			}
		}
		return keys
	})
}

// reloadPartitions loads again the state of the partitions of msgs.
func (r *Runner) reloadPartitions(ctx context.Context, msgs []*stream.Message) {
	var parts []string
	for _, m := range msgs {
		if m.Partition != "" && !slices.Contains(parts, m.Partition) {
			parts = append(parts, m.Partition)
		}
	}
	err := r.loadPartitions(ctx, parts)
	// Batches in flight may have read what was replaced: they are
	// returned and run again on what was loaded.
	r.parts.State.Invalidate()
	if err != nil {
		r.cfg.Logger.Warn("could not load keyed state again after another process committed", "err", err)
	}
}

// positionCommitted tells a source that wants to know that pos is
// durably committed (see stream.PositionCommitter).
func (r *Runner) positionCommitted(ctx context.Context, pos string) {
	if pos != "" {
		r.checkpointed()
	}
	if pc, ok := r.parts.Source.(stream.PositionCommitter); ok && pos != "" {
		pc.PositionCommitted(ctx, pos)
	}
}
