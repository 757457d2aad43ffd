// Package cdcsnap keeps where a change data capture source's snapshot
// stands, so that a run stopped during it resumes after the last row
// delivered: the snapshot is read table by table in each table's primary
// key order, and when a run resumes, the rows after that key come from a
// new snapshot, while the changes are still read from the first
// snapshot's point. Each range of rows has its own point in the source's
// log (an LSN, a binlog position) from which its changes count: a change
// of a row committed before its range's point is already in the row's
// image and is not delivered. The ranges go into the position (as JSON)
// until the stream has passed the last of their points.
//
// A table without a usable key is read again whole when a run stopped in
// it resumes, its changes counting as before (the result is the same
// applied by key; a sink that inserts holds its rows twice).
package cdcsnap

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Point is a place in the source's log, ordered as the log: a change
// committed before a snapshot's point is in the snapshot, one at or after
// it is not.
type Point uint64

// Codec writes and reads a source's points as the position holds them.
type Codec struct {
	Format func(Point) string
	Parse  func(string) (Point, error)
}

// Kind is how a key column's values are compared, in the order the
// database sorts them in the snapshot's query.
type Kind uint8

// The kinds of key columns.
const (
	Int   Kind = iota + 1 // a signed integer
	Uint                  // an unsigned integer
	Text                  // text compared by its bytes, written as it is
	Bytes                 // bytes, written in hex
)

// Col is a key column: its name, kind, and the database's type for the
// source's own use (uuid, ...).
type Col struct {
	Name string
	Kind Kind
	Type string
}

// Val is one key column's value: I for Int, U for Uint, S (bytes)
// otherwise.
type Val struct {
	I int64
	U uint64
	S string
}

// Key is a row's key, column by column.
type Key []Val

// Compare compares two keys of a table in the order of cols.
func Compare(cols []Col, a, b Key) int {
	for i, c := range cols {
		var r int
		switch c.Kind {
		case Int:
			r = cmp(a[i].I, b[i].I)
		case Uint:
			r = cmp(a[i].U, b[i].U)
		default:
			r = strings.Compare(a[i].S, b[i].S)
		}
		if r != 0 {
			return r
		}
	}
	return 0
}

func cmp[T int64 | uint64 | int](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Encode writes a key as the position keeps it: a decimal number, the
// text itself, or the bytes in hex, column by column.
func Encode(cols []Col, k Key) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c.Kind {
		case Int:
			out[i] = strconv.FormatInt(k[i].I, 10)
		case Uint:
			out[i] = strconv.FormatUint(k[i].U, 10)
		case Text:
			out[i] = k[i].S
		default:
			out[i] = hex.EncodeToString([]byte(k[i].S))
		}
	}
	return out
}

// Decode reads a key written by Encode (nil for nil).
func Decode(cols []Col, text []string) (Key, error) {
	if text == nil {
		return nil, nil
	}
	if len(text) != len(cols) {
		return nil, fmt.Errorf("a key of %d columns, the table's has %d", len(text), len(cols))
	}
	k := make(Key, len(cols))
	for i, c := range cols {
		var err error
		switch c.Kind {
		case Int:
			k[i].I, err = strconv.ParseInt(text[i], 10, 64)
		case Uint:
			k[i].U, err = strconv.ParseUint(text[i], 10, 64)
		case Text:
			k[i].S = text[i]
		default:
			var b []byte
			b, err = hex.DecodeString(text[i])
			k[i].S = string(b)
		}
		if err != nil {
			return nil, fmt.Errorf("key column %s: %w", c.Name, err)
		}
	}
	return k, nil
}

