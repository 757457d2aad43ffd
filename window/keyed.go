package window

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// An operator's state as keyed state: one entry per window-group (a group
// in a tumbling or sliding window, or a group's sessions), plus its Clock.
// With tracking on (Track), the operator records the window-groups each
// call changes, and Changes reports them, encoded, or gone (emitted and
// freed), so that a caller writes only those. Whether a fixed window or a
// session is closed (kept for late: update) is not in its entry: it is
// whether its end is at or below the watermark, which the Clock gives.

// groupMagic starts every encoded window-group; the digit is the format's
// version.
const groupMagic = 'G'

// Clock is what an operator holds besides its window-groups: the largest
// time seen (processing time: the clock's time at the last row or tick),
// whether any was, whether it was flushed, the sequence that orders
// sessions, and what window its state is of.
type Clock struct {
	Window  string `json:"window"` // the fingerprint of the spec (see Fingerprint)
	Seen    bool   `json:"seen,omitempty"`
	Flushed bool   `json:"flushed,omitempty"`
	MaxTS   int64  `json:"max_ts"`
	Seq     uint64 `json:"seq,omitempty"`
}

// Clock returns the operator's Clock.
func (o *Operator) Clock() Clock {
	return Clock{Window: o.fingerprint(), Seen: o.seen, Flushed: o.flushed, MaxTS: o.maxTS, Seq: o.seq}
}

// Fingerprint names what the operator's state means: the window and the
// aggregates. State saved by an operator loads only into one with the same
// fingerprint.
func (o *Operator) Fingerprint() string { return o.fingerprint() }

// ErrOtherWindow is returned by SetClock for the clock of another window.
var ErrOtherWindow = errors.New("the state is of another window")

// SetClock sets the Clock of an operator that holds no window-group yet,
// before its groups are loaded with LoadGroup.
func (o *Operator) SetClock(c Clock) error {
	if c.Window != o.fingerprint() {
		return fmt.Errorf("%w (%s), not %s", ErrOtherWindow, c.Window, o.fingerprint())
	}
	o.seen, o.flushed, o.maxTS, o.seq = c.Seen, c.Flushed, c.MaxTS, max(o.seq, c.Seq)
	o.resume()
	return nil
}

// resume sets the watermark from the restored largest time. A flushed
// operator (its bounded source was exhausted) takes rows again: a new run
// reads what was appended. Its flush closed every window, the last one
// the one holding the largest time seen, so the watermark starts at that
// window's end (a session's: one gap later): a row of a window the flush
// emitted is late, a later one is on time.
func (o *Operator) resume() {
	if o.flushed {
		o.flushed = false
		// A session's row joins the flushed session while within gap of
		// its end.
		end := o.maxTS + 2*o.gap
		if o.spec.Type != Session {
			end = floorDiv(o.maxTS, o.slide)*o.slide + o.size
		}
		o.maxTS = end + o.late
	}
	o.wm = o.maxTS - o.late
}

// Group names a window-group: its group key (the canonical encoding of its
// group_by values), and its window's end (milliseconds), or Session for
// the sessions of the group.
type Group struct {
	Key     string
	End     int64
	Session bool
}

// Values returns the group's group_by values, in the spec's order, in
// their canonical form (see the package doc).
func (g Group) Values() []any {
	var out []any
	for b := []byte(g.Key); len(b) > 0; {
		v, rest, err := decodeValue(b)
		if err != nil {
			break
		}
		out = append(out, v)
		b = rest
	}
	return out
}

// KeyString formats a group_by value as the runtime formats a stream key,
// after making it canonical (see the package doc): a string as itself, a
// whole number in decimal, another number as Go's %v does, true and
// false, and nil (or a missing field) as "". Two values of one group give
// one string.
func KeyString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case float64:
		if x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	c, err := CanonicalValue(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	switch c.(type) {
	case int64, float64, string, bool, nil:
		return KeyString(c)
	}
	return fmt.Sprint(c)
}

// CanonicalValue returns v as a group_by value of an output row holds it:
// whole numbers as int64, other numbers as float64 (see the package doc).
func CanonicalValue(v any) (any, error) {
	b, err := appendValue(nil, v)
	if err != nil {
		return nil, err
	}
	c, _, err := decodeValue(b)
	return c, err
}

