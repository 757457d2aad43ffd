package pgcdc

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// A snapshot is read table by table, each table in its primary key's
// order, so that a run stopped during it resumes after the last row
// delivered rather than at the first. The rows after that one are read
// from a new snapshot (a temporary slot's, exported at its consistent
// point), while the changes are still streamed from the flow's slot, at
// the first snapshot's point: so each range of rows has its own LSN from
// which its changes count (the consistent point of the snapshot it was
// read from), and a change of a row committed before its range's LSN is
// already in the row's image, and is not delivered. The ranges are kept in
// the position, in the snapshot and in the stream until it passes the last
// of their LSNs.
//
// A table without a primary key (or with one of a type whose order Go
// cannot reproduce, or a replica identity other than the key) is read
// again from its first row when a run stopped in it resumes, and all its
// changes since the range's LSN are delivered: the result is the same
// under mode apply, but its rows already delivered are delivered twice.

// keyKind is how a key column's values are compared in Go, in the order
// PostgreSQL sorts them (text under COLLATE "C").
type keyKind uint8

const (
	kindInt   keyKind = iota + 1 // int2, int4, int8
	kindText                     // text, varchar: bytes (COLLATE "C", UTF8)
	kindUUID                     // uuid: its 16 bytes
	kindBytes                    // bytea: bytes
)

// keyCol is a primary key column.
type keyCol struct {
	name string
	kind keyKind
}

// keyVal is one key column's value: i for kindInt, s (bytes) otherwise.
type keyVal struct {
	i int64
	s string
}

// rowKey is a row's primary key, column by column; nil: before the
// table's first row (or a row whose key is unknown).
type rowKey []keyVal

// keyOf is the key of row (a map of column to value, from the snapshot or
// the stream), false when a column is missing or of an unexpected type.
func keyOf(cols []keyCol, row map[string]any) (rowKey, bool) {
	return keyInto(make(rowKey, 0, len(cols)), cols, row)
}

// keyInto is keyOf appending to k (of length 0).
func keyInto(k rowKey, cols []keyCol, row map[string]any) (rowKey, bool) {
	if len(cols) == 0 {
		return nil, false
	}
	for _, c := range cols {
		v, ok := row[c.name]
		if !ok || v == nil {
			return nil, false
		}
		kv, ok := keyValue(c.kind, v)
		if !ok {
			return nil, false
		}
		k = append(k, kv)
	}
	return k, true
}

func keyValue(kind keyKind, v any) (keyVal, bool) {
	switch kind {
	case kindInt:
		switch x := v.(type) {
		case int64:
			return keyVal{i: x}, true
		case int32:
			return keyVal{i: int64(x)}, true
		case int16:
			return keyVal{i: int64(x)}, true
		case int:
			return keyVal{i: int64(x)}, true
		}
	case kindText:
		if x, ok := v.(string); ok {
			return keyVal{s: x}, true
		}
	case kindUUID:
		switch x := v.(type) {
		case [16]byte:
			return keyVal{s: string(x[:])}, true
		case pgtype.UUID:
			return keyVal{s: string(x.Bytes[:])}, x.Valid
		}
	case kindBytes:
		if x, ok := v.([]byte); ok {
			return keyVal{s: string(x)}, true
		}
	}
	return keyVal{}, false
}

// compareKeys compares two keys of a table in the order PostgreSQL sorts
// them (ORDER BY the key's columns, text under COLLATE "C").
func compareKeys(cols []keyCol, a, b rowKey) int {
	for i, c := range cols {
		var r int
		if c.kind == kindInt {
			r = cmpInt(a[i].i, b[i].i)
		} else {
			r = strings.Compare(a[i].s, b[i].s)
		}
		if r != 0 {
			return r
		}
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// encodeKey writes a key as the position keeps it: a decimal number, the
// text itself, or the bytes in hex (uuid, bytea), column by column.
func encodeKey(cols []keyCol, k rowKey) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		switch c.kind {
		case kindInt:
			out[i] = strconv.FormatInt(k[i].i, 10)
		case kindText:
			out[i] = k[i].s
		default:
			out[i] = hex.EncodeToString([]byte(k[i].s))
		}
	}
	return out
}

