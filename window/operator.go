package window

import (
	"container/heap"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"time"
)

// Rejected is a row the operator did not take: a value it cannot read, or
// a late row (see the package doc). The caller dead-letters it.
type Rejected struct {
	Index int // position in the batch given to Process
	Row   map[string]any
	Err   error
}

// accum is the state of one aggregate of one window-group. n counts rows
// (count) or non-null values (the others).
type accum struct {
	n        int64
	sum      float64
	min, max float64
	set      map[string]struct{}
}

func (a *accum) merge(b *accum) {
	if b.n > 0 {
		if a.n == 0 {
			a.min, a.max = b.min, b.max
		} else {
			a.min, a.max = min(a.min, b.min), max(a.max, b.max)
		}
	}
	a.n += b.n
	a.sum += b.sum
	if len(b.set) > 0 {
		if a.set == nil {
			a.set = make(map[string]struct{}, len(b.set))
		}
		for k := range b.set {
			a.set[k] = struct{}{}
		}
	}
}

// bucket is one tumbling or sliding window: its groups, in the order they
// were first seen, and their accumulators (na per group).
type bucket struct {
	start, end int64
	index      *index
	keys       []string
	accs       []accum
	dirty      map[int32]bool // groups to emit again (late: update)
	marked     []uint32       // by group: the Operator.epoch it was last marked changed in (see Track)
	tags       []any          // the caller's slot of each group (see ChangesTagged), grown on use
	startS     string
	endS       string
}

// session is one session window of a group.
type session struct {
	g          *sessGroup
	start, end int64
	seq        uint64 // creation order, to break ties
	accs       []accum
	closed     bool // emitted, kept for late: update
	dead       bool // merged into another session, or freed
	dirty      bool
}

// sessGroup holds a group's sessions, each sorted by start.
type sessGroup struct {
	key        string
	open, kept []*session
	changed    bool // since Changes (see Track)
	tag        any  // the caller's slot (see ChangesTagged)
}

// timer is a session's entry in the heap: when the watermark reaches at,
// the session is checked (closed when open, freed when kept).
type timer struct {
	at  int64
	seq uint64
	s   *session
}

type timers []timer

func (h timers) Len() int { return len(h) }
func (h timers) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h timers) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timers) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timers) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// dirtyRef is a window-group to emit again at the end of a batch.
type dirtyRef struct {
	b *bucket
	g int32
	s *session
}

// Operator computes windowed aggregations. Feed it with Process; it emits
// rows as windows close. See the package doc for the semantics.
type Operator struct {
	spec                   Spec
	aggs                   []Aggregate
	na                     int
	size, slide, gap, late int64 // milliseconds
	now                    func() time.Time
	ahead, limit           int64 // max_ahead (ms, <0: none); the latest event time the chunk read takes
	update                 bool
	seen, flushed          bool
	secs                   bool // a row's time looked like epoch seconds (see EpochSeconds)
	cur                    *rec // the row being placed
	external               bool // Advance moves the watermark, rows do not
	maxTS, wm              int64
	seq                    uint64
	open, kept             map[int64]*bucket // by end
	openEnds, keptEnds     []int64           // sorted
	last                   *bucket
	groups                 map[string]*sessGroup
	timers                 timers
	key                    []byte
	vals                   []float64
	has                    []bool
	dkeys                  [][]byte
	windows                []int64      // scratch: the ends of a row's windows
	hint                   int          // the most groups a window held
	seed                   maphash.Seed // of the windows' indexes
	out                    []map[string]any
	// The chunk being added (see Process): its rows, their group keys and
	// distinct values, and their aggregate inputs, na per row.
	recs     []rec
	arena    []byte
	flatVals []float64
	flatHas  []bool
	flatKeys []int32 // start and end of each distinct value in arena
	sink     uint64  // what prefetch read
	dirty    []dirtyRef
	track    bool     // record changes (see Track)
	changes  []change // the window-groups changed since Changes
	epoch    uint32   // numbers the calls of Changes: see bucket.marked
}

