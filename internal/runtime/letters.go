package runtime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/kisflow-go/kisflow/stream"
)

// Tailer is an optional capability of a dead-letter sink that appends to a
// file (the default dead-letter file): it hands its last n records, oldest
// first, to fn. The runner reads the identities of the dead letters written
// last before it starts, so that the dead letters of batches processed
// again after a crash are not written twice.
type Tailer interface {
	Tail(n int, fn func(record []byte)) error
}

// letterID is the identity of a dead letter of message m (nil: not known);
// row is the rejected row's place in the message, "" for the whole
// message. It is derived from the message's ID, or its position when the
// source sets one per message, so the same failure has the same identity
// when the message is processed again; otherwise it is random. See
// stream.DeadLetter.
func (r *Runner) letterID(m *stream.Message, row string) string {
	var ref string
	switch {
	case m == nil:
	case m.ID != "":
		ref = "id\x00" + m.ID
	case m.Position != "" && r.ownPositions:
		ref = "position\x00" + m.Position
	}
	var sum [16]byte
	if ref == "" {
		_, _ = rand.Read(sum[:]) // never fails (crypto/rand)
		return hex.EncodeToString(sum[:])
	}
	h := sha256.Sum256([]byte(r.cfg.Name + "\x00" + ref + "\x00" + row))
	copy(sum[:], h[:])
	return hex.EncodeToString(sum[:])
}

// rowPlace names a row rejected past the first function of a message.
func rowPlace(layer, index int) string {
	if layer == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", layer, index)
}

// recentLetters remembers the identities of the last dead letters written,
// at most max of them, oldest forgotten first. Only the commit loop uses
// it.
type recentLetters struct {
	max  int
	seen map[string]struct{}
	ring []string
	next int
}

func newRecentLetters(max int) *recentLetters {
	return &recentLetters{max: max, seen: map[string]struct{}{}}
}

func (c *recentLetters) has(id string) bool {
	_, ok := c.seen[id]
	return ok
}

func (c *recentLetters) add(id string) {
	if id == "" || c.has(id) {
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, id)
	} else {
		delete(c.seen, c.ring[c.next])
		c.ring[c.next] = id
		c.next = (c.next + 1) % c.max
	}
	c.seen[id] = struct{}{}
}

// recentWindow is how many dead letters written last the runner
// remembers: those that can be written again are the ones of batches in
// flight, or committed since the last saved position, when the process
// stopped; this is many times that.
func (r *Runner) recentWindow() int {
	return max(100000, 2*(r.cfg.MaxInFlight*r.cfg.BatchSize+maxGroupRows))
}

// loadRecentLetters reads the identities of the dead letters written last
// from a dead-letter sink that can tell them (a Tailer).
func (r *Runner) loadRecentLetters() error {
	r.letters = newRecentLetters(r.recentWindow())
	t, ok := r.parts.DeadLetter.(Tailer)
	if !ok {
		return nil
	}
	var rec struct {
		LetterID string `json:"letter_id"`
	}
	err := t.Tail(r.letters.max, func(b []byte) {
		rec.LetterID = ""
		if json.Unmarshal(b, &rec) == nil {
			r.letters.add(rec.LetterID)
		}
	})
	if err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	return nil
}

// unwritten returns the dead letters not written yet: those whose identity
// is among the last written (a batch processed again after a crash, or a
// message a broker redelivered while it was in flight) are left out.
func (r *Runner) unwritten(dead []any) []any {
	var out []any
	batch := map[string]struct{}{}
	for _, d := range dead {
		id := d.(*stream.DeadLetter).LetterID
		if _, dup := batch[id]; dup || r.letters.has(id) {
			continue
		}
		batch[id] = struct{}{}
		out = append(out, d)
	}
	return out
}

// wrote records the identities of dead letters written.
func (r *Runner) wrote(dead []any) {
	for _, d := range dead {
		r.letters.add(d.(*stream.DeadLetter).LetterID)
	}
}

// writeDead writes dead letters not written yet, retrying as long as it
// takes; see unwritten. The dead letters it leaves out because they were
// written already (by an earlier run, or earlier in this one) are counted
// with those it writes: their messages were dead-lettered. A refusal that
// no retry mends (an error marked stream.Permanent or stream.Fatal) ends
// the run with that error. Only the commit loop calls it.
func (r *Runner) writeDead(ctx context.Context, dead []any) error {
	all := len(dead)
	dead = r.unwritten(dead)
	if len(dead) > 0 {
		err := r.retryForever(ctx, r.dlqLink, func() error {
			err := r.parts.DeadLetter.Write(ctx, dead)
			if stream.IsPermanent(err) || stream.IsFatal(err) {
				// The dead letters themselves, or the sink's configuration,
				// are refused: retrying would stall the stream for ever.
				return stream.Fatal(fmt.Errorf("%s refused dead letters (no retry can mend it): %w", r.dlqLink.label(), err))
			}
			return err
		})
		if err != nil {
			return err
		}
		r.wrote(dead)
		r.deadDirty = true
	}
	r.dead.Add(int64(all))
	return nil
}
