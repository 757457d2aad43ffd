package runtime

import (
	"context"
	"fmt"
	"strconv"
)

// Journal is an optional capability of a dead-letter sink that appends to
// a file (the default dead-letter file), used for exactly-once delivery.
//
// Dead letters of a commit group are written before the sink's
// transaction, so that none is lost; a crash between the two would repeat
// them when the group is processed again. With a Journal, each transaction
// also records the journal's size after the group's dead letters, as a
// message ID of its own (with the journal's ID, so that processes sharing
// a sink do not collide). On start, the runner
// finds the last size a committed transaction recorded and cuts the
// journal back to it: the dead letters of a group that did not commit are
// removed, and written once more when the group is.
type Journal interface {
	// ID identifies the journal among those of every process committing
	// to the same sink and stream.
	ID() (string, error)
	// Size is where the next dead letter starts.
	Size() (int64, error)
	// LineEnds returns 0 and the offsets at which the last n records end.
	LineEnds(n int) ([]int64, error)
	// Truncate removes everything after size.
	Truncate(size int64) error
}

// Syncer is an optional capability of a dead-letter sink whose writes
// reach the disk only when it is synced (a file): the runtime syncs it once
// before what depends on the dead letters, not once per write: before a
// transactional commit, an acknowledgement, or saving a position (at most
// every checkpoint interval for sources whose position it stores).
type Syncer interface {
	Sync() error
}

// syncDeadLetters syncs the dead-letter sink when dead letters were
// written since the last sync. Only the commit loop calls it.
func (r *Runner) syncDeadLetters(ctx context.Context) error {
	s, ok := r.parts.DeadLetter.(Syncer)
	if !ok || !r.deadDirty {
		return nil
	}
	if err := r.retryForever(ctx, r.dlqLink, s.Sync); err != nil {
		return err
	}
	r.deadDirty = false
	return nil
}

// journalKey is the ID under which a transaction records the size of the
// dead-letter journal.
func (r *Runner) journalKey(size int64) string {
	return "kisflow:dead-letters:" + r.journalID + ":" + strconv.FormatInt(size, 10)
}

// journal returns the dead-letter sink's Journal when the runner commits
// through a transactional sink.
func (r *Runner) journal() Journal {
	if r.cfg.Delivery != ExactlyOnce {
		return nil
	}
	j, _ := r.parts.DeadLetter.(Journal)
	return j
}

// recoverJournal cuts the dead-letter journal back to the size the last
// committed transaction recorded. Sinks that record no message IDs (their
// Seen reports none) leave it as it is.
func (r *Runner) recoverJournal(ctx context.Context) error {
	j := r.journal()
	if j == nil {
		return nil
	}
	var err error
	if r.journalID, err = j.ID(); err != nil {
		return err
	}
	size, err := j.Size()
	if err != nil {
		return err
	}
	r.journalStart = size
	seen, err := r.parts.TxSink.Seen(ctx, r.cfg.StateKey, []string{r.journalKey(size)})
	if err != nil {
		return fmt.Errorf("dead-letter journal: %w", err)
	}
	if seen[r.journalKey(size)] {
		r.journalAt = size
		return nil // the last dead letters were committed
	}
	if size == 0 {
		return nil
	}
	// At most one group's dead letters are uncommitted.
	ends, err := j.LineEnds(maxGroupRows + 1)
	if err != nil {
		return err
	}
	keys := make([]string, len(ends))
	for i, e := range ends {
		keys[i] = r.journalKey(e)
	}
	if seen, err = r.parts.TxSink.Seen(ctx, r.cfg.StateKey, keys); err != nil {
		return fmt.Errorf("dead-letter journal: %w", err)
	}
	for i := len(ends) - 1; i >= 0; i-- {
		if !seen[keys[i]] {
			continue
		}
		r.cfg.Logger.Warn(fmt.Sprintf("%d dead letters of a batch that did not commit before the last stop were removed; the batch is processed again",
			len(ends)-1-i))
		r.journalStart, r.journalAt = ends[i], ends[i]
		return j.Truncate(ends[i])
	}
	return nil // no size recorded: the sink records no IDs, or none committed yet
}

// journalIDs returns the IDs that record the dead-letter journal's size in
// a commit, when it changed since the last commit recorded it (a size is
// recorded once: sizes only grow), and that size. The first record of a run
// also records the size at start, so that dead letters of a crashed first
// group can be told from committed ones. Only the commit loop calls it.
func (r *Runner) journalIDs(ctx context.Context) ([]string, int64, error) {
	j := r.journal()
	if j == nil {
		return nil, -1, nil
	}
	var size int64
	if err := r.retryForever(ctx, r.dlqLink, func() (err error) { size, err = j.Size(); return err }); err != nil {
		return nil, -1, err
	}
	switch {
	case size == r.journalAt:
		return nil, size, nil
	case r.journalAt < 0 && size != r.journalStart:
		return []string{r.journalKey(r.journalStart), r.journalKey(size)}, size, nil
	}
	return []string{r.journalKey(size)}, size, nil
}