// decodeKey reads a key written by encodeKey.
func decodeKey(cols []keyCol, text []string) (rowKey, error) {
	if text == nil {
		return nil, nil
	}
	if len(text) != len(cols) {
		return nil, fmt.Errorf("a key of %d columns, the table's has %d", len(text), len(cols))
	}
	k := make(rowKey, len(cols))
	for i, c := range cols {
		switch c.kind {
		case kindInt:
			n, err := strconv.ParseInt(text[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("key column %s: %w", c.name, err)
			}
			k[i].i = n
		case kindText:
			k[i].s = text[i]
		default:
			b, err := hex.DecodeString(text[i])
			if err != nil || (c.kind == kindUUID && len(b) != 16) {
				return nil, fmt.Errorf("key column %s: %q is not the hex of a %s", c.name, text[i], map[bool]string{true: "uuid", false: "bytea"}[c.kind == kindUUID])
			}
			k[i].s = string(b)
		}
	}
	return k, nil
}

// keyArgs are a key's values as query arguments.
func keyArgs(cols []keyCol, k rowKey) []any {
	args := make([]any, len(cols))
	for i, c := range cols {
		switch c.kind {
		case kindInt:
			args[i] = k[i].i
		case kindText:
			args[i] = k[i].s
		case kindUUID:
			var u [16]byte
			copy(u[:], k[i].s)
			args[i] = u
		case kindBytes:
			args[i] = []byte(k[i].s)
		}
	}
	return args
}

// snapshotQuery is the query reading table t in its key's order, after
// the key after (all of it when after is nil); a table without a usable
// key is read whole, in no order.
func snapshotQuery(t table, cols []keyCol, after rowKey) (string, []any) {
	q := "SELECT * FROM " + t.quoted()
	if len(cols) == 0 {
		return q, nil
	}
	names := make([]string, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.name}.Sanitize()
		if c.kind == kindText {
			names[i] += ` COLLATE "C"`
		}
		params[i] = "$" + strconv.Itoa(i+1)
	}
	var args []any
	if after != nil {
		q += " WHERE (" + strings.Join(names, ", ") + ") > (" + strings.Join(params, ", ") + ")"
		args = keyArgs(cols, after)
	}
	return q + " ORDER BY " + strings.Join(names, ", "), args
}