// New returns an operator for spec, or the spec's problem.
func New(spec Spec) (*Operator, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("window: %w", err)
	}
	if spec.Late == "" {
		spec.Late = DeadLetter
	}
	spec.GroupBy = slices.Clone(spec.GroupBy)
	spec.Aggregates = slices.Clone(spec.Aggregates)
	o := &Operator{
		spec:   spec,
		aggs:   spec.Aggregates,
		na:     len(spec.Aggregates),
		size:   spec.Size.Milliseconds(),
		slide:  spec.Slide.Milliseconds(),
		gap:    spec.Gap.Milliseconds(),
		late:   spec.Lateness.Milliseconds(),
		now:    spec.Now,
		update: spec.Late == Update,
		open:   map[int64]*bucket{},
		kept:   map[int64]*bucket{},
		groups: map[string]*sessGroup{},
		vals:   make([]float64, len(spec.Aggregates)),
		has:    make([]bool, len(spec.Aggregates)),
		dkeys:  make([][]byte, len(spec.Aggregates)),
		seed:   maphash.MakeSeed(),
		epoch:  1,
	}
	if o.now == nil {
		o.now = time.Now
	}
	switch {
	case spec.MaxAhead == 0:
		o.ahead = DefaultMaxAhead.Milliseconds()
	case spec.MaxAhead < 0:
		o.ahead = -1
	default:
		o.ahead = spec.MaxAhead.Milliseconds()
	}
	if spec.Type == Tumbling {
		o.slide = o.size
	}
	return o, nil
}

// Spec returns the operator's spec, with its defaults.
func (o *Operator) Spec() Spec { return o.spec }

// Watermark returns the current watermark and whether any row was seen.
func (o *Operator) Watermark() (time.Time, bool) {
	return time.UnixMilli(o.wm).UTC(), o.seen
}

// Len returns the number of open window-groups.
func (o *Operator) Len() int {
	n := 0
	for _, b := range o.open {
		n += len(b.keys)
	}
	for _, g := range o.groups {
		n += len(g.open)
	}
	return n
}

// Tick advances processing time to the clock's time, closing the windows
// it ends, when the operator has no time field; with one it does nothing
// (event time moves with rows only).
func (o *Operator) Tick() []map[string]any {
	if o.spec.TimeField != "" || o.flushed {
		return nil
	}
	o.advance(o.now().UnixMilli())
	return o.take()
}

// Advance moves the watermark to wm when it is later, closing the windows
// it passes, and returns their rows. From its first call on, rows no
// longer move the watermark: the caller keeps it (a flow whose stream
// declares its event time advances its windows by the stream's watermark,
// computed in read order across partitions). The spec's lateness is not
// subtracted again; it still bounds how long late: update keeps windows.
func (o *Operator) Advance(wm time.Time) []map[string]any {
	o.external = true
	if o.flushed {
		return nil
	}
	if ms := wm.UnixMilli(); !o.seen || ms > o.wm {
		// maxTS stays wm + lateness, from which a snapshot's watermark is
		// derived.
		o.seen, o.wm, o.maxTS = true, ms, ms+o.late
		o.closeUpTo()
	}
	return o.take()
}

// Flush closes every open window and returns their rows: the end of a
// bounded source. Every row added after it is late.
func (o *Operator) Flush() []map[string]any {
	o.flushed, o.seen = true, true
	o.wm = math.MaxInt64
	o.closeUpTo()
	o.kept, o.keptEnds = map[int64]*bucket{}, nil
	o.groups, o.timers = map[string]*sessGroup{}, nil
	return o.take()
}

func (o *Operator) take() []map[string]any {
	out := o.out
	o.out = nil
	return out
}

// advance moves the largest time seen to t when t is larger, and closes
// the windows the watermark passed.
func (o *Operator) advance(t int64) {
	if o.flushed || o.external {
		return
	}
	if !o.seen || t > o.maxTS {
		o.seen, o.maxTS = true, t
		o.wm = t - o.late
		o.closeUpTo()
	}
}

