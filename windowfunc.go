package kisflow

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/engine"
	"github.com/kisflow-go/kisflow/internal/flatjson"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
	"github.com/kisflow-go/kisflow/window"
)

// windowHandler is the body of a Calculate function with a window block:
// one window.Operator per lane of the function's step in the flow (see
// windowLane), alive across runs.
type windowHandler struct {
	name string
	tick time.Duration // processing time: how often an idle stream ticks; 0 for event time
	spec window.Spec

	mu    sync.Mutex
	lanes []*windowLane // by lane; lanes[0] also serves runs outside a job

	secsWarned atomic.Bool // the epoch-seconds warning was logged
}

// windowLane is the window of one lane: a job's worker, to which every row
// of a stream key goes (state.Txn.Lane), or, outside a job, every run of
// the flow. Its operator takes the rows of the lane's runs, in the order
// they take its lock.
//
// When the job keeps its state (state.Table.Kept), the operator is a cache
// of keyed state entries (see windowEntries): the lane's clock (watermark),
// whose Seq numbers the lane's writes, and the lane's deltas: each write
// puts one entry per source partition holding the window-groups the batch
// changed, numbered by the write's Seq (see windowEntries and deltaMagic).
// A rebuild loads them in Seq order, a later record of a group replacing
// an earlier one. A delta none of whose records is the last of an open
// group is deleted (see deltaInfo); when the records the deltas hold still
// pass twice the groups the operator holds, the lane compacts: it writes
// every group again as one delta per partition and deletes the older ones.
//
// When a batch is returned to its source, or a run fails and is tried
// again, the state machinery drops or rolls back the batch's changes, and
// the next run reads a clock whose Seq is not the one the operator last
// wrote: the operator is rebuilt from the entries the run's Txn sees (the
// committed ones and those of the lane's batches still in flight), so that
// no batch is ever counted twice. A batch changes the operator only
// through rows, ticks and flushes, and each change moves a window-group or
// the clock, so a batch that changed it always wrote a clock with a new
// Seq.
type windowLane struct {
	mu     sync.Mutex
	op     *window.Operator
	loaded bool   // op holds the entries of the clock numbered seq
	seq    uint64 // the Seq of the clock op holds; 0: none
	last   uint64 // the largest Seq written or read
	moves  uint64 // the table's Moves when op was built

	// What the lane's entries hold, known when op was built and kept up
	// to date by write: the lane's deltas in Seq order, the records they
	// hold in all, entries of an earlier format (or of the lane before
	// the number of workers changed) to delete at the next compaction,
	// and whether the next write compacts whatever the count.
	deltas  []*deltaInfo
	held    int
	old     []state.ID
	compact bool
	// keyPart is the source partition of the stream key of each group,
	// from the first batch from a source with partitions on: a delta
	// follows one partition.
	keyPart map[string]string
	bufs    map[string]*deltaBuf // write's deltas, by partition
}

// deltaInfo is what a lane knows of one of its delta entries. A group's
// slot in the operator (see window.Operator.ChangesTagged) points to the
// delta that holds its last record (groupTag with partitions): when no
// record of a delta is the last of an open group any more, and it holds no
// tombstone an older delta of its partition still needs, it is deleted.
type deltaInfo struct {
	id       state.ID
	part     string
	ends     []int64    // the fixed windows it holds records of
	live     []endCount // per fixed window, its records that are their group's last
	liveSess int        // its records of sessions that are their group's last
	other    int        // its tombstones
	n        int        // its records
	gone     []int64    // scratch of write: windows gone it holds records of
}

// endCount counts records of a fixed window.
type endCount struct {
	end int64
	n   int
}

// hold counts g's record as the last of its group.
func (d *deltaInfo) hold(g window.Group) {
	if g.Session {
		d.liveSess++
		return
	}
	for i := range d.live {
		if d.live[i].end == g.End {
			d.live[i].n++
			return
		}
	}
	d.live = append(d.live, endCount{g.End, 1})
}

// release counts g's record as no longer the last of its group.
func (d *deltaInfo) release(g window.Group) {
	if g.Session {
		d.liveSess--
		return
	}
	for i := range d.live {
		if d.live[i].end == g.End {
			d.live[i].n--
			return
		}
	}
}

// idle reports whether no record of d is the last of an open group.
func (d *deltaInfo) idle() bool {
	if d.liveSess > 0 {
		return false
	}
	for _, c := range d.live {
		if c.n > 0 {
			return false
		}
	}
	return true
}

// groupTag is a group's slot when the source has partitions: its stream
// key and the delta of its last record.
type groupTag struct {
	key string
	d   *deltaInfo
}

// tagDelta returns the delta a group's slot points to, nil if none.
func tagDelta(tag any) *deltaInfo {
	switch t := tag.(type) {
	case *deltaInfo:
		return t
	case *groupTag:
		return t.d
	}
	return nil
}

// setTagDelta points a group's slot to d.
func setTagDelta(tag *any, d *deltaInfo) {
	if t, ok := (*tag).(*groupTag); ok {
		t.d = d
		return
	}
	*tag = d
}

// compactMin is the number of records a lane's deltas may hold beyond
// twice its window-groups before the lane compacts them. A compaction
// writes every group once and deletes the deltas, which held more than
// twice as many records: the store holds at most about twice the groups.
const compactMin = 64

// windowClockSaved is a lane's clock entry: the operator's clock, the Seq
// of the write, and when and by which lane of how many it was written (to
// go on from the lanes of an earlier run with another number of workers).
type windowClockSaved struct {
	Seq   uint64       `json:"seq"`
	Lanes int          `json:"lanes"`
	Lane  int          `json:"lane"`
	At    int64        `json:"at"` // Unix milliseconds
	Clock window.Clock `json:"clock"`
}

// windowSaved is the single entry that kept a window function's whole
// state before window-groups were entries of their own: the operator's
// snapshot. A job with one worker that finds it goes on from it and
// replaces it with deltas at its first commit.
type windowSaved struct {
	Seq  uint64 `json:"seq"`
	Op   []byte `json:"op"`
	Open int    `json:"open"` // the open window-groups
}