// loadKeys reads each table's primary key columns; a table gets none (it
// is read again from its start when resumed) without a primary key, with
// a key column of a type the source cannot order in Go, with text keys on
// a server whose encoding is not UTF8, or with a replica identity other
// than its key (a delete would not carry the key).
func (d *CDC) loadKeys(ctx context.Context, conn *pgx.Conn) (map[string][]keyCol, error) {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var enc string
	if err := conn.QueryRow(qctx, "SHOW server_encoding").Scan(&enc); err != nil {
		return nil, d.wrap("read server_encoding", err)
	}
	keys := make(map[string][]keyCol, len(d.tables))
	for _, t := range d.tables {
		rows, err := conn.Query(qctx, `SELECT a.attname::text, a.atttypid::int8, c.relreplident::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::regclass AND i.indisprimary
ORDER BY k.ord`, t.quoted())
		if err != nil {
			return nil, d.wrap("read the primary key of "+t.String(), err)
		}
		var cols []keyCol
		usable := true
		for rows.Next() {
			var name, ident string
			var typ int64
			if err := rows.Scan(&name, &typ, &ident); err != nil {
				rows.Close()
				return nil, d.wrap("read the primary key of "+t.String(), err)
			}
			c := keyCol{name: name}
			switch typ {
			case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
				c.kind = kindInt
			case pgtype.TextOID, pgtype.VarcharOID:
				c.kind = kindText
				usable = usable && enc == "UTF8"
			case pgtype.UUIDOID:
				c.kind = kindUUID
			case pgtype.ByteaOID:
				c.kind = kindBytes
			default:
				usable = false
			}
			if ident != "d" && ident != "f" {
				usable = false
			}
			cols = append(cols, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, d.wrap("read the primary key of "+t.String(), err)
		}
		if !usable {
			cols = nil
		}
		keys[t.String()] = cols
	}
	return keys, nil
}

// ranges are the key ranges of a snapshot read in several parts, each
// with the LSN from which the changes of its rows count: spans[i] holds
// the rows after spans[i-1]'s end up to its own end (in table order, then
// key order), and the open range after the last span's end holds the
// rest, from lsn on. It is not changed once built (positions share it).
type ranges struct {
	tables []string // the tables, in the order they are read
	spans  []span
	lsn    pglogrepl.LSN // the open range's
	max    pglogrepl.LSN // the greatest LSN of all: no change after it is skipped

	index map[string]int // table name → its index in tables
	cols  [][]keyCol     // each table's key (nil: none usable), once bound
	wire  string         // the JSON of tables, spans and lsn, without the closing brace
}

// span is a closed range. Its end is the row of table t with key k (as
// text; key decoded once bound); k nil is before the table's first row.
type span struct {
	lsn pglogrepl.LSN
	t   int
	k   []string
	key rowKey
	bad bool // k could not be decoded: the table's changes all count
}

type wireSpan struct {
	LSN string   `json:"lsn"`
	T   int      `json:"t"`
	K   []string `json:"k,omitempty"`
}

type wireState struct {
	Tables []string   `json:"tables"`
	Spans  []wireSpan `json:"spans,omitempty"`
	LSN    string     `json:"lsn"`
	T      *int       `json:"t,omitempty"` // the snapshot's table being read
	K      []string   `json:"k,omitempty"` // the last key delivered of table T
}

// newRanges builds ranges of spans (kept as given, keys included) and the
// open range from lsn; cols are the tables' keys (nil: not bound yet).
func newRanges(tables []string, spans []span, lsn pglogrepl.LSN, cols [][]keyCol) *ranges {
	r := &ranges{tables: tables, spans: spans, lsn: lsn, max: lsn, cols: cols, index: make(map[string]int, len(tables))}
	for i, t := range tables {
		r.index[t] = i
	}
	w := wireState{Tables: tables, LSN: lsn.String()}
	for _, s := range spans {
		r.max = max(r.max, s.lsn)
		w.Spans = append(w.Spans, wireSpan{LSN: s.lsn.String(), T: s.t, K: s.k})
	}
	b, _ := json.Marshal(w)
	r.wire = string(b[:len(b)-1])
	return r
}

// parseRanges reads the JSON a position ends with: the ranges, and in the
// snapshot the table being read and its last key delivered.
func parseRanges(s string) (r *ranges, t int, k []string, err error) {
	var w wireState
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, 0, nil, err
	}
	lsn, err := pglogrepl.ParseLSN(w.LSN)
	if err != nil {
		return nil, 0, nil, err
	}
	spans := make([]span, len(w.Spans))
	for i, ws := range w.Spans {
		if spans[i].lsn, err = pglogrepl.ParseLSN(ws.LSN); err != nil {
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
	return newRanges(w.Tables, spans, lsn, nil), t, w.K, nil
}

// appendJSON appends the ranges as JSON, with the table t and key k
// being read when snap.
func (r *ranges) appendJSON(b []byte, snap bool, t int, k []string) []byte {
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

// bound returns the ranges with the spans' keys decoded against the
// tables' keys (by name), and whether every span's key could be: a span
// whose key cannot be (its table has no usable key now, or another one)
// leaves its table's changes all counting.
func (r *ranges) bound(keys map[string][]keyCol) (*ranges, bool) {
	ok := true
	cols := make([][]keyCol, len(r.tables))
	for i, t := range r.tables {
		cols[i] = keys[t]
	}
	spans := append([]span(nil), r.spans...)
	for i := range spans {
		s := &spans[i]
		if s.k == nil || s.t >= len(r.tables) {
			continue
		}
		k, err := decodeKey(cols[s.t], s.k)
		if err != nil || cols[s.t] == nil {
			s.bad, ok = true, false
			continue
		}
		s.key = k
	}
	return newRanges(r.tables, spans, r.lsn, cols), ok
}

// compareEnds compares two ends (table, key; a nil key is before the
// table's first row).
func (r *ranges) compareEnds(at int, ak rowKey, bt int, bk rowKey) int {
	switch {
	case at != bt:
		return cmpInt(int64(at), int64(bt))
	case ak == nil && bk == nil:
		return 0
	case ak == nil:
		return -1
	case bk == nil:
		return 1
	}
	return compareKeys(r.cols[at], ak, bk)
}

// from is the LSN from which the changes of the row of table name with
// key k count (changes committed before it are in the row's image); k is
// nil for a table without a usable key. ok is false when the row cannot
// be placed (its key is unknown, or a span of its table could not be
// decoded): all its changes count.
func (r *ranges) from(name string, k rowKey) (lsn pglogrepl.LSN, ok bool) {
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
		if t < s.t || (t == s.t && s.key != nil && compareKeys(r.cols[t], k, s.key) <= 0) {
			return s.lsn, true
		}
	}
	return r.lsn, true
}

// tableFrom is the least LSN from which the changes of any of table
// name's rows count: a truncate committed at or after it is delivered.
func (r *ranges) tableFrom(name string) pglogrepl.LSN {
	t, found := r.index[name]
	if !found {
		return 0
	}
	least := pglogrepl.LSN(math.MaxUint64)
	startT := 0 // the table of the range's start
	for _, s := range r.spans {
		// The range covers rows of t when it starts at or before t and
		// ends after t's start.
		if startT <= t && (s.t > t || (s.t == t && s.k != nil)) {
			least = min(least, s.lsn)
		}
		startT = s.t
		if startT > t {
			return least
		}
	}
	return min(least, r.lsn) // the open range covers the rest of t
}

// resumed is the ranges of a snapshot resumed at table t after key k
// (nil: from the table's start) from a new snapshot whose changes count
// from lsn: the open range closes where the last run stopped (for a table
// without a usable key, after the table: it is read again whole, its
// changes counting as before), and a new one opens. It returns the key to
// resume after (nil for such a table), and false when k cannot be read.
// r must be bound.
func (r *ranges) resumed(t int, k []string, lsn pglogrepl.LSN) (*ranges, []string, bool) {
	end := span{lsn: r.lsn, t: t, k: k}
	if t < len(r.tables) && r.cols[t] == nil {
		end.t, end.k, k = t+1, nil, nil
	}
	if end.k != nil {
		key, err := decodeKey(r.cols[t], end.k)
		if err != nil {
			return nil, nil, false
		}
		end.key = key
	}
	// Drop empty spans (ending where the one before ends) and merge
	// neighbours of the same LSN.
	var kept []span
	for _, s := range append(append([]span(nil), r.spans...), end) {
		if n := len(kept); n > 0 {
			prev := kept[n-1]
			if r.compareEnds(prev.t, prev.key, s.t, s.key) >= 0 {
				continue // empty
			}
			if prev.lsn == s.lsn {
				kept[n-1] = s
				continue
			}
		} else if s.t == 0 && s.k == nil {
			continue // empty: before the first row
		}
		kept = append(kept, s)
	}
	if n := len(kept); n > 0 && kept[n-1].lsn == lsn {
		kept = kept[:n-1]
	}
	return newRanges(r.tables, kept, lsn, r.cols), k, true
}

// sameTables reports whether the tables of a position are the
// connector's, in the same order.
func sameTables(a []string, b []table) bool {
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
