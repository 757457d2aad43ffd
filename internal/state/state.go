// Package state keeps the keyed state of a streaming job in memory: what
// is committed, and the changes of the batches in flight.
//
// Each part of a batch (the share of an epoch one worker runs) changes
// state through a Txn of its own. A Txn reads its own changes, then those
// of the earlier Txns of the same lane (the worker that runs it, to which
// every row of a key goes) that are not settled yet, then the committed
// state. When the batch commits, the merged changes of its Txns are
// written to the store and applied to the committed state; when it is
// returned to its source instead, they are dropped. A Txn that read
// anything before a drop can no longer commit (Stale): it may have read
// the dropped changes, so its batch is returned too, and the state never
// holds the effect of a batch that will be delivered again.
package state

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// ID names one entry: state Name, stream key Key, and Field, the entry of
// a map state ("" for a value state).
type ID struct{ Name, Key, Field string }

// Entry is the value of an entry, or in a Txn, a change of it.
type Entry struct {
	Val     any    // the value a function set; nil when Raw holds it
	Raw     []byte // JSON loaded from the store, decoded when read
	Exp     int64  // expiry, Unix milliseconds; 0: never
	Deleted bool   // in a Txn: the entry was deleted
	Part    string // the source partition of the entry's key ("" when none or unknown)
}

func (e Entry) live() bool {
	return !e.Deleted && (e.Exp == 0 || time.Now().UnixMilli() < e.Exp)
}

type nameKey struct{ name, key string }

// cell holds a committed entry. Readers copy e under the table's lock.
type cell struct {
	id   ID
	h    uint64 // the hash of id
	next *cell  // the next cell of an ID of the same hash
	e    Entry
	// unsaved: the cell is in Table.unsaved. stored: the store holds the
	// entry or a save under way (or failed, to be made again) writes it,
	// so that deleting it needs a write. gone: the cell left the table,
	// deleted (a deletion to save) or dropped (its value still to save).
	unsaved, stored bool
	gone            int8
}

const (
	deleted = 1 + iota
	dropped
)

// SweepEvery is how often at most expired entries are removed from memory
// at a commit; reads never see them before that.
const SweepEvery = time.Minute

// Table is a job's keyed state. Begin, Scratch and the Txns' methods are
// called by workers; Load before the job runs; Stale, Drop, Changes and
// Apply by the commit loop only.
type Table struct {
	// Kept is set when a store keeps the table's commits (the job's
	// exactly-once sink or checkpoint store): state that is optional,
	// the windows of YAML functions, is written only then.
	Kept bool

	encode func(any) ([]byte, error)
	lanes  []*Txn // the last Txn begun on each lane: touched by the lane's worker only
	gen    atomic.Uint64
	moves  atomic.Uint64 // counts the partitions dropped or loaded: see Moves

	mu        sync.RWMutex
	seed      maphash.Seed
	collide   bool // tests only: see hash
	committed cells
	// unsaved is the cells changed by ApplyUnsaved since TakeUnsaved
	// last ran, each once, in the order first changed.
	unsaved  []*cell
	fields   map[nameKey]map[string]struct{} // the fields of map states
	names    map[string]struct{}             // every state name committed once: View looks each up
	lastName string                          // the name put last, in names
	swept    time.Time

	timerMu sync.Mutex
	timers  []*laneTimers // per lane, made on first use
}

// New returns an empty table for a job with lanes workers; encode turns a
// value into the JSON the store keeps.
func New(lanes int, encode func(any) ([]byte, error)) *Table {
	return &Table{encode: encode, lanes: make([]*Txn, max(lanes, 1)), seed: maphash.MakeSeed(), committed: cells{m: map[uint64]*cell{}},
		fields: map[nameKey]map[string]struct{}{}, names: map[string]struct{}{}, swept: time.Now()}
}

