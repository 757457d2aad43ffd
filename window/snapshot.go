package window

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// snapshotMagic starts every snapshot; the digit is the format's version.
const snapshotMagic = "KFW1"

// Snapshot encodes the operator's state: the largest time seen, the open
// windows with their groups and accumulators, and, under late: update, the
// closed windows still kept. The encoding is binary and deterministic (the
// same state gives the same bytes). Take it between calls of Process.
func (o *Operator) Snapshot() ([]byte, error) {
	w := &writer{b: []byte(snapshotMagic)}
	w.str(o.fingerprint())
	w.bool(o.seen)
	w.bool(o.flushed)
	w.int(o.maxTS)
	w.uint(o.seq)
	for _, set := range []struct {
		m    map[int64]*bucket
		ends []int64
	}{{o.open, o.openEnds}, {o.kept, o.keptEnds}} {
		w.uint(uint64(len(set.ends)))
		for _, end := range set.ends {
			b := set.m[end]
			w.int(b.end)
			w.uint(uint64(len(b.keys)))
			for g, k := range b.keys {
				w.str(k)
				o.writeAccs(w, b.accs[g*o.na:(g+1)*o.na])
			}
		}
	}
	keys := make([]string, 0, len(o.groups))
	for k := range o.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		g := o.groups[k]
		w.str(k)
		for _, list := range [][]*session{g.open, g.kept} {
			w.uint(uint64(len(list)))
			for _, s := range list {
				w.int(s.start)
				w.int(s.end)
				w.uint(s.seq)
				o.writeAccs(w, s.accs)
			}
		}
	}
	return w.b, nil
}

// Restore replaces the operator's state with a snapshot taken from an
// operator of the same spec.
func (o *Operator) Restore(data []byte) error {
	fresh, err := New(o.spec)
	if err != nil {
		return err
	}
	if err := fresh.restore(data); err != nil {
		return fmt.Errorf("window: restore: %w", err)
	}
	*o = *fresh
	return nil
}

func (o *Operator) restore(data []byte) error {
	if !strings.HasPrefix(string(data), snapshotMagic) {
		return errors.New("not a window snapshot")
	}
	r := &reader{b: data[len(snapshotMagic):]}
	if fp := r.str(); r.err == nil && fp != o.fingerprint() {
		return fmt.Errorf("the snapshot is of another window (%s), not %s", fp, o.fingerprint())
	}
	o.seen, o.flushed = r.bool(), r.bool()
	o.maxTS, o.seq = r.int(), r.uint()
	o.resume()
	for pass := range 2 {
		n := r.count()
		for range n {
			b := o.newBucket(r.int())
			groups := r.count()
			for g := range groups {
				k := r.str()
				b.index.add([]byte(k), int32(g))
				b.keys = append(b.keys, k)
				b.accs = append(b.accs, make([]accum, o.na)...)
				o.readAccs(r, b.accs[len(b.accs)-o.na:])
			}
			if r.err != nil {
				return r.err
			}
			o.hint = max(o.hint, len(b.keys))
			if pass == 0 {
				o.open[b.end] = b
				o.openEnds = append(o.openEnds, b.end)
			} else {
				o.keep(b)
			}
		}
	}
	n := r.count()
	for range n {
		g := &sessGroup{key: r.str()}
		for pass := range 2 {
			m := r.count()
			for range m {
				s := &session{g: g, start: r.int(), end: r.int(), seq: r.uint(), accs: make([]accum, o.na), closed: pass == 1}
				o.readAccs(r, s.accs)
				if r.err != nil {
					return r.err
				}
				if s.closed {
					g.kept = append(g.kept, s)
					heap.Push(&o.timers, timer{s.end + o.late, s.seq, s})
				} else {
					g.open = append(g.open, s)
					heap.Push(&o.timers, timer{s.end, s.seq, s})
				}
			}
		}
		o.groups[g.key] = g
	}
	if r.err == nil && len(r.b) > 0 {
		return errors.New("trailing bytes")
	}
	return r.err
}

// fingerprint names what a snapshot's state means: the window and the
// aggregates, in order.
func (o *Operator) fingerprint() string {
	s := o.spec
	aggs := make([]string, len(s.Aggregates))
	for i, a := range s.Aggregates {
		aggs[i] = a.Name + "=" + a.String()
	}
	return fmt.Sprintf("%s size=%d slide=%d gap=%d lateness=%d late=%s group_by=%s aggregate=%s",
		s.Type, o.size, o.slide, o.gap, o.late, s.Late, strings.Join(s.GroupBy, ","), strings.Join(aggs, ","))
}

// writeAccs writes what each aggregate needs of its accumulator.
func (o *Operator) writeAccs(w *writer, accs []accum) {
	for i, a := range o.aggs {
		acc := &accs[i]
		switch a.Func {
		case CountDistinct:
			keys := make([]string, 0, len(acc.set))
			for k := range acc.set {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			w.uint(uint64(len(keys)))
			for _, k := range keys {
				w.str(k)
			}
			continue
		}
		w.int(acc.n)
		switch a.Func {
		case Sum, Avg:
			w.float(acc.sum)
		case Max:
			w.float(acc.max)
		case Min:
			w.float(acc.min)
		}
	}
}

// readAccs reads what writeAccs wrote into accs.
func (o *Operator) readAccs(r *reader, accs []accum) {
	for i, a := range o.aggs {
		acc := &accs[i]
		switch a.Func {
		case CountDistinct:
			n := r.count()
			if n > 0 {
				acc.set = make(map[string]struct{}, n)
			}
			for range n {
				acc.set[r.str()] = struct{}{}
			}
			continue
		}
		acc.n = r.int()
		switch a.Func {
		case Sum, Avg:
			acc.sum = r.float()
		case Max:
			acc.max = r.float()
			acc.min = acc.max
		case Min:
			acc.min = r.float()
			acc.max = acc.min
		}
	}
}

type writer struct{ b []byte }

func (w *writer) uint(u uint64) { w.b = binary.AppendUvarint(w.b, u) }
func (w *writer) int(i int64)   { w.b = binary.AppendVarint(w.b, i) }
func (w *writer) float(f float64) {
	w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(f))
}
func (w *writer) str(s string) { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *writer) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

// reader reads what writer wrote; its first error sticks, and every later
// read returns zero.
type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("snapshot is truncated")

func (r *reader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	u, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return u
}

func (r *reader) int() int64 {
	if r.err != nil {
		return 0
	}
	i, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return i
}

// count reads a length, bounded by the bytes left (each item takes one).
func (r *reader) count() int {
	n := r.uint()
	if n > uint64(len(r.b)) {
		r.err = errShort
		return 0
	}
	return int(n)
}

func (r *reader) float() float64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShort
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return f
}

func (r *reader) str() string {
	n := r.count()
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) bool() bool {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return false
	}
	v := r.b[0] == 1
	r.b = r.b[1:]
	return v
}