// change is a window-group a call changed: group g of bucket b (g < 0:
// all of b's groups, b closed or freed), or the sessions of s.
type change struct {
	b *bucket
	g int32
	s *sessGroup
}

// Track turns on (or off) the recording of the window-groups calls change.
func (o *Operator) Track(on bool) {
	o.track = on
	if !on {
		o.dropChanges()
	}
}

func (o *Operator) dropChanges() {
	for _, c := range o.changes {
		if c.s != nil {
			c.s.changed = false
		}
	}
	clear(o.changes)
	o.changes = o.changes[:0]
	// A new epoch: no group of a bucket is marked changed in it.
	if o.epoch++; o.epoch == 0 {
		for _, set := range []map[int64]*bucket{o.open, o.kept} {
			for _, b := range set {
				clear(b.marked)
			}
		}
		o.epoch = 1
	}
}

// markBucket records that group g of b changed.
func (o *Operator) markBucket(b *bucket, g int32) {
	if int(g) >= len(b.marked) {
		b.marked = append(b.marked, make([]uint32, len(b.keys)-len(b.marked))...)
	}
	if b.marked[g] != o.epoch {
		b.marked[g] = o.epoch
		o.changes = append(o.changes, change{b: b, g: g})
	}
}

// markGone records that every group of b is gone (b was closed and not
// kept, or freed).
func (o *Operator) markGone(b *bucket) {
	if o.track {
		o.changes = append(o.changes, change{b: b, g: -1})
	}
}

func (o *Operator) markSessions(g *sessGroup) {
	if o.track && !g.changed {
		g.changed = true
		o.changes = append(o.changes, change{s: g})
	}
}

// Changes calls fn with each window-group changed since the last call
// (with tracking on), in the order they first changed: data is the
// group's encoding, for LoadGroup, or nil when the group is gone (emitted
// and freed: its entry is to be deleted). data is valid during the call
// only. An error of fn stops the calls and is returned; the changes are
// forgotten all the same.
func (o *Operator) Changes(fn func(g Group, data []byte) error) error {
	return o.ChangesTagged(func(g Group, _ *any, data []byte) error { return fn(g, data) })
}

// ChangesTagged is Changes with, for each window-group, a slot that the
// operator keeps with the group until it is freed, for the caller's own
// use: what it derives from the group (the name of its state entry) is
// derived once per group rather than once per change. The slot holds nil
// until the caller sets it; the pointer is valid during the call only.
func (o *Operator) ChangesTagged(fn func(g Group, tag *any, data []byte) error) error {
	defer o.dropChanges()
	w := &writer{}
	for _, c := range o.changes {
		if c.s != nil {
			if err := o.sessionsChange(w, c.s, fn); err != nil {
				return err
			}
			continue
		}
		b := c.b
		b.growTags()
		live := o.open[b.end] == b || o.kept[b.end] == b
		if c.g < 0 {
			if live {
				continue
			}
			for g := range b.keys {
				if err := fn(Group{Key: b.keys[g], End: b.end}, &b.tags[g], nil); err != nil {
					return err
				}
			}
			continue
		}
		if !live {
			continue // reported with all of b's groups
		}
		w.b = w.b[:0]
		o.encodeBucketGroup(w, b, c.g)
		if err := fn(Group{Key: b.keys[c.g], End: b.end}, &b.tags[c.g], w.b); err != nil {
			return err
		}
	}
	return nil
}

// sessionsChange reports the change of the group of sessions s to fn, as
// ChangesTagged and ChangesByWindow both report it: its encoding, or nil
// when the group is gone.
func (o *Operator) sessionsChange(w *writer, s *sessGroup, fn func(g Group, tag *any, data []byte) error) error {
	s.changed = false
	w.b = w.b[:0]
	if o.groups[s.key] == s {
		o.encodeSessions(w, s)
	}
	return fn(Group{Key: s.key, Session: true}, &s.tag, nilIfEmpty(w.b))
}