// Load adds a committed entry, as the store gave it back.
func (t *Table) Load(c stream.StateChange) error {
	if c.Deleted {
		return nil
	}
	id, e := ID{c.Name, c.Key, c.Field}, Entry{Raw: c.Value, Exp: c.ExpiresAt, Part: c.Partition}
	t.mu.Lock()
	t.put(t.hash(id), id, e, false)
	t.mu.Unlock()
	if strings.HasPrefix(c.Name, TimerPrefix) {
		if at, ok := timerValue(e); ok {
			t.pushTimer(t.laneOf(c.Key), Timer{ID: id, At: at})
		}
	}
	return nil
}

// DropPartitions removes from memory the committed entries of the source
// partitions parts: another process owns them now, or their state is
// about to be loaded again from the store. Entries without a partition
// stay. It returns how many entries it removed.
func (t *Table) DropPartitions(parts []string) int {
	set := make(map[string]struct{}, len(parts))
	for _, p := range parts {
		if p != "" {
			set[p] = struct{}{}
		}
	}
	if len(set) == 0 {
		return 0
	}
	t.moves.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	t.committed.each(func(c *cell) {
		if _, ok := set[c.e.Part]; ok {
			t.delete(c, dropped)
			n++
		}
	})
	return n
}

// PartitionsLoaded tells the table that the entries of partitions it
// dropped were loaded again (Load): see Moves.
func (t *Table) PartitionsLoaded() { t.moves.Add(1) }

// Moves is a number that changes whenever the table drops the entries of
// source partitions (DropPartitions) or loads them (PartitionsLoaded):
// state derived from the committed entries, such as a window lane's
// operator, is built again from them when it changed since it was built.
func (t *Table) Moves() uint64 { return t.moves.Load() }

// Moves is the table's Moves (see Table.Moves).
func (x *Txn) Moves() uint64 { return x.t.Moves() }

// Committed returns the committed entry id, expired or not.
func (t *Table) Committed(id ID) (Entry, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.get(id)
}

// get returns the committed entry id; the caller holds t.mu.
func (t *Table) get(id ID) (Entry, bool) {
	if c := t.committed.get(t.hash(id), id); c != nil {
		return c.e, true
	}
	return Entry{}, false
}

// Lane is the lane of the Txn: a worker (0 with one lane), -1 for a part
// whose rows may go to any worker of several, -2 for a Scratch Txn.
func (x *Txn) Lane() int {
	if len(x.t.lanes) == 1 && x.lane != anyLane {
		return 0
	}
	return x.lane
}

// Len is the number of committed entries (expired ones not yet swept
// included).
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.committed.n
}

// WindowPrefix starts the names of the state of YAML window functions,
// which only the window reads (through Entries): a lane's clock and its
// deltas, each the window-groups one batch changed (earlier versions kept
// one entry per window-group). Their fields are not indexed: Fields and
// View do not list them.
const WindowPrefix = "kisflow.window/"

// indexed reports whether id is a field of a map state that Fields and
// View list.
func indexed(id ID) bool { return id.Field != "" && !strings.HasPrefix(id.Name, WindowPrefix) }

// put sets the committed entry id, of hash h, in place when the table
// has it, and returns its cell; with unsaved, the cell is one to save.
func (t *Table) put(h uint64, id ID, e Entry, unsaved bool) *cell {
	c := t.committed.get(h, id)
	if c != nil {
		c.e = e
	} else {
		c = &cell{id: id, e: e}
		t.committed.add(h, c)
	}
	if !unsaved {
		c.stored = true // saved with its batch, or loaded
	} else if !c.unsaved {
		c.unsaved = true
		t.unsaved = append(t.unsaved, c)
	}
	if id.Name != t.lastName {
		t.names[id.Name] = struct{}{}
		t.lastName = id.Name
	}
	if indexed(id) {
		nk := nameKey{id.Name, id.Key}
		fs := t.fields[nk]
		if fs == nil {
			fs = map[string]struct{}{}
			t.fields[nk] = fs
		}
		fs[id.Field] = struct{}{}
	}
	return c
}

// delete removes the committed cell c, deleted or dropped (see cell);
// an unsaved cell stays in Table.unsaved.
func (t *Table) delete(c *cell, how int8) {
	c.gone = how
	t.committed.remove(c)
	if id := c.id; indexed(id) {
		nk := nameKey{id.Name, id.Key}
		if fs := t.fields[nk]; fs != nil {
			delete(fs, id.Field)
			if len(fs) == 0 {
				delete(t.fields, nk)
			}
		}
	}
}