// Ranges are the key ranges of a snapshot read in several parts, each
// with the point from which the changes of its rows count: spans[i] holds
// the rows after spans[i-1]'s end up to its own end (in table order, then
// key order), and the open range after the last span's end holds the
// rest, from Open on. Ranges are not changed once built (positions share
// them).
type Ranges struct {
	codec  *Codec
	tables []string // the tables, in the order they are read
	spans  []span
	open   Point // the open range's
	max    Point // the greatest point of all: no change at or after it is skipped

	index map[string]int // table name → its index in tables
	cols  [][]Col        // each table's key (nil: none usable), once bound
	wire  string         // the JSON of tables, spans and open, without the closing brace
}

// span is a closed range. Its end is the row of table t with key k (as
// text; key decoded once bound); k nil is before the table's first row.
type span struct {
	at  Point
	t   int
	k   []string
	key Key
	bad bool // k could not be decoded: the table's changes all count
}

type wireSpan struct {
	At string   `json:"at"`
	T  int      `json:"t"`
	K  []string `json:"k,omitempty"`
}

type wireState struct {
	Tables []string   `json:"tables"`
	Spans  []wireSpan `json:"spans,omitempty"`
	At     string     `json:"at"`
	T      *int       `json:"t,omitempty"` // the snapshot's table being read
	K      []string   `json:"k,omitempty"` // the last key delivered of table T
}

// New is the ranges of a snapshot of tables (in their reading order)
// whose keys are cols (cols[i] nil: table i has no usable key), read from
// one snapshot whose changes count from open.
func New(codec *Codec, tables []string, cols [][]Col, open Point) *Ranges {
	return build(codec, tables, nil, open, cols)
}

func build(codec *Codec, tables []string, spans []span, open Point, cols [][]Col) *Ranges {
	r := &Ranges{codec: codec, tables: tables, spans: spans, open: open, max: open, cols: cols, index: make(map[string]int, len(tables))}
	for i, t := range tables {
		r.index[t] = i
	}
	w := wireState{Tables: tables, At: codec.Format(open)}
	for _, s := range spans {
		r.max = max(r.max, s.at)
		w.Spans = append(w.Spans, wireSpan{At: codec.Format(s.at), T: s.t, K: s.k})
	}
	b, _ := json.Marshal(w)
	r.wire = string(b[:len(b)-1])
	return r
}

// Parse reads the JSON a position ends with (AppendJSON): the ranges, not
// bound yet, and in a snapshot the table being read and its last key
// delivered.
func Parse(codec *Codec, s string) (r *Ranges, t int, k []string, err error) {
	var w wireState
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, 0, nil, err
	}
	open, err := codec.Parse(w.At)
	if err != nil {
		return nil, 0, nil, err
	}
	spans := make([]span, len(w.Spans))
	for i, ws := range w.Spans {
		if spans[i].at, err = codec.Parse(ws.At); err != nil {
			return nil, 0, nil, err
		}
		if ws.T < 0 || ws.T > len(w.Tables) {
			return nil, 0, nil, fmt.Errorf("a range ends at table %d of %d", ws.T, len(w.Tables))
		}
		spans[i].t, spans[i].k = ws.T, ws.K
	}
	if w.T != nil {
		t = *w.T
		if t < 0 || t > len(w.Tables) {
			return nil, 0, nil, fmt.Errorf("the snapshot reads table %d of %d", t, len(w.Tables))
		}
	}
	return build(codec, w.Tables, spans, open, nil), t, w.K, nil
}

// AppendJSON appends the ranges as JSON, with the table t and key k
// being read when snap.
func (r *Ranges) AppendJSON(b []byte, snap bool, t int, k []string) []byte {
	b = append(b, r.wire...)
	if snap {
		b = append(b, `,"t":`...)
		b = strconv.AppendInt(b, int64(t), 10)
		if k != nil {
			b = append(b, `,"k":[`...)
			for i, v := range k {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, v)
			}
			b = append(b, ']')
		}
	}
	return append(b, '}')
}

