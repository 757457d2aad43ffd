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
	// fresh marks a change kept by MergeUnsaved for an entry the store
	// does not hold: deleting it again needs no write.
	fresh bool
}

func (e Entry) live() bool {
	return !e.Deleted && (e.Exp == 0 || time.Now().UnixMilli() < e.Exp)
}

type nameKey struct{ name, key string }

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
	committed map[ID]Entry
	fields    map[nameKey]map[string]struct{} // the fields of map states
	names     map[string]struct{}             // every state name committed once: View looks each up
	swept     time.Time

	timerMu sync.Mutex
	timers  []*laneTimers // per lane, made on first use
}

// New returns an empty table for a job with lanes workers; encode turns a
// value into the JSON the store keeps.
func New(lanes int, encode func(any) ([]byte, error)) *Table {
	return &Table{encode: encode, lanes: make([]*Txn, max(lanes, 1)), committed: map[ID]Entry{},
		fields: map[nameKey]map[string]struct{}{}, names: map[string]struct{}{}, swept: time.Now()}
}

// Load adds a committed entry, as the store gave it back.
func (t *Table) Load(c stream.StateChange) error {
	if c.Deleted {
		return nil
	}
	id, e := ID{c.Name, c.Key, c.Field}, Entry{Raw: c.Value, Exp: c.ExpiresAt, Part: c.Partition}
	t.mu.Lock()
	t.put(id, e)
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
	for id, e := range t.committed {
		if _, ok := set[e.Part]; ok {
			t.delete(id)
			n++
		}
	}
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
	e, ok := t.committed[id]
	return e, ok
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
	return len(t.committed)
}

// WindowPrefix starts the names of the state of YAML window functions:
// one entry per window-group, which only the window reads (through
// Entries). Their fields are not indexed: Fields and View do not list
// them. A windowed job changes about one such entry per row it reads, and
// keeping the index of fields cost about a fifth of its CPU.
const WindowPrefix = "kisflow.window/"

// indexed reports whether id is a field of a map state that Fields and
// View list.
func indexed(id ID) bool { return id.Field != "" && !strings.HasPrefix(id.Name, WindowPrefix) }

func (t *Table) put(id ID, e Entry) {
	t.committed[id] = e
	if _, ok := t.names[id.Name]; !ok {
		t.names[id.Name] = struct{}{}
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
}

func (t *Table) delete(id ID) {
	delete(t.committed, id)
	if indexed(id) {
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
		return t.Encode(txns[0].changes)
	}
	merged := map[ID]Entry{}
	Merge(merged, txns)
	return t.Encode(merged)
}

// Merge adds the changes of txns to into, in order: a later change of an
// entry wins.
func Merge(into map[ID]Entry, txns []*Txn) {
	for _, x := range txns {
		for id, e := range x.changes {
			into[id] = e
		}
	}
}

// MergeUnsaved adds the changes of txns, about to be applied (see Apply),
// to into, the changes applied since the store was last written (or that
// are being written): a later change of an entry wins. An entry that was
// neither committed nor in into when first changed is not in the store:
// when it is deleted again before into is written, it leaves into, so
// that the store is not asked to delete what it never held (a window
// opened and closed between two saves costs no write). Only the commit
// loop calls it.
func (t *Table) MergeUnsaved(into map[ID]Entry, txns []*Txn) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, x := range txns {
		for id, e := range x.changes {
			prev, had := into[id]
			if had {
				e.fresh = prev.fresh
			} else {
				_, held := t.committed[id]
				e.fresh = !held
			}
			if e.Deleted && e.fresh {
				delete(into, id)
				continue
			}
			into[id] = e
		}
	}
}

// Encode returns changes as the store takes them, values encoded.
func (t *Table) Encode(changes map[ID]Entry) ([]stream.StateChange, error) {
	out := make([]stream.StateChange, 0, len(changes))
	for id, e := range changes {
		c := stream.StateChange{Name: id.Name, Key: id.Key, Field: id.Field, Deleted: e.Deleted, ExpiresAt: e.Exp, Partition: e.Part}
		if !e.Deleted {
			c.Value = e.Raw
			if e.Val != nil || e.Raw == nil {
				b, err := t.encode(e.Val)
				if err != nil {
					return nil, fmt.Errorf("state %q, key %q: encode: %w", id.Name, id.Key, err)
				}
				c.Value = b
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// Apply makes the changes of txns, committed to the store, the committed
// state, in order, and settles them. Expired entries are swept from time
// to time.
func (t *Table) Apply(txns []*Txn) {
	t.mu.Lock()
	for _, x := range txns {
		for id, e := range x.changes {
			if e.Deleted {
				t.delete(id)
			} else {
				t.put(id, e)
			}
		}
	}
	if now := time.Now(); now.Sub(t.swept) >= SweepEvery {
		t.swept = now
		ms := now.UnixMilli()
		for id, e := range t.committed {
			if e.Exp != 0 && e.Exp <= ms {
				t.delete(id)
			}
		}
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
	changes map[ID]Entry
	fields  map[nameKey][]string // map-state fields changed
	undo    []undo
	hint    int // the expected number of changes
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

type undo struct {
	id   ID
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
	if e, ok := x.changes[id]; ok {
		return e, true
	}
	for p := x.prev.Load(); p != nil && !p.settled.Load(); p = p.prev.Load() {
		if e, ok := p.changes[id]; ok {
			return e, true
		}
	}
	x.t.mu.RLock()
	e, ok := x.t.committed[id]
	x.t.mu.RUnlock()
	return e, ok
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
	if x.changes == nil {
		x.changes = make(map[ID]Entry, x.hint)
	}
	prev, had := x.changes[id]
	x.undo = append(x.undo, undo{id: id, prev: prev, had: had})
	x.changes[id] = e
	if !had && indexed(id) {
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
	for i := len(x.undo) - 1; i >= sp; i-- {
		u := x.undo[i]
		if u.had {
			x.changes[u.id] = u.prev
		} else {
			delete(x.changes, u.id)
		}
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
	for id, e := range x.changes {
		if id.Name == name {
			seen[id] = e
		}
	}
	for p := x.prev.Load(); p != nil && !p.settled.Load(); p = p.prev.Load() {
		for id, e := range p.changes {
			if _, ok := seen[id]; !ok && id.Name == name {
				seen[id] = e
			}
		}
	}
	x.t.mu.RLock()
	if _, ok := x.t.names[name]; ok {
		for id, e := range x.t.committed {
			if _, ok := seen[id]; !ok && id.Name == name && owns(id.Key) {
				seen[id] = e
			}
		}
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
		for id, e := range t.committed {
			if id.Name == name && e.live() {
				out, es = append(out, id), append(es, e)
			}
		}
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