func newWindowHandler(fc *config.Func) (*windowHandler, error) {
	spec, err := fc.Window.Spec()
	if err != nil {
		return nil, fmt.Errorf("function %q: window: %w", fc.FName, err)
	}
	op, err := window.New(spec)
	if err != nil {
		return nil, fmt.Errorf("function %q: %w", fc.FName, err)
	}
	h := &windowHandler{name: fc.FName, spec: spec, lanes: []*windowLane{{op: op}}}
	if spec.TimeField == "" {
		h.tick = idleTick(spec)
	}
	return h, nil
}

// idleTick is how often a stream that reads nothing closes the windows of
// a processing-time spec: a quarter of its shortest span (the size of a
// tumbling window, the slide of a sliding one, the gap of a session),
// between 10ms and 1s.
func idleTick(spec window.Spec) time.Duration {
	span := spec.Size
	switch spec.Type {
	case window.Sliding:
		span = spec.Slide
	case window.Session:
		span = spec.Gap
	}
	return min(max(span/4, 10*time.Millisecond), time.Second)
}

// open returns the number of open windows (window-groups) it holds.
func (h *windowHandler) open() int {
	n := 0
	for _, ln := range h.allLanes() {
		ln.mu.Lock()
		n += ln.op.Len()
		ln.mu.Unlock()
	}
	return n
}

func (h *windowHandler) allLanes() []*windowLane {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*windowLane
	for _, ln := range h.lanes {
		if ln != nil {
			out = append(out, ln)
		}
	}
	return out
}

// lane returns lane i, made on first use.
func (h *windowHandler) lane(i int) *windowLane {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.lanes) <= i {
		h.lanes = append(h.lanes, nil)
	}
	if h.lanes[i] == nil {
		op, _ := window.New(h.spec) // the spec was checked by newWindowHandler
		h.lanes[i] = &windowLane{op: op}
	}
	return h.lanes[i]
}

func (h *windowHandler) signature() string { return "YAML window" }

func (h *windowHandler) bind(fl *flow, layer int) binding {
	b := &windowBinding{h: h, fl: fl, layer: layer, rows: rowReader{fl: fl}}
	b.ents = windowEntries{name: state.WindowPrefix + strconv.Itoa(layer) + "/" + fl.c.funcs[layer].FName, keyAt: -1}
	if len(h.spec.GroupBy) > 0 {
		b.ents.keyAt = 0
	}
	if st := fl.c.cfg.Stream; st != nil && st.Key != "" {
		if i := slices.Index(h.spec.GroupBy, st.Key); i >= 0 {
			b.ents.keyAt, b.keyField = i, st.Key
		}
	}
	return b
}

// windowEntries names the keyed state entries of a window function's step
// in a flow: all of state name. A lane's clock and its deltas are under a
// key of the lane's own, one per number of lanes (laneKey), fields "clock" and "delta N.L SEQ PART"
// (lane L of N, its write SEQ, the source partition PART, "" without).
// Earlier versions kept one entry per window-group, under the stream key of
// its rows (fields "window END [VALUES]" and "session [VALUES]"): a lane
// loads those of its keys and replaces them with deltas at its next write.
// A group's stream key is the value of its group_by field keyAt (the
// flow's stream.key when it is one of them, else the first; "" without
// group_by), formatted as the runtime formats stream keys
// (window.KeyString).
type windowEntries struct {
	name  string
	keyAt int
}

// streamKey returns the stream key of g's rows.
func (w windowEntries) streamKey(g window.Group) string {
	if w.keyAt < 0 {
		return ""
	}
	vals := g.Values()
	if w.keyAt >= len(vals) {
		return ""
	}
	return window.KeyString(vals[w.keyAt])
}

// isGroupField reports whether f names the entry of one window-group, as
// versions before deltas wrote them.
func isGroupField(f string) bool {
	return strings.HasPrefix(f, "window ") || strings.HasPrefix(f, "session ")
}

// delta is the ID of the delta that lane of lanes writes at seq for source
// partition part.
func (w windowEntries) delta(lane, lanes int, seq uint64, part string) state.ID {
	f := make([]byte, 0, 32+len(part))
	f = append(f, "delta "...)
	f = strconv.AppendInt(f, int64(lanes), 10)
	f = append(f, '.')
	f = strconv.AppendInt(f, int64(lane), 10)
	f = append(f, ' ')
	f = strconv.AppendUint(f, seq, 10)
	f = append(f, ' ')
	f = append(f, part...)
	return state.ID{Name: w.name, Key: laneKey(lane, lanes), Field: string(f)}
}

// deltaField is a delta's field read back (see windowEntries).
type deltaField struct {
	lanes, lane int
	seq         uint64
	part        string
}

func parseDeltaField(f string) (deltaField, bool) {
	rest, ok := strings.CutPrefix(f, "delta ")
	if !ok {
		return deltaField{}, false
	}
	cfg, rest, ok1 := strings.Cut(rest, " ")
	seqS, part, ok2 := strings.Cut(rest, " ")
	nS, lS, ok3 := strings.Cut(cfg, ".")
	n, err1 := strconv.Atoi(nS)
	l, err2 := strconv.Atoi(lS)
	seq, err3 := strconv.ParseUint(seqS, 10, 64)
	if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil || err3 != nil {
		return deltaField{}, false
	}
	return deltaField{lanes: n, lane: l, seq: seq, part: part}, true
}

// A delta's value: deltaMagic, then records, each a kind byte and its
// data: recGroup and an encoded window-group (length first), recSession
// and the group key of a group of sessions that is gone (length first),
// recWindow and the end of a fixed window that is gone (a varint): the
// groups of that window in the earlier deltas of the partition are.
const (
	deltaMagic = "WD1"
	recGroup   = 'g'
	recSession = 'x'
	recWindow  = 'e'
)

// deltaBuf is a delta being written: its bytes and what the lane will know
// of it.
type deltaBuf struct {
	b    []byte
	info *deltaInfo
	gone []int64 // the windows it marks gone
	size int     // the bytes to make room for: the size of the last one written
}

// reset makes d empty for the next delta, expecting about records
// records of recBytes bytes (0: as many bytes as the last one took).
func (d *deltaBuf) reset(records, recBytes int) {
	if records > 0 {
		d.size = records * recBytes
	} else if len(d.b) > 0 {
		d.size = len(d.b)
	}
	d.b, d.info, d.gone = nil, nil, d.gone[:0]
}