// Begin returns the Txn of a part run on lane (the worker it runs on, to
// which every row of its keys goes); lane < 0 is a part whose rows may go
// to any worker: it may not use state when there are several lanes. Only
// the lane's worker may call Begin with that lane.
func (t *Table) Begin(lane int) *Txn {
	x := &Txn{t: t, lane: lane}
	if len(t.lanes) == 1 {
		x.lane = 0
	}
	if x.lane >= 0 {
		prev := t.lanes[x.lane]
		if prev != nil {
			// The lane's previous part is done: its undo log is free,
			// and its size a good guess of this one's.
			x.undo, prev.undo = prev.undo[:0], nil
			x.hint = len(prev.changes)
			if prev.settled.Load() {
				prev = nil // nothing to read there: let it go
			}
		}
		x.prev.Store(prev)
		t.lanes[x.lane] = x
	}
	return x
}

// Scratch returns a Txn that sees the committed state, may use any key,
// and is never committed: for runs made again only to trace rows.
func (t *Table) Scratch() *Txn { return &Txn{t: t, lane: anyLane} }

const anyLane = -2

// Changed reports whether any of txns changed state.
func Changed(txns []*Txn) bool {
	for _, x := range txns {
		if len(x.changes) > 0 {
			return true
		}
	}
	return false
}

// Stale reports whether any of txns used state before changes it may have
// read were dropped: its batch must not commit.
func (t *Table) Stale(txns []*Txn) bool {
	g := t.gen.Load()
	for _, x := range txns {
		if x.touched && x.gen != g {
			return true
		}
	}
	return false
}

// Invalidate makes every Txn that used state so far Stale: the committed
// state they read was replaced (loaded again from the store).
func (t *Table) Invalidate() { t.gen.Add(1) }

// Drop forgets the changes of txns, whose batch is returned to its source.
func (t *Table) Drop(txns []*Txn) {
	for _, x := range txns {
		x.settled.Store(true) // before the generation moves: see Txn.use
		x.prev.Store(nil)
		if x.touched {
			t.gen.Add(1)
		}
	}
}

// Changes returns the merged changes of txns (in commit order: a later
// change of an entry wins), with values encoded for the store.
func (t *Table) Changes(txns []*Txn) ([]stream.StateChange, error) {
	if len(txns) == 1 {
		out := make([]stream.StateChange, 0, len(txns[0].log))
		var buf []byte
		for _, c := range txns[0].log {
			sc, err := t.encodeChange(&buf, c.id, c.e)
			if err != nil {
				return nil, err
			}
			out = append(out, sc)
		}
		return out, nil
	}
	merged := map[ID]Entry{}
	Merge(merged, txns)
	return t.Encode(merged)
}

// Merge adds the changes of txns to into, in order: a later change of an
// entry wins.
func Merge(into map[ID]Entry, txns []*Txn) {
	for _, x := range txns {
		for _, c := range x.log {
			into[c.id] = c.e
		}
	}
}

// HasUnsaved reports whether changes applied by ApplyUnsaved wait for
// TakeUnsaved. Only the commit loop calls it.
func (t *Table) HasUnsaved() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.unsaved) > 0
}

// TakeUnsaved adds to into, the changes to write at the next save, the
// committed entries that ApplyUnsaved changed since it last ran (their
// values now: a later change of an entry wins), each once however many
// batches changed it, and the deletions of those deleted since. An entry
// the store does not hold that was deleted again is not there (a window
// opened and closed between two saves costs no write); an entry dropped
// from memory (its partition revoked, or expired) is, with its last
// value. Only the commit loop calls it, before it writes into.
func (t *Table) TakeUnsaved(into map[ID]Entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, c := range t.unsaved {
		t.unsaved[i] = nil
		c.unsaved = false
		switch c.gone {
		case 0, dropped:
			into[c.id] = c.e
			c.stored = true
		case deleted:
			if t.committed.get(c.h, c.id) != nil {
				continue // a later cell of the entry puts it
			}
			if c.stored {
				into[c.id] = Entry{Deleted: true}
			} else if e, ok := into[c.id]; ok && !e.Deleted {
				// A put that failed to save, of an entry no save wrote since.
				into[c.id] = Entry{Deleted: true}
			}
		}
	}
	t.unsaved = t.unsaved[:0]
}