// closeUpTo closes the windows whose end the watermark reached, and frees
// the kept ones whose end + lateness it reached.
func (o *Operator) closeUpTo() {
	wm := o.wm
	for len(o.openEnds) > 0 && o.openEnds[0] <= wm {
		end := o.openEnds[0]
		o.openEnds = o.openEnds[1:]
		b := o.open[end]
		delete(o.open, end)
		if o.last == b {
			o.last = nil
		}
		for g := range b.keys {
			o.out = append(o.out, o.bucketRow(b, int32(g)))
		}
		if o.update {
			o.keep(b)
		} else {
			o.markGone(b)
		}
	}
	for len(o.keptEnds) > 0 && o.keptEnds[0] <= wm-o.late {
		o.markGone(o.kept[o.keptEnds[0]])
		delete(o.kept, o.keptEnds[0])
		o.keptEnds = o.keptEnds[1:]
	}
	for len(o.timers) > 0 && o.timers[0].at <= wm {
		tm := heap.Pop(&o.timers).(timer)
		s := tm.s
		switch {
		case s.dead:
		case !s.closed && s.end != tm.at:
			heap.Push(&o.timers, timer{s.end, s.seq, s}) // extended since
		case !s.closed:
			s.dirty = false
			o.out = append(o.out, o.sessionRow(s))
			s.g.open = remove(s.g.open, s)
			if o.update {
				s.closed = true
				s.g.kept = insertByStart(s.g.kept, s)
				heap.Push(&o.timers, timer{s.end + o.late, s.seq, s})
			} else {
				o.free(s)
			}
		case s.end+o.late != tm.at:
			heap.Push(&o.timers, timer{s.end + o.late, s.seq, s})
		default:
			if s.dirty { // corrected earlier in this batch: its last row
				s.dirty = false
				o.out = append(o.out, o.sessionRow(s))
			}
			s.g.kept = remove(s.g.kept, s)
			o.free(s)
		}
	}
}

func (o *Operator) keep(b *bucket) {
	if k := o.kept[b.end]; k != nil && k != b {
		// Windows of one end kept already (LoadGroupFrom loaded open
		// ones another operator had not closed): one bucket holds them.
		for g, key := range b.keys {
			k.index.add([]byte(key), int32(len(k.keys)))
			k.keys = append(k.keys, key)
			k.accs = append(k.accs, b.accs[g*o.na:(g+1)*o.na]...)
		}
		return
	}
	o.kept[b.end] = b
	i, _ := slices.BinarySearch(o.keptEnds, b.end)
	o.keptEnds = slices.Insert(o.keptEnds, i, b.end)
}

// free marks s dead and drops its group when it has no session left.
func (o *Operator) free(s *session) {
	s.dead = true
	o.markSessions(s.g)
	if g := s.g; len(g.open) == 0 && len(g.kept) == 0 {
		delete(o.groups, g.key)
	}
}

// addFixed adds the row at time t (read into the scratch fields) to its
// tumbling or sliding windows.
func (o *Operator) addFixed(r *rec) error {
	t := r.t
	if b := o.last; b != nil && o.slide == o.size && t >= b.start && t < b.end && b.end > o.wm {
		if r.b == b {
			o.fold(b.accs[int(r.pos)*o.na : int(r.pos+1)*o.na])
			if o.track {
				o.markBucket(b, r.pos)
			}
		} else {
			o.addTo(b)
		}
		return nil
	}
	o.windows = o.windows[:0]
	for s := floorDiv(t, o.slide) * o.slide; s > t-o.size; s -= o.slide {
		o.windows = append(o.windows, s+o.size)
	}
	taken, kept := false, false
	for _, end := range o.windows {
		switch {
		case end > o.wm:
			b := o.open[end]
			if b == nil {
				b = o.newBucket(end)
				o.open[end] = b
				i, _ := slices.BinarySearch(o.openEnds, end)
				o.openEnds = slices.Insert(o.openEnds, i, end)
			}
			o.last = b
			o.addTo(b)
			taken = true
		case o.update && end > o.wm-o.late:
			b := o.kept[end]
			if b == nil {
				b = o.newBucket(end)
				o.keep(b)
			}
			g := o.addTo(b)
			if b.dirty == nil {
				b.dirty = map[int32]bool{}
			}
			if !b.dirty[g] {
				b.dirty[g] = true
				o.dirty = append(o.dirty, dirtyRef{b: b, g: g})
			}
			kept = true
		}
	}
	if taken || kept {
		return nil
	}
	return o.lateError(o.windows[0]) // the last of them to close
}