// start makes room for a record of about n bytes.
func (d *deltaBuf) start(part string, n int) {
	if d.info == nil {
		d.info = &deltaInfo{part: part}
	}
	if d.b == nil {
		d.b = append(make([]byte, 0, max(n+16, d.size+d.size/8)), deltaMagic...)
	}
}

func (d *deltaBuf) group(part string, g window.Group, data []byte) {
	d.start(part, 1024)
	d.b = append(d.b, recGroup)
	d.b = binary.AppendUvarint(d.b, uint64(len(data)))
	d.b = append(d.b, data...)
	d.info.n++
	d.info.hold(g)
	if !g.Session && !slices.Contains(d.info.ends, g.End) {
		d.info.ends = append(d.info.ends, g.End)
	}
}

func (d *deltaBuf) sessionGone(part, key string) {
	d.start(part, len(key))
	d.b = append(d.b, recSession)
	d.b = binary.AppendUvarint(d.b, uint64(len(key)))
	d.b = append(d.b, key...)
	d.info.n++
	d.info.other++
}

func (d *deltaBuf) windowGone(part string, end int64) {
	if slices.Contains(d.gone, end) {
		return
	}
	d.gone = append(d.gone, end)
	d.start(part, 16)
	d.b = append(d.b, recWindow)
	d.b = binary.AppendVarint(d.b, end)
	d.info.n++
	d.info.other++
}

// readDelta calls fn with each record of a delta: kind, and the group's
// encoding or the session group's key (data), or the window's end.
func readDelta(v []byte, fn func(kind byte, data []byte, end int64) error) error {
	b, ok := bytes.CutPrefix(v, []byte(deltaMagic))
	if !ok {
		return errors.New("not a window delta")
	}
	for len(b) > 0 {
		kind := b[0]
		b = b[1:]
		switch kind {
		case recGroup, recSession:
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)-k) {
				return errors.New("window delta is truncated")
			}
			if err := fn(kind, b[k:k+int(n)], 0); err != nil {
				return err
			}
			b = b[k+int(n):]
		case recWindow:
			end, k := binary.Varint(b)
			if k <= 0 {
				return errors.New("window delta is truncated")
			}
			if err := fn(kind, nil, end); err != nil {
				return err
			}
			b = b[k:]
		default:
			return fmt.Errorf("window delta: unknown record %q", kind)
		}
	}
	return nil
}

// clock is the ID of lane's clock entry in a job of lanes lanes.
func (w windowEntries) clock(lane, lanes int) state.ID {
	return state.ID{Name: w.name, Key: laneKey(lane, lanes), Field: "clock"}
}

// laneKey returns a stream key that the runtime sends to worker lane of
// lanes: "kisflow.window.lane.LANES.N" for the first N that is. The key
// names the number of lanes, so that the clock of a lane of one number
// of workers never takes the entry of a lane of another's, which the
// lanes that have not taken their share of its windows yet still read.
func laneKey(lane, lanes int) string {
	if lanes <= 1 {
		return "kisflow.window.lane"
	}
	prefix := "kisflow.window.lane." + strconv.Itoa(lanes) + "."
	for i := 0; ; i++ {
		if k := prefix + strconv.Itoa(i); state.Partition(k, lanes) == lane {
			return k
		}
	}
}

// legacy is the ID of the single entry of windowSaved.
func (w windowEntries) legacy() state.ID { return state.ID{Name: w.name} }