// Encode returns changes as the store takes them, values encoded.
func (t *Table) Encode(changes map[ID]Entry) ([]stream.StateChange, error) {
	out := make([]stream.StateChange, 0, len(changes))
	var buf []byte
	for id, e := range changes {
		c, err := t.encodeChange(&buf, id, e)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// encodeChange returns the change e of id as the store takes it. A value
// of a common type is encoded into *buf (see appendJSON), which changes
// share: a value is a slice of it, never written again.
func (t *Table) encodeChange(buf *[]byte, id ID, e Entry) (stream.StateChange, error) {
	c := stream.StateChange{Name: id.Name, Key: id.Key, Field: id.Field, Deleted: e.Deleted, ExpiresAt: e.Exp, Partition: e.Part}
	if !e.Deleted {
		c.Value = e.Raw
		if e.Val != nil || e.Raw == nil {
			if cap(*buf)-len(*buf) < 64 {
				*buf = make([]byte, 0, 16<<10)
			}
			start := len(*buf)
			if b, ok := appendJSON(*buf, e.Val); ok {
				*buf = b
				c.Value = b[start:len(b):len(b)]
				return c, nil
			}
			b, err := t.encode(e.Val)
			if err != nil {
				return c, fmt.Errorf("state %q, key %q: encode: %w", id.Name, id.Key, err)
			}
			c.Value = b
		}
	}
	return c, nil
}

// Apply makes the changes of txns, committed to the store, the committed
// state, in order, and settles them. Expired entries are swept from time
// to time.
func (t *Table) Apply(txns []*Txn) { t.apply(txns, false) }

// ApplyUnsaved is Apply for changes committed in memory only, to be
// written at the next save: see TakeUnsaved.
func (t *Table) ApplyUnsaved(txns []*Txn) { t.apply(txns, true) }

func (t *Table) apply(txns []*Txn, unsaved bool) {
	t.mu.Lock()
	for _, x := range txns {
		for _, c := range x.log {
			if !c.e.Deleted {
				t.put(c.h, c.id, c.e, unsaved)
				continue
			}
			if cl := t.committed.get(c.h, c.id); cl != nil {
				t.delete(cl, deleted)
				if unsaved && !cl.unsaved {
					cl.unsaved = true
					t.unsaved = append(t.unsaved, cl)
				}
			}
		}
	}
	if now := time.Now(); now.Sub(t.swept) >= SweepEvery {
		t.swept = now
		ms := now.UnixMilli()
		t.committed.each(func(c *cell) {
			if c.e.Exp != 0 && c.e.Exp <= ms {
				t.delete(c, dropped)
			}
		})
	}
	t.mu.Unlock()
	for _, x := range txns {
		x.settled.Store(true)
		x.prev.Store(nil)
	}
}

// Txn is the state changes of one part of a batch. It is used by one
// goroutine at a time.
type Txn struct {
	t       *Table
	lane    int
	prev    atomic.Pointer[Txn] // the lane's Txn before this one
	settled atomic.Bool         // committed or dropped: read the table instead
	touched bool                // state was used; gen holds the generation then
	gen     uint64
	changes map[uint64]int32     // the index in log of each entry changed, by the hash of its ID
	clash   map[ID]int32         // those whose hash an earlier entry's took (nil: none)
	log     []change             // the changes, in the order their entries were first changed
	fields  map[nameKey][]string // map-state fields changed
	undo    []undo
	hint    int // the expected number of changes
	// seen is the last entry looked up in changes, and where it is
	// (-1: not there): a function that reads an entry, then sets it,
	// looks it up once.
	seen      ID
	seenH     uint64
	seenAt    int32
	seenTaken bool // another entry's change holds seenH in changes
	seenSet   bool
	// parts maps the stream keys of the part's messages to their source
	// partitions; nil for a source without partitions. partsOf makes it
	// when state is first changed.
	parts   map[string]string
	partsOf func() map[string]string
}

// SetPartitions gives the Txn keys, which returns the source partition of
// each stream key of its part's messages (called once, when the Txn first
// changes state): a changed entry records the partition of its key, so
// that it follows that partition between processes. An entry whose key
// is not among them (state of another key, or changed by a flush) keeps
// the partition it had, or has none.
func (x *Txn) SetPartitions(keys func() map[string]string) { x.partsOf = keys }

// partOf returns the partition a change of id records.
func (x *Txn) partOf(id ID) string {
	if x.partsOf != nil {
		x.parts, x.partsOf = x.partsOf(), nil
	}
	if x.parts == nil {
		return ""
	}
	if p, ok := x.parts[id.Key]; ok {
		return p
	}
	if e, ok := x.lookup(id); ok {
		return e.Part
	}
	return ""
}

// change is the change of an entry in a Txn.
type change struct {
	id ID
	h  uint64 // the hash of id
	e  Entry
}

// undo is what Rollback needs to undo a change: the entry's earlier
// change in the Txn, if it had one; an entry it had none of is the last of
// the log when its change is undone (the undo records are undone last
// first).
// find returns the index in log of the change of id, -1 if none, and the
// hash of id.
func (x *Txn) find(id ID) (int32, uint64) {
	if x.seenSet && id == x.seen {
		return x.seenAt, x.seenH
	}
	h := x.t.hash(id)
	i, taken := x.findHash(h, id)
	x.seen, x.seenH, x.seenAt, x.seenTaken, x.seenSet = id, h, i, taken, true
	return i, h
}

// findHash returns the index in log of the change of id, of hash h, -1 if
// none; taken reports that another entry's change holds h in changes.
func (x *Txn) findHash(h uint64, id ID) (i int32, taken bool) {
	i, ok := x.changes[h]
	switch {
	case !ok:
		return -1, false
	case x.log[i].id == id:
		return i, false
	}
	if j, ok := x.clash[id]; ok {
		return j, true
	}
	return -1, true
}

type undo struct {
	i    int32
	prev Entry
	had  bool
}

// ErrUnkeyed is returned by a Txn used by a part whose rows may go to any
// worker when there are several.
var ErrUnkeyed = errors.New("keyed state with several workers needs the stream's key (stream.key): each key's rows must go to one worker")

// ErrNotOwned is returned (wrapped) when a function uses the state of a key
// whose rows go to another worker.
var ErrNotOwned = errors.New("state key is not the stream key of the rows this worker runs")

// use checks that the Txn may use key, and records the generation the
// first time.
func (x *Txn) use(key string) error {
	if !x.touched {
		x.touched = true
		x.gen = x.t.gen.Load()
	}
	n := len(x.t.lanes)
	switch {
	case x.lane == anyLane || n == 1:
		return nil
	case x.lane < 0:
		return ErrUnkeyed
	case Partition(key, n) != x.lane:
		return fmt.Errorf("key %q: %w (with several workers a function may use the state of its rows' stream.key only)", key, ErrNotOwned)
	}
	return nil
}

// Get returns the live value of id.
func (x *Txn) Get(id ID) (Entry, bool, error) {
	if err := x.use(id.Key); err != nil {
		return Entry{}, false, err
	}
	e, ok := x.lookup(id)
	if !ok || !e.live() {
		return Entry{}, false, nil
	}
	return e, true, nil
}

func (x *Txn) lookup(id ID) (Entry, bool) {
	i, h := x.find(id)
	if i >= 0 {
		return x.log[i].e, true
	}
	for p := x.prev.Load(); p != nil && !p.settled.Load(); p = p.prev.Load() {
		if i, _ := p.findHash(h, id); i >= 0 {
			return p.log[i].e, true
		}
	}
	x.t.mu.RLock()
	defer x.t.mu.RUnlock()
	if c := x.t.committed.get(h, id); c != nil {
		return c.e, true
	}
	return Entry{}, false
}

// Put sets id to val, expiring after ttl (<= 0: never).
func (x *Txn) Put(id ID, val any, ttl time.Duration) error {
	if err := x.use(id.Key); err != nil {
		return err
	}
	var exp int64
	if ttl > 0 {
		exp = time.Now().Add(ttl).UnixMilli()
	}
	x.set(id, Entry{Val: val, Exp: exp})
	return nil
}

// PutIn is Put for an entry that follows source partition part, whatever
// its key (Put records the partition of the entry's key): an entry that
// gathers the state of several keys of one partition, such as a batch's
// changes of a window (see WindowPrefix). It never expires.
func (x *Txn) PutIn(id ID, val any, part string) error {
	if err := x.use(id.Key); err != nil {
		return err
	}
	x.setPart(id, Entry{Val: val, Part: part})
	return nil
}

// KeyPartition returns the source partition of the messages of stream key
// key in the Txn's part, when its source has partitions and the part holds
// a message of that key (see SetPartitions).
func (x *Txn) KeyPartition(key string) (string, bool) {
	if x.partsOf != nil {
		x.parts, x.partsOf = x.partsOf(), nil
	}
	p, ok := x.parts[key]
	return p, ok
}

// Partitioned reports whether the Txn's part came from a source whose
// state follows partitions (see SetPartitions).
func (x *Txn) Partitioned() bool { return x.partsOf != nil || x.parts != nil }

// Delete deletes id.
func (x *Txn) Delete(id ID) error {
	if err := x.use(id.Key); err != nil {
		return err
	}
	x.set(id, Entry{Deleted: true})
	return nil
}

func (x *Txn) set(id ID, e Entry) {
	e.Part = x.partOf(id)
	x.setPart(id, e)
}

// setPart records the change e of id, whose Part is set.
func (x *Txn) setPart(id ID, e Entry) {
	if x.changes == nil {
		x.changes = make(map[uint64]int32, x.hint)
		x.log = make([]change, 0, x.hint)
	}
	i, h := x.find(id)
	if had := i >= 0; had {
		x.undo = append(x.undo, undo{i: i, prev: x.log[i].e, had: true})
		x.log[i].e = e
		return
	}
	i = int32(len(x.log))
	x.undo = append(x.undo, undo{i: i})
	if x.seenTaken {
		if x.clash == nil {
			x.clash = map[ID]int32{}
		}
		x.clash[id] = i
	} else {
		x.changes[h] = i
	}
	x.log = append(x.log, change{id, h, e})
	x.seenAt = i
	if indexed(id) {
		if x.fields == nil {
			x.fields = map[nameKey][]string{}
		}
		nk := nameKey{id.Name, id.Key}
		x.fields[nk] = append(x.fields[nk], id.Field)
	}
}

// Fields returns the fields of the map state name for key that may be
// live (each to be read with Get), in no order; none for a name that
// starts with WindowPrefix.
func (x *Txn) Fields(name, key string) ([]string, error) {
	if err := x.use(key); err != nil {
		return nil, err
	}
	nk := nameKey{name, key}
	seen := map[string]struct{}{}
	var out []string
	add := func(f string) {
		if _, ok := seen[f]; !ok {
			seen[f] = struct{}{}
			out = append(out, f)
		}
	}
	for _, f := range x.fields[nk] {
		add(f)
	}
	for p := x.prev.Load(); p != nil && !p.settled.Load(); p = p.prev.Load() {
		for _, f := range p.fields[nk] {
			add(f)
		}
	}
	x.t.mu.RLock()
	for f := range x.t.fields[nk] {
		add(f)
	}
	x.t.mu.RUnlock()
	return out, nil
}

// Lanes is the number of lanes of the table (the job's workers).
func (t *Table) Lanes() int { return len(t.lanes) }

// Lanes is the number of lanes of the Txn's table (the job's workers).
func (x *Txn) Lanes() int { return len(x.t.lanes) }

// Kept reports whether a store keeps the commits of the Txn's table (see
// Table.Kept).
func (x *Txn) Kept() bool { return x.t.Kept }

// Savepoint marks the changes so far; Rollback returns to a mark.
func (x *Txn) Savepoint() int { return len(x.undo) }

// Rollback undoes the changes made since the savepoint sp: those of a run
// that failed, to be tried again or dead-lettered.
func (x *Txn) Rollback(sp int) {
	x.seenSet = false
	for i := len(x.undo) - 1; i >= sp; i-- {
		u := x.undo[i]
		if u.had {
			x.log[u.i].e = u.prev
			continue
		}
		// Not had: every entry first changed after it was undone already.
		last := len(x.log) - 1
		c := x.log[last]
		if j, ok := x.clash[c.id]; ok && j == int32(last) {
			delete(x.clash, c.id)
		} else {
			delete(x.changes, c.h)
		}
		x.log[last] = change{}
		x.log = x.log[:last]
	}
	clear(x.undo[sp:])
	x.undo = x.undo[:sp]
}

// Partition maps a stream key to one of n workers (FNV-1a): the runtime
// sends a key's rows to that worker.
func Partition(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

type ctxKey struct{}

// NewContext returns ctx carrying x, for the flow run it is given to.
func NewContext(ctx context.Context, x *Txn) context.Context {
	return context.WithValue(ctx, ctxKey{}, x)
}

// FromContext returns the Txn ctx carries, nil if none.
func FromContext(ctx context.Context) *Txn {
	x, _ := ctx.Value(ctxKey{}).(*Txn)
	return x
}

// IsScratch reports whether x is a Scratch Txn, never committed.
func (x *Txn) IsScratch() bool { return x.lane == anyLane }

// Entries calls fn with each live entry of state name the Txn sees (its
// own changes, those of the lane's unsettled Txns, the committed state)
// whose key its lane owns (every key with one lane, or for a Scratch
// Txn), in no order. It reads the whole committed state: it is for
// loading a lane's share of a state, not for the path of each row.
func (x *Txn) Entries(name string, fn func(ID, Entry) error) error {
	if !x.touched {
		x.touched = true
		x.gen = x.t.gen.Load()
	}
	n := len(x.t.lanes)
	owns := func(key string) bool {
		return n == 1 || x.lane == anyLane || x.lane >= 0 && Partition(key, n) == x.lane
	}
	if x.lane == -1 && n > 1 {
		return ErrUnkeyed
	}
	seen := map[ID]Entry{}
	for _, c := range x.log {
		if c.id.Name == name {
			seen[c.id] = c.e
		}
	}
	for p := x.prev.Load(); p != nil && !p.settled.Load(); p = p.prev.Load() {
		for _, c := range p.log {
			if _, ok := seen[c.id]; !ok && c.id.Name == name {
				seen[c.id] = c.e
			}
		}
	}
	x.t.mu.RLock()
	if _, ok := x.t.names[name]; ok {
		x.t.committed.each(func(c *cell) {
			if _, ok := seen[c.id]; !ok && c.id.Name == name && owns(c.id.Key) {
				seen[c.id] = c.e
			}
		})
	}
	x.t.mu.RUnlock()
	for id, e := range seen {
		if !e.live() || !owns(id.Key) {
			continue
		}
		if err := fn(id, e); err != nil {
			return err
		}
	}
	return nil
}

// CommittedOf calls fn with each live committed entry of state name whatever
// lane owns its key, in no order: what an earlier run left, read when the
// lanes' share of it is not known (the number of lanes changed).
func (t *Table) CommittedOf(name string, fn func(ID, Entry) error) error {
	var out []ID
	var es []Entry
	t.mu.RLock()
	if _, ok := t.names[name]; ok {
		t.committed.each(func(c *cell) {
			if c.id.Name == name && c.e.live() {
				out, es = append(out, c.id), append(es, c.e)
			}
		})
	}
	t.mu.RUnlock()
	for i, id := range out {
		if err := fn(id, es[i]); err != nil {
			return err
		}
	}
	return nil
}

// CommittedEntries is Table.CommittedOf of the Txn's table.
func (x *Txn) CommittedEntries(name string, fn func(ID, Entry) error) error {
	return x.t.CommittedOf(name, fn)
}