// growTags gives each of b's groups a slot in b.tags (see ChangesTagged).
func (b *bucket) growTags() {
	if len(b.tags) < len(b.keys) {
		b.tags = append(b.tags, make([]any, len(b.keys)-len(b.tags))...)
	}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Groups calls fn with every window-group the operator holds, encoded as
// Changes encodes them.
func (o *Operator) Groups(fn func(g Group, data []byte) error) error {
	return o.GroupsTagged(func(g Group, _ *any, data []byte) error { return fn(g, data) })
}

// GroupsTagged is Groups with each group's slot (see ChangesTagged).
func (o *Operator) GroupsTagged(fn func(g Group, tag *any, data []byte) error) error {
	w := &writer{}
	for _, set := range []map[int64]*bucket{o.open, o.kept} {
		for _, b := range set {
			b.growTags()
			for g := range b.keys {
				w.b = w.b[:0]
				o.encodeBucketGroup(w, b, int32(g))
				if err := fn(Group{Key: b.keys[g], End: b.end}, &b.tags[g], w.b); err != nil {
					return err
				}
			}
		}
	}
	for _, s := range o.groups {
		w.b = w.b[:0]
		o.encodeSessions(w, s)
		if err := fn(Group{Key: s.key, Session: true}, &s.tag, w.b); err != nil {
			return err
		}
	}
	return nil
}

func (o *Operator) encodeBucketGroup(w *writer, b *bucket, g int32) {
	w.b = append(w.b, groupMagic, 'b')
	w.str(b.keys[g])
	w.int(b.end)
	o.writeAccs(w, b.accs[int(g)*o.na:int(g+1)*o.na])
}

func (o *Operator) encodeSessions(w *writer, g *sessGroup) {
	w.b = append(w.b, groupMagic, 's')
	w.str(g.key)
	w.uint(uint64(len(g.open) + len(g.kept)))
	for _, list := range [][]*session{g.open, g.kept} {
		for _, s := range list {
			w.int(s.start)
			w.int(s.end)
			w.uint(s.seq)
			o.writeAccs(w, s.accs)
		}
	}
}

// LoadGroup adds a window-group that Changes or Groups encoded, after
// SetClock. A fixed window whose end the watermark reached is a closed one
// kept for late: update; one the watermark passed by more than the
// lateness (or any closed one, without late: update) was freed when the
// state was saved, and is ignored. So are sessions.
func (o *Operator) LoadGroup(data []byte) error {
	_, err := o.loadGroup(data, o.wm, nil)
	return err
}

// LoadGroupTagged is LoadGroup that also sets the group's slot (see
// ChangesTagged) to tag, and reports whether the group was loaded (not
// ignored as closed). With open, the group is loaded open even when the
// watermark already reached its window's end, as LoadGroupFrom loads a
// group of an operator that held it open: CloseDue then emits it.
func (o *Operator) LoadGroupTagged(data []byte, tag any, open bool) (bool, error) {
	if open {
		return o.loadGroup(data, math.MinInt64, tag)
	}
	return o.loadGroup(data, o.wm, tag)
}

// LoadGroupFrom is LoadGroup for a window-group saved by another operator
// whose clock was from (a lane of a run with another number of workers):
// a window that operator held open is loaded open even when this
// operator's watermark already reached its end, so that CloseDue emits it
// instead of dropping it.
func (o *Operator) LoadGroupFrom(data []byte, from Clock) error {
	wm := int64(math.MinInt64)
	switch {
	case from.Flushed:
		wm = math.MaxInt64
	case from.Seen:
		wm = from.MaxTS - o.late
	}
	_, err := o.loadGroup(data, wm, nil)
	return err
}

// CloseDue closes the windows loaded open whose end the watermark already
// reached (see LoadGroupFrom) and returns their rows.
func (o *Operator) CloseDue() []map[string]any {
	o.closeUpTo()
	return o.take()
}

// loadGroup loads a window-group; openAbove is the watermark of the
// operator that saved it: its windows ending after it were open there.
func (o *Operator) loadGroup(data []byte, openAbove int64, tag any) (loaded bool, err error) {
	if len(data) < 2 || data[0] != groupMagic {
		return false, errors.New("window: not an encoded window-group")
	}
	r := &reader{b: data[2:]}
	key := r.str()
	switch data[1] {
	case 'b':
		end := r.int()
		accs := make([]accum, o.na)
		o.readAccs(r, accs)
		if r.err != nil {
			return false, fmt.Errorf("window: window-group: %w", r.err)
		}
		var b *bucket
		switch {
		case end > openAbove:
			if b = o.open[end]; b == nil {
				b = o.newBucket(end)
				o.open[end] = b
				i, _ := slices.BinarySearch(o.openEnds, end)
				o.openEnds = slices.Insert(o.openEnds, i, end)
			}
		case o.update && end > o.wm-o.late:
			if b = o.kept[end]; b == nil {
				b = o.newBucket(end)
				o.keep(b)
			}
		default:
			return false, nil
		}
		if _, found := b.index.find([]byte(key)); found {
			return false, fmt.Errorf("window: window-group loaded twice")
		}
		b.index.add([]byte(key), int32(len(b.keys)))
		b.keys = append(b.keys, key)
		b.accs = append(b.accs, accs...)
		if tag != nil {
			b.growTags()
			b.tags[len(b.keys)-1] = tag
		}
		o.hint = max(o.hint, len(b.keys))
		loaded = true
	case 's':
		if o.groups[key] != nil {
			return false, fmt.Errorf("window: session group loaded twice")
		}
		g := &sessGroup{key: key, tag: tag}
		n := r.count()
		for range n {
			s := &session{g: g, start: r.int(), end: r.int(), seq: r.uint(), accs: make([]accum, o.na)}
			o.readAccs(r, s.accs)
			if r.err != nil {
				return false, fmt.Errorf("window: session group: %w", r.err)
			}
			o.seq = max(o.seq, s.seq)
			switch {
			case s.end > openAbove:
				g.open = insertByStart(g.open, s)
				heap.Push(&o.timers, timer{s.end, s.seq, s})
			case o.update && s.end+o.late > o.wm:
				s.closed = true
				g.kept = insertByStart(g.kept, s)
				heap.Push(&o.timers, timer{s.end + o.late, s.seq, s})
			}
		}
		if loaded = len(g.open)+len(g.kept) > 0; loaded {
			o.groups[key] = g
		}
	default:
		return false, errors.New("window: not an encoded window-group")
	}
	if r.err == nil && len(r.b) > 0 {
		return false, errors.New("window: window-group: trailing bytes")
	}
	return loaded && r.err == nil, r.err
}

// ChangesByWindow is ChangesTagged for a caller that writes a batch's
// changes together rather than one entry per window-group: a window whose
// groups are all gone (closed and not kept, or freed) is reported once, by
// gone with its end, instead of once per group. A group of sessions that is
// gone is reported to fn with data nil, as ChangesTagged reports it.
func (o *Operator) ChangesByWindow(fn func(g Group, tag *any, data []byte) error, gone func(end int64) error) error {
	defer o.dropChanges()
	w := &writer{}
	for _, c := range o.changes {
		if c.s != nil {
			if err := o.sessionsChange(w, c.s, fn); err != nil {
				return err
			}
			continue
		}
		b := c.b
		live := o.open[b.end] == b || o.kept[b.end] == b
		if c.g < 0 {
			if live {
				continue
			}
			if err := gone(b.end); err != nil {
				return err
			}
			continue
		}
		if !live {
			continue // reported with the whole window
		}
		b.growTags()
		w.b = w.b[:0]
		o.encodeBucketGroup(w, b, c.g)
		if err := fn(Group{Key: b.keys[c.g], End: b.end}, &b.tags[c.g], w.b); err != nil {
			return err
		}
	}
	return nil
}

// GroupOf returns the window-group that Changes or Groups encoded as data,
// without loading it.
func GroupOf(data []byte) (Group, error) {
	if len(data) < 2 || data[0] != groupMagic {
		return Group{}, errors.New("window: not an encoded window-group")
	}
	r := &reader{b: data[2:]}
	key := r.str()
	var g Group
	switch data[1] {
	case 'b':
		g = Group{Key: key, End: r.int()}
	case 's':
		g = Group{Key: key, Session: true}
	default:
		return Group{}, errors.New("window: not an encoded window-group")
	}
	if r.err != nil {
		return Group{}, fmt.Errorf("window: window-group: %w", r.err)
	}
	return g, nil
}

// Held returns the number of window-groups the operator holds, as Groups
// reports them: the groups of open windows and of closed ones kept for
// late: update, and the groups of sessions.
func (o *Operator) Held() int {
	n := 0
	for _, set := range []map[int64]*bucket{o.open, o.kept} {
		for _, b := range set {
			n += len(b.keys)
		}
	}
	return n + len(o.groups)
}