// process adds rows and returns what closed: with control set (a flush
// run, see flow.flush), also what processing time closed (tick) or
// everything (final). x is the run's state Txn (nil outside a job): it
// picks the lane, and when its table is kept, the lane's operator first
// takes the state x reads as current, and its changes are written to x.
// clk is the stream's clock of the run (see streamAdvance).
func (h *windowHandler) process(fl *flow, rows []map[string]any, ctl flushMode, x *state.Txn, ents windowEntries, clk state.Clock) ([]map[string]any, []window.Rejected, error) {
	var ln *windowLane
	keep := false
	switch {
	case x == nil:
		ln = h.lane(0)
	case x.IsScratch():
		// A run made again only to trace rows (see state.Table.Scratch):
		// it must change no lane, and what it emits is not committed. A
		// window alone with a message emits nothing for it.
		op, err := window.New(h.spec)
		if err != nil {
			return nil, nil, err
		}
		ln = &windowLane{op: op}
	case x.Lane() < 0 && x.Lanes() > 1:
		return nil, nil, stream.Fatal(fmt.Errorf("function %q: a window in a flow with %d workers needs the flow's stream.key set to one of its group_by fields (%s), so that every row of a group goes to one worker", h.name, x.Lanes(), strings.Join(h.spec.GroupBy, ", ")))
	default:
		ln, keep = h.lane(max(x.Lane(), 0)), x.Kept()
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	var out []map[string]any
	if keep {
		due, err := ln.sync(fl, h, x, ents)
		if err != nil {
			return nil, nil, err
		}
		out = due
	}
	before := ln.op.Clock()
	var rej []window.Rejected
	// With the stream's event time, rows are judged against its watermark
	// before their batch, and the batch's closes what it passed.
	out = append(out, streamAdvance(h, ln.op, clk.Watermark, clk)...)
	if len(rows) > 0 {
		var more []map[string]any
		more, rej = ln.op.Process(rows)
		out = append(out, more...)
		if ln.op.EpochSeconds() && !h.secsWarned.Swap(true) && fl != nil {
			fl.Logger().Warn(fmt.Sprintf("window function %q: time field %q holds an epoch number below 1e11, before 1973 as milliseconds: it looks like epoch seconds; time fields are RFC 3339 or epoch milliseconds", h.name, h.spec.TimeField))
		}
	}
	out = append(out, streamAdvance(h, ln.op, clk.Fire, clk)...)
	switch {
	case ctl == flushFinal:
		out = append(out, ln.op.Flush()...)
	case h.tick > 0:
		out = append(out, ln.op.Tick()...)
	}
	if keep {
		if err := ln.write(x, ents, before); err != nil {
			// The operator took the rows; the entries may not have: the
			// next run rebuilds it from what its Txn reads.
			ln.loaded = false
			return nil, nil, err
		}
	}
	return out, rej, nil
}

// sync makes ln's operator hold the state x reads as current: when the
// lane's clock entry is not the one the operator last wrote or read, the
// operator is rebuilt from the lane's entries.
//
// It returns the rows of windows due on rebuilding: a window another lane
// held open (the lane of a run with another number of workers, or of the
// process a source partition moved here from) whose end this lane's clock
// already passed is closed now, not dropped.
func (ln *windowLane) sync(fl *flow, h *windowHandler, x *state.Txn, ents windowEntries) ([]map[string]any, error) {
	lanes, lane := x.Lanes(), max(x.Lane(), 0)
	e, ok, err := x.Get(ents.clock(lane, lanes))
	if err != nil {
		return nil, err
	}
	var own windowClockSaved
	if ok {
		if own, err = decodeEntry[windowClockSaved](fl, ents.name, e); err != nil {
			return nil, stream.Fatal(fmt.Errorf("function %q: saved windows: %w", h.name, err))
		}
		// Only this lane's own clock is its clock.
		ok = own.Lanes == lanes && own.Lane == lane
		if !ok {
			own = windowClockSaved{}
		}
	}
	// Partitions that moved to this process (their window-groups loaded)
	// or away from it (dropped) since the operator was built: it is built
	// again from the entries this process owns now, so that a group taken
	// over goes on from its last owner's commit and a group given away is
	// neither updated nor emitted here.
	moves := x.Moves()
	if ln.loaded && own.Seq == ln.seq && ln.moves == moves {
		return nil, nil
	}
	op, err := window.New(h.spec)
	if err != nil {
		return nil, err
	}
	// The clock: the lane's own, unless the number of workers changed
	// since it was written; then the largest of the last run's lanes'
	// (rows of the keys moved to this lane that are older may then be
	// late).
	clock, found := own.Clock, ok
	var newest windowClockSaved
	// moved: the clock is the last run's lanes' (another number of
	// workers), whose clocks others holds by number of lanes and lane.
	moved := false
	others := map[[2]int]windowClockSaved{}
	if err := x.CommittedEntries(ents.name, func(id state.ID, e state.Entry) error {
		if id.Field != "clock" {
			return nil
		}
		c, err := decodeEntry[windowClockSaved](fl, ents.name, e)
		if err != nil || c.Lanes == lanes {
			return nil
		}
		others[[2]int{c.Lanes, c.Lane}] = c
		if c.At > newest.At {
			newest = c
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if newest.At > 0 && (!ok || own.At < newest.At) {
		clock, found, moved = window.Clock{}, false, true
		for _, c := range others {
			if c.Lanes != newest.Lanes {
				continue
			}
			if !found || c.Clock.MaxTS > clock.MaxTS {
				clock, found = c.Clock, true
			}
		}
	}

	// What the entries hold: the groups of the per-group entries of
	// earlier versions first, then the deltas in Seq order, a later
	// record of a group replacing an earlier one.
	ld := groupLoad{fixed: map[int64]map[string]heldGroup{}, sess: map[string]heldGroup{}}
	type loadedDelta struct {
		id   state.ID
		f    deltaField
		data []byte
	}
	var deltas []loadedDelta
	var old []state.ID
	var bad error
	// addDelta keeps a delta entry to load; one that does not decode is
	// remembered in bad and skipped.
	addDelta := func(id state.ID, f deltaField, e state.Entry) {
		data, err := decodeEntry[[]byte](fl, ents.name, e)
		if err != nil {
			bad = cmp.Or(bad, err)
			return
		}
		deltas = append(deltas, loadedDelta{id, f, data})
	}
	if err := x.Entries(ents.name, func(id state.ID, e state.Entry) error {
		switch {
		case isGroupField(id.Field):
			old = append(old, id)
			data, err := decodeEntry[[]byte](fl, ents.name, e)
			if err != nil {
				bad = cmp.Or(bad, err)
				return nil
			}
			var from window.Clock
			if moved {
				// Saved by the lane of the last run that had the group's
				// key: open there unless that lane's watermark passed it.
				from = others[[2]int{newest.Lanes, state.Partition(id.Key, newest.Lanes)}].Clock
			}
			bad = cmp.Or(bad, ld.put(data, e.Part, from))
		case strings.HasPrefix(id.Field, "delta "):
			f, okf := parseDeltaField(id.Field)
			switch {
			case !okf || f.lanes != lanes || f.lane != lane:
				// Another number of workers' (loaded below when moved).
			case moved:
				old = append(old, id) // older than the last run's lanes'
			default:
				addDelta(id, f, e)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if moved {
		// The deltas of the last run's lanes: this lane's share of them.
		// A lane of that run that never wrote (no row of its keys came)
		// did not take its share of the run before it, whose deltas
		// then hold its keys' groups: each key's groups are loaded from
		// the newest run whose lane of the key wrote a clock (this
		// lane's own clock, older than newest, is of such a run too).
		type gen struct {
			lanes int
			at    int64
			wrote map[int]bool
		}
		byLanes := map[int]*gen{}
		for k, c := range others {
			gn := byLanes[k[0]]
			if gn == nil {
				gn = &gen{lanes: k[0], wrote: map[int]bool{}}
				byLanes[k[0]] = gn
			}
			gn.at, gn.wrote[k[1]] = max(gn.at, c.At), true
		}
		if ok {
			byLanes[lanes] = &gen{lanes: lanes, at: own.At, wrote: map[int]bool{lane: true}}
		}
		var gens []*gen
		for _, gn := range byLanes {
			gens = append(gens, gn)
		}
		slices.SortFunc(gens, func(a, b *gen) int { return cmp.Compare(b.at, a.at) })
		if err := x.CommittedEntries(ents.name, func(id state.ID, e state.Entry) error {
			f, okf := parseDeltaField(id.Field)
			if okf && byLanes[f.lanes] != nil {
				addDelta(id, f, e)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		ld.owns = func(g window.Group, from int) bool {
			key := ents.streamKey(g)
			if state.Partition(key, lanes) != lane {
				return false
			}
			if from < 0 {
				return true
			}
			for _, gn := range gens {
				if gn.lanes == from {
					return true
				}
				if gn.wrote[state.Partition(key, gn.lanes)] {
					return false // the newer run's lane of the key has it
				}
			}
			return false
		}
	}
	slices.SortStableFunc(deltas, func(a, b loadedDelta) int { return cmp.Compare(a.f.seq, b.f.seq) })
	var infos []*deltaInfo
	held, last := 0, own.Seq
	// The lane (number of lanes, lane) that wrote each delta: a window
	// marked gone by a lane is gone from that lane's earlier deltas only
	// (another of the last run's lanes, whose watermark is behind, may
	// hold it open; their Seqs interleave).
	writer := map[*deltaInfo][2]int{}
	for _, d := range deltas {
		var from window.Clock
		if moved {
			from = others[[2]int{d.f.lanes, d.f.lane}].Clock
			if d.f.lanes == lanes {
				from = own.Clock
			}
		}
		info := &deltaInfo{id: d.id, part: d.f.part}
		writer[info] = [2]int{d.f.lanes, d.f.lane}
		err := readDelta(d.data, func(kind byte, data []byte, end int64) error {
			info.n++
			switch kind {
			case recGroup:
				g, err := ld.add(data, info, from, d.f.lanes)
				if err != nil {
					return err
				}
				if !g.Session && !slices.Contains(info.ends, g.End) {
					info.ends = append(info.ends, g.End)
				}
			case recSession:
				info.other++
				delete(ld.sess, string(data))
			case recWindow:
				info.other++
				for k, hg := range ld.fixed[end] {
					if hg.part() == d.f.part && (hg.d == nil || writer[hg.d] == writer[info]) {
						delete(ld.fixed[end], k)
					}
				}
			}
			return nil
		})
		bad = cmp.Or(bad, err)
		infos = append(infos, info)
		held += info.n
		if d.f.lanes == lanes {
			last = max(last, d.f.seq)
		}
	}

	open := ld.len()
	loadErr := bad
	if found && loadErr == nil {
		loadErr = op.SetClock(clock)
	}
	var keyPart map[string]string
	update, opened := h.spec.Late == window.Update, false
	if loadErr == nil {
		loadErr = ld.each(func(hg heldGroup) error {
			if moved {
				return op.LoadGroupFrom(hg.data, hg.from)
			}
			// The group's slot points to the delta of its record (see
			// deltaInfo), and holds its stream key with partitions.
			var tag any
			var g window.Group
			if hg.d != nil || hg.p != "" {
				var err error
				if g, err = window.GroupOf(hg.data); err != nil {
					return err
				}
			}
			if hg.p != "" {
				if keyPart == nil {
					keyPart = map[string]string{}
				}
				key := ents.streamKey(g)
				keyPart[key] = hg.p
				tag = &groupTag{key: key, d: hg.d}
			} else if hg.d != nil {
				tag = hg.d
			}
			// A group of a source partition is open where it was last
			// written (a window that closes deletes or marks gone its
			// groups in the same commit as the clock that closed it), but
			// the partition may have moved here from another process,
			// whose watermark may be behind this lane's: it is loaded
			// open, and closed below if this lane's watermark passed it.
			// (Not under late: update, whose closed windows are kept.)
			open := hg.p != "" && !update
			opened = opened || open
			loaded, err := op.LoadGroupTagged(hg.data, tag, open)
			if loaded && hg.d != nil {
				hg.d.hold(g)
			}
			return err
		})
	}
	if loadErr != nil {
		if open > 0 || !errors.Is(loadErr, window.ErrOtherWindow) {
			return nil, stream.Fatal(fmt.Errorf("function %q: %d open windows saved by an earlier run cannot be restored (%w): restore the window block they were saved with and let the run close them, or delete state %q of the flow (all its entries) to drop them", h.name, open, loadErr, ents.name))
		}
		// Nothing open (the window block changed after its windows
		// closed): start afresh.
		if op, err = window.New(h.spec); err != nil {
			return nil, err
		}
	}
	compact := len(old) > 0 || moved
	if !found && open == 0 && lanes == 1 {
		if e, ok, err := x.Get(ents.legacy()); err != nil {
			return nil, err
		} else if ok {
			v, err := decodeEntry[windowSaved](fl, ents.name, e)
			if err == nil {
				err = op.Restore(v.Op)
			}
			if err != nil && v.Open > 0 {
				return nil, stream.Fatal(fmt.Errorf("function %q: %d open windows saved by an earlier run cannot be restored (%w): restore the window block they were saved with and let the run close them, or delete state %q of the flow (all its entries) to drop them", h.name, v.Open, err, ents.name))
			}
			if err == nil {
				old, compact = append(old, ents.legacy()), true
			}
		}
	}
	if moved {
		// The last run's lanes' deltas stay for the lanes that have not
		// taken their share yet; this lane writes its own.
		infos, held = nil, 0
	}
	op.Track(true)
	ln.op, ln.loaded, ln.seq, ln.last, ln.moves = op, true, own.Seq, max(ln.last, last), moves
	ln.deltas, ln.held, ln.old, ln.compact, ln.keyPart = infos, held, old, compact, keyPart
	if moved || opened {
		return op.CloseDue(), nil
	}
	return nil, nil
}

// groupLoad gathers the window-groups a lane's entries hold, the last
// record of each.
type groupLoad struct {
	fixed map[int64]map[string]heldGroup // by window end, then group key
	sess  map[string]heldGroup
	// owns reports whether a group of a delta of a run of lanes lanes
	// (-1: an entry of its own) is the lane's to load; nil: every group is.
	owns func(g window.Group, lanes int) bool
}

// heldGroup is a window-group's encoding, the delta that held it (nil for
// an entry of its own, of an earlier version) or that entry's source
// partition, and the clock of the lane that wrote it (after the number of
// workers changed).
type heldGroup struct {
	data []byte
	d    *deltaInfo
	p    string
	from window.Clock
}

// part returns the source partition of the entry that held the group.
func (hg heldGroup) part() string {
	if hg.d != nil {
		return hg.d.part
	}
	return hg.p
}

// put records data, a group of an entry of its own of partition part.
func (l *groupLoad) put(data []byte, part string, from window.Clock) error {
	_, err := l.record(data, heldGroup{data: data, p: part, from: from}, -1)
	return err
}

// add records data, a group of delta d.
func (l *groupLoad) add(data []byte, d *deltaInfo, from window.Clock, lanes int) (window.Group, error) {
	return l.record(data, heldGroup{data: data, d: d, p: d.part, from: from}, lanes)
}

func (l *groupLoad) record(data []byte, hg heldGroup, lanes int) (window.Group, error) {
	g, err := window.GroupOf(data)
	if err != nil {
		return g, err
	}
	if l.owns != nil && !l.owns(g, lanes) {
		return g, nil
	}
	if g.Session {
		l.sess[g.Key] = hg
		return g, nil
	}
	m := l.fixed[g.End]
	if m == nil {
		m = map[string]heldGroup{}
		l.fixed[g.End] = m
	}
	m[g.Key] = hg
	return g, nil
}

func (l *groupLoad) len() int {
	n := len(l.sess)
	for _, m := range l.fixed {
		n += len(m)
	}
	return n
}

// each calls fn with every group, the first error stopping it.
func (l *groupLoad) each(fn func(heldGroup) error) error {
	for _, m := range l.fixed {
		for _, hg := range m {
			if err := fn(hg); err != nil {
				return err
			}
		}
	}
	for _, hg := range l.sess {
		if err := fn(hg); err != nil {
			return err
		}
	}
	return nil
}

// write writes the window-groups the operator's last call changed, as one
// delta per source partition, and its clock when anything changed
// (before: the clock before the call). It deletes the deltas no longer
// needed, and compacts the lane's deltas when they hold more than twice
// the groups of the operator, or are of an earlier format.
func (ln *windowLane) write(x *state.Txn, ents windowEntries, before window.Clock) error {
	lanes, lane := x.Lanes(), max(x.Lane(), 0)
	parted := ln.keyPart != nil || x.Partitioned()
	for _, d := range ln.bufs {
		d.reset(0, 0)
	}
	changed := 0
	var gone []int64
	err := ln.op.ChangesByWindow(func(g window.Group, tag *any, data []byte) error {
		changed++
		part := ""
		if parted {
			part = ln.partOf(x, ents, g, tag)
		}
		if old := tagDelta(*tag); old != nil {
			old.release(g)
		}
		d := ln.buf(part)
		if data == nil {
			d.sessionGone(part, g.Key)
			setTagDelta(tag, nil)
			return nil
		}
		d.group(part, g, data)
		setTagDelta(tag, d.info)
		return nil
	}, func(end int64) error {
		changed++
		gone = append(gone, end)
		return nil
	})
	if err != nil {
		return err
	}
	clock := ln.op.Clock()
	if changed == 0 && clock == before && !ln.compact {
		return nil
	}
	// The windows gone are no longer held by any delta; a delta that
	// holds no group's last record goes, unless it holds a tombstone an
	// older delta of its partition needs; a delta that stays and holds
	// records of a window gone has the window marked gone in its
	// partition's delta of this batch.
	if len(gone) > 0 {
		for _, d := range ln.deltas {
			d.gone = d.gone[:0]
			d.live = slices.DeleteFunc(d.live, func(c endCount) bool { return slices.Contains(gone, c.end) })
			d.ends = slices.DeleteFunc(d.ends, func(end int64) bool {
				if slices.Contains(gone, end) {
					d.gone = append(d.gone, end)
					return true
				}
				return false
			})
		}
	}
	var older []string // the partitions with a delta kept so far
	kept := ln.deltas[:0]
	for _, d := range ln.deltas {
		if d.idle() && (d.other == 0 || !slices.Contains(older, d.part)) {
			if err := x.Delete(d.id); err != nil {
				return err
			}
			ln.held -= d.n
			continue
		}
		if !slices.Contains(older, d.part) {
			older = append(older, d.part)
		}
		for _, end := range d.gone {
			ln.buf(d.part).windowGone(d.part, end)
		}
		d.gone = d.gone[:0]
		kept = append(kept, d)
	}
	clear(ln.deltas[len(kept):])
	ln.deltas = kept

	ln.last++
	ln.seq = ln.last
	adds := 0
	for _, d := range ln.bufs {
		if d.info != nil {
			adds += d.info.n
		}
	}
	if ln.compact || ln.held+adds > 2*ln.op.Held()+compactMin {
		if err := ln.compactAll(x, ents, parted); err != nil {
			return err
		}
	} else if err := ln.putDeltas(x, ents); err != nil {
		return err
	}
	return x.Put(ents.clock(lane, lanes), windowClockSaved{Seq: ln.seq, Lanes: lanes, Lane: lane, At: time.Now().UnixMilli(), Clock: clock}, 0)
}

// putDeltas puts the deltas written in ln.bufs, numbered ln.seq.
func (ln *windowLane) putDeltas(x *state.Txn, ents windowEntries) error {
	lanes, lane := x.Lanes(), max(x.Lane(), 0)
	for part, d := range ln.bufs {
		if d.info == nil {
			continue
		}
		d.info.id = ents.delta(lane, lanes, ln.seq, part)
		if err := x.PutIn(d.info.id, d.b, part); err != nil {
			return err
		}
		ln.deltas = append(ln.deltas, d.info)
		ln.held += d.info.n
	}
	return nil
}

// compactAll writes every window-group of the operator as one delta per
// source partition, numbered ln.seq, and deletes the lane's earlier deltas
// and entries of earlier formats.
func (ln *windowLane) compactAll(x *state.Txn, ents windowEntries, parted bool) error {
	for _, d := range ln.deltas {
		if err := x.Delete(d.id); err != nil {
			return err
		}
	}
	for _, id := range ln.old {
		if err := x.Delete(id); err != nil {
			return err
		}
	}
	recBytes := 32
	if d := ln.bufs[""]; d != nil && d.info != nil {
		recBytes = len(d.b)/d.info.n + 1
	}
	held := ln.op.Held()
	for _, d := range ln.bufs {
		d.reset(held/max(len(ln.bufs), 1)+1, recBytes)
	}
	if err := ln.op.GroupsTagged(func(g window.Group, tag *any, data []byte) error {
		part := ""
		if parted {
			t, ok := (*tag).(*groupTag)
			if !ok {
				t = &groupTag{key: ents.streamKey(g)}
				*tag = t
			}
			part = ln.keyPart[t.key]
		}
		d := ln.buf(part)
		d.group(part, g, data)
		setTagDelta(tag, d.info)
		return nil
	}); err != nil {
		return err
	}
	clear(ln.deltas)
	ln.deltas, ln.held, ln.old, ln.compact = ln.deltas[:0], 0, nil, false
	if err := ln.putDeltas(x, ents); err != nil {
		return err
	}
	for _, d := range ln.bufs {
		d.b, d.size = nil, 0 // not the size of the next batch's delta
	}
	return nil
}

// buf returns the delta being written for partition part.
func (ln *windowLane) buf(part string) *deltaBuf {
	d := ln.bufs[part]
	if d == nil {
		if ln.bufs == nil {
			ln.bufs = map[string]*deltaBuf{}
		}
		d = &deltaBuf{}
		ln.bufs[part] = d
	}
	return d
}

// partOf returns the source partition of g, a group the batch changed:
// that of its stream key's messages in the batch, else the one the lane
// knew (a group changed by a flush or tick). tag is the group's slot,
// where its stream key is kept (see groupTag).
func (ln *windowLane) partOf(x *state.Txn, ents windowEntries, g window.Group, tag *any) string {
	t, ok := (*tag).(*groupTag)
	if !ok {
		t = &groupTag{key: ents.streamKey(g), d: tagDelta(*tag)}
		*tag = t
	}
	if p, ok := x.KeyPartition(t.key); ok {
		if ln.keyPart == nil {
			ln.keyPart = map[string]string{}
		}
		ln.keyPart[t.key] = p
		return p
	}
	return ln.keyPart[t.key]
}

type windowBinding struct {
	h        *windowHandler
	fl       *flow
	layer    int
	ents     windowEntries
	keyField string // the flow's stream.key when it is a group_by field
	rows     rowReader
	flats    []flatjson.Decoder // one a chunk of a batch decoded in parallel (see decode)
	decoded  []bool             // decoded[i]: in[i] is flat JSON, decoded into pool[i]
	maps     []map[string]any
	at       []int            // at[i] is the input position of maps[i]
	pool     []map[string]any // pool[i] is the map in[i] is decoded into, reused from run to run
}

// parallelRows is the fewest rows decode shares with other goroutines:
// below it a batch is decoded by the worker alone, for a goroutine costs
// more than the rows it would take. decodeChunk is how many rows a
// goroutine claims at a time.
const (
	parallelRows = 1024
	decodeChunk  = 256
)

// decode decodes the flat JSON rows of in, in[i] into pool[i], and notes
// in decoded which were. Decoding is most of a window function's cost
// per row and each row's is independent of the others', so a large batch
// is shared: the worker and one goroutine per other CPU the process may
// use claim chunks of it in turn, and the worker waits only for the
// chunks claimed by others to be done. A goroutine that gets a CPU late
// (the source, the saves and the collector want them too) finds nothing
// left to claim and ends without touching the batch, so the worker never
// waits for it to start; and the operator still sees the rows in their
// order (call reads them in order after).
func (b *windowBinding) decode(in []any) {
	for len(b.pool) < len(in) {
		b.pool = append(b.pool, make(map[string]any, 8))
	}
	b.decoded = slices.Grow(b.decoded[:0], len(in))[:len(in)]
	if len(in) == 0 {
		return // a flush: no chunk would close fin
	}
	helpers := 0
	if len(in) >= parallelRows {
		helpers = runtime.GOMAXPROCS(0) - 1
	}
	for len(b.flats) < helpers+1 {
		b.flats = append(b.flats, flatjson.Decoder{})
	}
	pool, decoded := b.pool, b.decoded // what the goroutines may touch: this batch's
	chunks := int64((len(in) + decodeChunk - 1) / decodeChunk)
	var next, done atomic.Int64
	fin := make(chan struct{})
	claim := func(d *flatjson.Decoder) {
		for {
			c := next.Add(1) - 1
			if c >= chunks {
				return
			}
			for i := int(c) * decodeChunk; i < min(int(c+1)*decodeChunk, len(in)); i++ {
				var data []byte
				switch v := in[i].(type) {
				case string:
					data = unsafe.Slice(unsafe.StringData(v), len(v))
				case []byte:
					data = v
				default:
					decoded[i] = false
					continue
				}
				decoded[i] = d.DecodeInto(pool[i], data)
			}
			if done.Add(1) == chunks {
				close(fin)
			}
		}
	}
	for h := 1; h <= helpers; h++ {
		go claim(&b.flats[h])
	}
	claim(&b.flats[0])
	<-fin
}

func (b *windowBinding) call(ctx context.Context, in []any) error {
	b.maps, b.at = b.maps[:0], b.at[:0]
	x := b.fl.state
	lanes, lane := 1, 0
	if x != nil && !x.IsScratch() {
		lanes, lane = x.Lanes(), x.Lane()
	}
	if lanes > 1 && lane >= 0 && b.keyField == "" {
		return stream.Fatal(fmt.Errorf("function %q: a window in a flow with %d workers needs the flow's stream.key set to one of its group_by fields (%s), so that every row of a group goes to one worker", b.h.name, lanes, strings.Join(b.h.spec.GroupBy, ", ")))
	}
	b.decode(in)
	for i, row := range in {
		m, err := b.fields(i, row)
		if err == nil && lanes > 1 && lane >= 0 {
			err = b.owned(m, lanes, lane)
		}
		if err != nil {
			b.fl.reject(b.layer, i, row, err)
			continue
		}
		b.maps, b.at = append(b.maps, m), append(b.at, i)
	}
	out, rej, err := b.h.process(b.fl, b.maps, b.fl.flushing, x, b.ents, b.fl.clock)
	if err != nil {
		clear(b.maps)
		return err
	}
	for _, r := range rej {
		i := b.at[r.Index]
		err := r.Err
		if errors.Is(err, window.ErrLate) || errors.Is(err, window.ErrTooLate) {
			// Late rows are data a window turns away by design, not a
			// broken flow: dead-lettered, but no failure for the streak.
			err = stream.Expected(err)
		}
		b.fl.reject(b.layer, i, in[i], err)
	}
	for _, r := range out {
		b.fl.run.Commit(r)
	}
	clear(b.maps) // the pool's maps are cleared as the next batch is decoded into them
	if b.fl.flushing != flushNone {
		// A flush goes on to the windows further on whatever this one emitted.
		b.fl.run.Act(engine.Action{ForceEntryNext: true})
	}
	return nil
}

// owned checks that a row's group belongs to the lane: that the stream key
// the runtime sent it by is its stream.key field's value as the window
// reads it. They differ when the field is written in another form in some
// rows (42.0 for 42, an escaped string), or missing from a row whose
// source sets a key of its own: such a row's group would be split between
// workers.
func (b *windowBinding) owned(m map[string]any, lanes, lane int) error {
	k := window.KeyString(m[b.keyField])
	if state.Partition(k, lanes) == lane {
		return nil
	}
	return fmt.Errorf("window: the row's stream key field %q (%q) is not the key it was sent to this worker by: with workers > 1 every row needs the field, written alike (a number as a whole number or a decimal, not both; a string without escapes)", b.keyField, k)
}

// fields reads in[i], row, as fields: the map decode filled when the row
// is flat JSON, else as every YAML function reads a row. The operator
// keeps nothing of the maps it is given, so flat JSON rows are decoded
// into maps of the binding's own, reused.
func (b *windowBinding) fields(i int, row any) (map[string]any, error) {
	if b.decoded[i] {
		return b.pool[i], nil
	}
	return b.rows.fields(row, false)
}

// flushMode says what a run without source rows closes (see flow.flush).
type flushMode int

const (
	flushNone  flushMode = iota // an ordinary run
	flushTick                   // what processing time closed
	flushFinal                  // every open window: the source is exhausted
)

// flush runs the flow with no source rows: each window function emits what
// closed (final: every window it holds) and the functions after it run on
// those rows; functions given no rows in such a run are skipped.
func (fl *flow) flush(ctx context.Context, final bool) (Result, error) {
	fl.flushing = flushTick
	if final {
		fl.flushing = flushFinal
	}
	defer func() { fl.flushing = flushNone }()
	fl.run.Reset()
	return fl.runOnce(ctx)
}

// windowed reports whether the flow has a window function, and the most
// often an idle stream must tick for its processing-time windows (0: none).
func (c *compiled) windowed() (has bool, tick time.Duration) {
	for _, h := range c.handlers {
		if w, ok := h.(*windowHandler); ok {
			has = true
			if w.tick > 0 && (tick == 0 || w.tick < tick) {
				tick = w.tick
			}
		}
	}
	return has, tick
}

// WindowState is the state of one window function in a flow of an engine:
// its open windows, watermark and, under late: update, the windows kept
// for late rows. A store that commits state with each batch saves its
// Snapshot and, before the flow runs again, Restores it. It is safe for
// concurrent use with the flow's runs. It is the window of the runs of the
// flow outside a job, and of a job's first worker (a job keeps its
// windows itself, per worker, as keyed state: see Job.WindowsKept).
type WindowState struct{ h *windowHandler }

// Snapshot encodes the window's state (see window.Operator.Snapshot).
func (w *WindowState) Snapshot() ([]byte, error) {
	ln := w.h.lane(0)
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.op.Snapshot()
}

// Restore replaces the window's state with a snapshot of a window with the
// same spec (see window.Operator.Restore).
func (w *WindowState) Restore(data []byte) error {
	ln := w.h.lane(0)
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.op.Restore(data)
}

// WindowState returns the state of the window of step step (0-based) of
// flow, compiling the flow (and starting its connectors) when it is not
// yet. The state is the one every instance of the flow in this engine
// shares outside a job, and a job's first worker.
func (e *Engine) WindowState(ctx context.Context, flowName string, step int) (*WindowState, error) {
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	c, err := e.compile(ctx, flowName)
	if err != nil {
		return nil, err
	}
	if step < 0 || step >= len(c.handlers) {
		return nil, fmt.Errorf("flow %q has no step %d", flowName, step)
	}
	h, ok := c.handlers[step].(*windowHandler)
	if !ok {
		return nil, fmt.Errorf("flow %q: step %d (function %q) has no window", flowName, step, c.funcs[step].FName)
	}
	return &WindowState{h: h}, nil
}

// checkWindows warns of a window function that an enabled stream flow
// runs before a function that may fail a batch transiently (a Go
// function, a YAML Load or Save): the runtime retries such a batch from
// its first function, and the window takes its rows again. It is an error
// for a flow with workers > 1 whose stream.key is not one of the window's
// group_by fields: each worker keeps the windows of the rows it is sent.
func (r *Registry) checkWindows(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range s.FlowNames() {
		fl := s.Flows[name]
		if !fl.Enabled() || fl.Stream == nil {
			continue
		}
		for i, st := range fl.Flows {
			fc := s.Funcs[st.FName]
			if _, goBody := r.handler(st.FName); fc == nil || fc.Window == nil || goBody {
				continue
			}
			if w := fl.Stream.Workers; w > 1 && !slices.Contains(fc.Window.GroupBy, fl.Stream.Key) {
				// Each worker keeps the windows of its own stream keys:
				// every row of a window-group must go to one worker.
				field, why := "stream.workers", "sets no stream.key"
				if fl.Stream.Key != "" {
					field, why = "stream.key", fmt.Sprintf("routes rows by stream.key %q, which is not one of them", fl.Stream.Key)
				}
				set := "set stream.key to one of them"
				if len(fc.Window.GroupBy) > 0 {
					set = fmt.Sprintf("set stream.key: %s", fc.Window.GroupBy[0])
					if len(fc.Window.GroupBy) > 1 {
						set += " (or another of them)"
					}
				} else {
					set = "add a group_by field and set stream.key to it"
				}
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, field), Severity: config.SevError,
					Msg: fmt.Sprintf("flow %q runs %d workers and window function %q groups by [%s], but the flow %s: each worker keeps the windows of the rows it is sent, so every row of a group must go to one worker; %s, or use workers: 1", name, w, fc.FName, strings.Join(fc.Window.GroupBy, ", "), why, set)})
			}
			for _, next := range fl.Flows[i+1:] {
				nc := s.Funcs[next.FName]
				_, goBody := r.handler(next.FName)
				if nc == nil || !goBody && (nc.ConfigOnly() || nc.Window != nil) {
					continue
				}
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindFunc, fc.FName, "window"), Severity: config.SevWarning,
					Msg: fmt.Sprintf("function %q: flow %q runs %q after this window: a batch it fails is retried from the start and the window counts its rows again; run the window last, or follow it with filter, calc and window functions only", fc.FName, name, next.FName)})
				break
			}
		}
	}
	return probs
}