func (o *Operator) lateError(end int64) error {
	err := ErrLate
	switch o.spec.Late {
	case Drop:
		return nil
	case Update:
		err = ErrTooLate
	}
	hint := ""
	if o.cur != nil && o.cur.secs {
		hint = fmt.Sprintf("; its time %d looks like epoch seconds: time fields are RFC 3339 or epoch milliseconds", o.cur.t)
	}
	return fmt.Errorf("%w (window ending %s, watermark %s%s)", err, formatMillis(end), formatMillis(o.wm), hint)
}

// EpochSeconds reports whether the time of a row taken so far was an epoch
// number below 1e11: as milliseconds, a time before 1973, most likely epoch
// seconds, which the operator reads as milliseconds.
func (o *Operator) EpochSeconds() bool { return o.secs }

// newBucket returns an empty window, sized for as many groups as the
// largest window seen so far had (windows tend to hold the same groups).
func (o *Operator) newBucket(end int64) *bucket {
	n := o.hint
	return &bucket{start: end - o.size, end: end, index: newIndex(o.seed, n),
		keys: make([]string, 0, n), accs: make([]accum, 0, n*o.na)}
}

// addTo adds the scratch row to its group in b and returns the group.
func (o *Operator) addTo(b *bucket) int32 {
	g, found := b.index.findOrAdd(o.key, int32(len(b.keys)))
	if !found {
		b.keys = append(b.keys, string(o.key))
		b.accs = slices.Grow(b.accs, o.na)[:len(b.accs)+o.na]
		clear(b.accs[len(b.accs)-o.na:])
		o.hint = max(o.hint, len(b.keys))
	}
	o.fold(b.accs[int(g)*o.na : int(g+1)*o.na])
	if o.track {
		o.markBucket(b, g)
	}
	return g
}

// fold adds the scratch row's values to accs.
func (o *Operator) fold(accs []accum) {
	for i := range accs {
		a := &accs[i]
		switch o.aggs[i].Func {
		case Count:
			a.n++
		case CountDistinct:
			if o.has[i] {
				if a.set == nil {
					a.set = map[string]struct{}{}
				}
				if _, ok := a.set[string(o.dkeys[i])]; !ok {
					a.set[string(o.dkeys[i])] = struct{}{}
				}
			}
		default:
			if !o.has[i] {
				continue
			}
			v := o.vals[i]
			if a.n == 0 {
				a.min, a.max = v, v
			} else {
				a.min, a.max = min(a.min, v), max(a.max, v)
			}
			a.n++
			a.sum += v
		}
	}
}

// addSession adds the row at time t to its group's sessions.
func (o *Operator) addSession(t int64) error {
	lo, hi := t, t+o.gap
	g := o.groups[string(o.key)]
	if g == nil {
		if hi <= o.wm && !o.update {
			return o.lateError(hi)
		}
		g = &sessGroup{key: string(o.key)}
		o.groups[g.key] = g
	}
	o.markSessions(g)
	if o.update && len(g.kept) > 0 {
		// A row within the gap of a session emitted and kept joins it,
		// late or not, and so do the open sessions the row bridges to it.
		// The session is emitted again, corrected: at the end of the batch
		// while the watermark is past its end, else when it closes again.
		if s := o.mergeInto(g, &g.kept, lo, hi); s != nil {
			o.absorbOpen(s)
			if s.end > o.wm {
				s.closed = false
				g.kept = remove(g.kept, s)
				g.open = insertByStart(g.open, s)
				heap.Push(&o.timers, timer{s.end, s.seq, s})
			} else {
				o.markDirty(s)
			}
			return nil
		}
	}
	if s := o.mergeInto(g, &g.open, lo, hi); s != nil {
		return nil
	}
	if hi > o.wm {
		g.open = insertByStart(g.open, o.newSession(g, lo, hi, hi))
		return nil
	}
	if o.update && hi > o.wm-o.late {
		s := o.newSession(g, lo, hi, hi+o.late)
		s.closed = true
		g.kept = insertByStart(g.kept, s)
		o.markDirty(s)
		return nil
	}
	if len(g.open) == 0 && len(g.kept) == 0 {
		delete(o.groups, g.key)
	}
	return o.lateError(hi)
}

// markDirty has the kept session s emitted again at the end of the batch.
func (o *Operator) markDirty(s *session) {
	if !s.dirty {
		s.dirty = true
		o.dirty = append(o.dirty, dirtyRef{s: s})
	}
}