// appendJSONString appends v as a JSON string: as it is when it needs no
// escape (a number, most keys), through encoding/json otherwise.
func appendJSONString(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7F || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(v)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

// Tables are the tables, in the order they are read.
func (r *Ranges) Tables() []string { return r.tables }

// Max is the greatest point of the ranges: a change at or after it always
// counts.
func (r *Ranges) Max() Point { return r.max }

// Cols is table t's key (nil: none usable). The ranges must be bound.
func (r *Ranges) Cols(t int) []Col { return r.cols[t] }

// Bound reports whether the ranges' keys are decoded.
func (r *Ranges) Bound() bool { return r.cols != nil }

// Bind returns the ranges with the spans' keys decoded against the
// tables' keys (by name), and whether every span's key could be: a span
// whose key cannot be (its table has no usable key now, or another one)
// leaves its table's changes all counting.
func (r *Ranges) Bind(keys map[string][]Col) (*Ranges, bool) {
	ok := true
	cols := make([][]Col, len(r.tables))
	for i, t := range r.tables {
		cols[i] = keys[t]
	}
	spans := append([]span(nil), r.spans...)
	for i := range spans {
		s := &spans[i]
		if s.k == nil || s.t >= len(r.tables) {
			continue
		}
		k, err := Decode(cols[s.t], s.k)
		if err != nil || cols[s.t] == nil {
			s.bad, ok = true, false
			continue
		}
		s.key = k
	}
	return build(r.codec, r.tables, spans, r.open, cols), ok
}

// ForStream returns the ranges a change stream resumed from a position
// holding r goes on with: nil when there are none or the position is
// still in its snapshot (no stream yet), else r bound to the tables'
// keys, calling lost when a span's key no longer reads as its table's
// (every change of that table since the stream's start is then
// delivered).
func (r *Ranges) ForStream(inSnapshot bool, keys map[string][]Col, lost func()) *Ranges {
	if r == nil || inSnapshot {
		return nil
	}
	if r.Bound() {
		return r
	}
	rs, ok := r.Bind(keys)
	if !ok {
		lost()
	}
	return rs
}

// compareEnds compares two ends (table, key; a nil key is before the
// table's first row).
func (r *Ranges) compareEnds(at int, ak Key, bt int, bk Key) int {
	switch {
	case at != bt:
		return cmp(at, bt)
	case ak == nil && bk == nil:
		return 0
	case ak == nil:
		return -1
	case bk == nil:
		return 1
	}
	return Compare(r.cols[at], ak, bk)
}

// From is the point from which the changes of the row of table name with
// key k count (changes committed before it are in the row's image); k is
// nil for a table without a usable key. ok is false when the row cannot
// be placed (its key is unknown, or a span of its table could not be
// decoded): all its changes count. The ranges must be bound.
func (r *Ranges) From(name string, k Key) (at Point, ok bool) {
	t, found := r.index[name]
	if !found || r.cols == nil {
		return 0, false
	}
	if k == nil && r.cols[t] != nil {
		return 0, false
	}
	for _, s := range r.spans {
		if s.t == t && s.bad {
			return 0, false
		}
		// The row is in the span when it is at or before its end.
		if t < s.t || (t == s.t && s.key != nil && Compare(r.cols[t], k, s.key) <= 0) {
			return s.at, true
		}
	}
	return r.open, true
}

// Index is table name's index in the ranges' tables, false when it is
// not one of them.
func (r *Ranges) Index(name string) (int, bool) {
	t, ok := r.index[name]
	return t, ok
}

// TableFrom is the least point from which the changes of any of table
// name's rows count: a truncate committed at or after it is delivered.
func (r *Ranges) TableFrom(name string) Point {
	t, found := r.index[name]
	if !found {
		return 0
	}
	least := Point(math.MaxUint64)
	startT := 0 // the table of the range's start
	for _, s := range r.spans {
		// The range covers rows of t when it starts at or before t and
		// ends after t's start.
		if startT <= t && (s.t > t || (s.t == t && s.k != nil)) {
			least = min(least, s.at)
		}
		startT = s.t
		if startT > t {
			return least
		}
	}
	return min(least, r.open) // the open range covers the rest of t
}

// Resumed is the ranges of a snapshot resumed at table t after key k
// (nil: from the table's start) from a new snapshot whose changes count
// from at: the open range closes where the last run stopped (for a table
// without a usable key, after the table: it is read again whole, its
// changes counting as before), and a new one opens. It returns the key to
// resume after (nil for such a table), and false when k cannot be read.
// The ranges must be bound.
func (r *Ranges) Resumed(t int, k []string, at Point) (*Ranges, []string, bool) {
	end := span{at: r.open, t: t, k: k}
	if t < len(r.tables) && r.cols[t] == nil {
		end.t, end.k, k = t+1, nil, nil
	}
	if end.k != nil {
		key, err := Decode(r.cols[t], end.k)
		if err != nil {
			return nil, nil, false
		}
		end.key = key
	}
	// Drop empty spans (ending where the one before ends) and merge
	// neighbours of the same point.
	var kept []span
	for _, s := range append(append([]span(nil), r.spans...), end) {
		if n := len(kept); n > 0 {
			prev := kept[n-1]
			if r.compareEnds(prev.t, prev.key, s.t, s.key) >= 0 {
				continue // empty
			}
			if prev.at == s.at {
				kept[n-1] = s
				continue
			}
		} else if s.t == 0 && s.k == nil {
			continue // empty: before the first row
		}
		kept = append(kept, s)
	}
	if n := len(kept); n > 0 && kept[n-1].at == at {
		kept = kept[:n-1]
	}
	return build(r.codec, r.tables, kept, at, r.cols), k, true
}

// ValueFunc reads a key column's value of a row image (as the source's
// driver or log decodes it) as a key value, false when it is of a type
// the source does not expect for the column's kind.
type ValueFunc func(c Col, v any) (Val, bool)

// AppendKey appends to k (of length 0) the key of row (a map of column to
// value, from the snapshot or the log) read by value, false when the
// table has no usable key or a column is missing, null or of an
// unexpected type.
func AppendKey(k Key, cols []Col, row map[string]any, value ValueFunc) (Key, bool) {
	if len(cols) == 0 {
		return nil, false
	}
	for _, c := range cols {
		v, ok := row[c.Name]
		if !ok || v == nil {
			return nil, false
		}
		kv, ok := value(c, v)
		if !ok {
			return nil, false
		}
		k = append(k, kv)
	}
	return k, true
}

// SameTables reports whether the tables of a position (Ranges.Tables)
// are the connector's, in the same order.
func SameTables[T fmt.Stringer](a []string, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i].String() {
			return false
		}
	}
	return true
}

