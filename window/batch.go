package window

import (
	"fmt"
	"time"
)

// chunk is how many rows Process reads before it adds them: reading a
// chunk first lets it fetch the chunk's window-groups from memory together
// (see prefetch).
const chunk = 128

// rec is a row read and not yet added.
type rec struct {
	t          int64
	key0, key1 int32 // the group key in the operator's arena
	err        error
	secs       bool    // t is an epoch number that looks like seconds
	b          *bucket // when not nil, the row's group is at pos in b
	pos        int32
	hash       uint64 // of the key in b's index (0: not computed)
}

// Process adds rows in order. It returns the rows of the windows they
// closed, in the order the windows closed (by end, then groups in the
// order first seen), followed, under late: update, by the corrected rows of
// windows that late rows changed (a kept session freed during the batch
// gives its corrected row as it is freed); and the rows it rejected.
func (o *Operator) Process(rows []map[string]any) (out []map[string]any, rejected []Rejected) {
	for lo := 0; lo < len(rows); lo += chunk {
		part := rows[lo:min(lo+chunk, len(rows))]
		o.read(part)
		o.prefetch()
		for i := range o.recs {
			r := &o.recs[i]
			if r.err == nil {
				r.err = o.place(i)
				o.cur = nil
			}
			if r.err != nil {
				rejected = append(rejected, Rejected{Index: lo + i, Row: part[i], Err: r.err})
			}
		}
	}
	o.emitDirty()
	return o.take(), rejected
}

// read reads rows into recs: times, group keys and aggregate inputs.
func (o *Operator) read(rows []map[string]any) {
	o.recs = o.recs[:0]
	o.arena = o.arena[:0]
	n := len(rows) * o.na
	o.flatVals = append(o.flatVals[:0], make([]float64, n)...)
	o.flatHas = append(o.flatHas[:0], make([]bool, n)...)
	o.flatKeys = append(o.flatKeys[:0], make([]int32, 2*n)...)
	o.limit = -1
	if o.spec.TimeField != "" && o.ahead >= 0 {
		o.limit = o.now().UnixMilli() + o.ahead
	}
	for i, row := range rows {
		o.recs = append(o.recs, rec{})
		r := &o.recs[i]
		r.err = o.readRow(row, r, i*o.na)
	}
}

// readRow reads one row into r; its aggregate inputs go at base of the
// flat slices.
func (o *Operator) readRow(row map[string]any, r *rec, base int) error {
	if tf := o.spec.TimeField; tf != "" {
		v, ok := row[tf]
		if !ok {
			return fmt.Errorf("time field %q is missing", tf)
		}
		var err error
		if r.t, err = millis(v); err != nil {
			return fmt.Errorf("time field %q: %w", tf, err)
		}
		if r.secs = looksSeconds(v, r.t); r.secs {
			o.secs = true
		}
		if o.limit >= 0 && r.t > o.limit {
			return fmt.Errorf("time field %q: %s: %w (by more than max_ahead %s)", tf, formatMillis(r.t), ErrAhead, time.Duration(o.ahead)*time.Millisecond)
		}
	} else {
		r.t = o.now().UnixMilli()
	}
	r.key0 = int32(len(o.arena))
	for _, g := range o.spec.GroupBy {
		var err error
		if o.arena, err = appendValue(o.arena, row[g]); err != nil {
			return fmt.Errorf("group_by field %q: %w", g, err)
		}
	}
	r.key1 = int32(len(o.arena))
	for i := range o.aggs {
		a := &o.aggs[i]
		switch a.Func {
		case Count:
		case CountDistinct:
			v := row[a.Field]
			o.flatHas[base+i] = v != nil
			if v != nil {
				start := len(o.arena)
				var err error
				if o.arena, err = appendValue(o.arena, v); err != nil {
					return fmt.Errorf("aggregate %s: field %q: %w", a.Name, a.Field, err)
				}
				o.flatKeys[2*(base+i)], o.flatKeys[2*(base+i)+1] = int32(start), int32(len(o.arena))
			}
		default:
			f, ok, err := number(row[a.Field])
			if err != nil {
				return fmt.Errorf("aggregate %s: field %q: %w", a.Name, a.Field, err)
			}
			o.flatVals[base+i], o.flatHas[base+i] = f, ok
		}
	}
	return nil
}

// prefetch finds, for a tumbling window, the groups of the chunk's rows in
// the current window before the rows are added, and touches their
// accumulators. With many groups each lookup waits for memory; done in a
// loop of independent lookups, the waits overlap. The positions found are
// hints: place uses one only while its window is still the current one.
func (o *Operator) prefetch() {
	b := o.last
	if b == nil || o.spec.Type != Tumbling {
		return
	}
	var sink uint64
	for i := range o.recs {
		r := &o.recs[i]
		r.hash = 0
		if r.err == nil && r.t >= b.start && r.t < b.end && r.key1-r.key0 <= inlineKey {
			r.hash = b.index.hash(o.arena[r.key0:r.key1])
			sink += b.index.touch(r.hash)
		}
	}
	for i := range o.recs {
		r := &o.recs[i]
		if r.hash != 0 {
			if pos, ok := b.index.findHash(o.arena[r.key0:r.key1], r.hash); ok {
				r.b, r.pos = b, pos
				sink += uint64(b.accs[int(pos)*o.na].n)
			}
		}
	}
	o.sink += sink
}

// place adds the i-th row read to its windows.
func (o *Operator) place(i int) error {
	r := &o.recs[i]
	o.key = o.arena[r.key0:r.key1]
	base := i * o.na
	o.vals, o.has = o.flatVals[base:base+o.na], o.flatHas[base:base+o.na]
	for j, a := range o.aggs {
		if a.Func == CountDistinct && o.has[j] {
			o.dkeys[j] = o.arena[o.flatKeys[2*(base+j)]:o.flatKeys[2*(base+j)+1]]
		}
	}
	o.cur = r
	o.advance(r.t)
	if o.spec.Type == Session {
		return o.addSession(r.t)
	}
	return o.addFixed(r)
}