// absorbOpen merges into the kept session s the open sessions of its group
// that it overlaps: s, grown by a row, may reach them.
func (o *Operator) absorbOpen(s *session) {
	g := s.g
	g.open = slices.DeleteFunc(g.open, func(x *session) bool {
		if x.start >= s.end || s.start >= x.end {
			return false
		}
		for i := range s.accs {
			s.accs[i].merge(&x.accs[i])
		}
		s.start, s.end = min(s.start, x.start), max(s.end, x.end)
		x.dead = true
		return true
	})
}

func (o *Operator) newSession(g *sessGroup, lo, hi, at int64) *session {
	o.seq++
	s := &session{g: g, start: lo, end: hi, seq: o.seq, accs: make([]accum, o.na)}
	o.fold(s.accs)
	heap.Push(&o.timers, timer{at, s.seq, s})
	return s
}

// mergeInto adds the scratch row [lo, hi) to the sessions of list that it
// overlaps, merging them into the first, and returns it (nil when none).
func (o *Operator) mergeInto(g *sessGroup, list *[]*session, lo, hi int64) *session {
	var first *session
	keep := (*list)[:0]
	for _, s := range *list {
		if s.start >= hi || lo >= s.end {
			keep = append(keep, s)
			continue
		}
		if first == nil {
			first = s
			keep = append(keep, s)
			continue
		}
		for i := range first.accs {
			first.accs[i].merge(&s.accs[i])
		}
		first.start, first.end = min(first.start, s.start), max(first.end, s.end)
		s.dead = true
	}
	clear((*list)[len(keep):])
	*list = keep
	if first == nil {
		return nil
	}
	o.fold(first.accs)
	first.start, first.end = min(first.start, lo), max(first.end, hi)
	return first
}

func insertByStart(list []*session, s *session) []*session {
	i, _ := slices.BinarySearchFunc(list, s.start, func(x *session, start int64) int {
		switch {
		case x.start < start:
			return -1
		case x.start > start:
			return 1
		}
		return 0
	})
	return slices.Insert(list, i, s)
}

func remove(list []*session, s *session) []*session {
	if i := slices.Index(list, s); i >= 0 {
		return slices.Delete(list, i, i+1)
	}
	return list
}

// emitDirty emits the window-groups late rows changed.
func (o *Operator) emitDirty() {
	for _, d := range o.dirty {
		if d.s != nil {
			// One emitted since (it closed again, or was freed) or open
			// again (emitted when it closes) is not emitted here.
			if d.s.dirty && !d.s.dead && d.s.closed {
				o.out = append(o.out, o.sessionRow(d.s))
			}
			d.s.dirty = false
			continue
		}
		delete(d.b.dirty, d.g)
		o.out = append(o.out, o.bucketRow(d.b, d.g))
	}
	clear(o.dirty)
	o.dirty = o.dirty[:0]
}

func (o *Operator) bucketRow(b *bucket, g int32) map[string]any {
	if b.startS == "" {
		b.startS, b.endS = formatMillis(b.start), formatMillis(b.end)
	}
	return o.row(b.keys[g], b.startS, b.endS, b.accs[int(g)*o.na:int(g+1)*o.na])
}

func (o *Operator) sessionRow(s *session) map[string]any {
	return o.row(s.g.key, formatMillis(s.start), formatMillis(s.end), s.accs)
}

// row builds an output row.
func (o *Operator) row(key string, start, end string, accs []accum) map[string]any {
	r := make(map[string]any, len(o.spec.GroupBy)+2+o.na)
	b := []byte(key)
	for _, f := range o.spec.GroupBy {
		var v any
		v, b, _ = decodeValue(b) // keys are ours: they decode
		r[f] = v
	}
	r[StartField], r[EndField] = start, end
	for i, a := range o.aggs {
		acc := &accs[i]
		var v any
		switch a.Func {
		case Count:
			v = acc.n
		case CountDistinct:
			v = int64(len(acc.set))
		case Sum:
			v = acc.sum
		case Avg, Max, Min:
			if acc.n == 0 {
				break
			}
			switch a.Func {
			case Avg:
				v = acc.sum / float64(acc.n)
			case Max:
				v = acc.max
			default:
				v = acc.min
			}
		}
		r[a.Name] = v
	}
	return r
}