// Delivered decides, while the stream is within the resumed snapshot's
// ranges r, whether a change (op) of table's row, whose transaction
// stands at point at in the log, is delivered: not when at is before the
// point from which the row's changes count (the image read from the
// snapshot holds it). value reads the row's key columns. An update that
// moved the row's key between two ranges of which only one counts it is
// delivered as that half: the update without _before (the new key's,
// removed from row), or a delete of the old image. The ranges must be
// bound.
func (r *Ranges) Delivered(table, op string, row map[string]any, at Point, value ValueFunc) (string, bool) {
	t, ok := r.Index(table)
	if !ok {
		return op, true
	}
	cols := r.Cols(t)
	counts := func(img map[string]any) bool {
		var k Key
		if cols != nil {
			var ok bool
			if k, ok = AppendKey(make(Key, 0, len(cols)), cols, img, value); !ok {
				return true // the key is unknown: it counts
			}
		}
		from, ok := r.From(table, k)
		return !ok || at >= from
	}
	newer := counts(row)
	before, hasBefore := row["_before"].(map[string]any)
	if op != "update" || !hasBefore {
		return op, newer
	}
	older := counts(before)
	switch {
	case newer == older:
		return op, newer
	case newer:
		delete(row, "_before")
		return op, true
	}
	return "delete", true
}
