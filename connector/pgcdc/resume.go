package pgcdc

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kisflow-go/kisflow/internal/cdcsnap"
)

// A snapshot is read table by table, each table in its primary key's
// order, so that a run stopped during it resumes after the last row
// delivered (see package cdcsnap): the rows after it are read from a
// temporary slot's snapshot, exported at its consistent point, while the
// changes are still streamed from the flow's slot, at the first snapshot's
// point; a change committed (its commit record) before the consistent
// point of the snapshot its row was read from is not delivered.
//
// Keys Go orders as the server does: smallint, integer and bigint; text
// and varchar on a UTF8 server, under COLLATE "C" (their bytes); uuid and
// bytea (their bytes). A table whose key has another type, or without a
// primary key, or with a replica identity other than its key or full (a
// delete would not carry the key), is read again whole when a run stopped
// in it resumes.

// keyCol, keyVal and rowKey are cdcsnap's: a key column, value and key.
type (
	keyCol = cdcsnap.Col
	keyVal = cdcsnap.Val
	rowKey = cdcsnap.Key
)

// lsnCodec writes points as LSNs (0/16B3748).
var lsnCodec = &cdcsnap.Codec{
	Format: func(p cdcsnap.Point) string { return pglogrepl.LSN(p).String() },
	Parse: func(s string) (cdcsnap.Point, error) {
		lsn, err := pglogrepl.ParseLSN(s)
		return cdcsnap.Point(lsn), err
	},
}

// keyOf is the key of row (a map of column to value, from the snapshot or
// the stream), false when a column is missing or of an unexpected type.
func keyOf(cols []keyCol, row map[string]any) (rowKey, bool) {
	return keyInto(make(rowKey, 0, len(cols)), cols, row)
}

// keyInto is keyOf appending to k (of length 0).
func keyInto(k rowKey, cols []keyCol, row map[string]any) (rowKey, bool) {
	return cdcsnap.AppendKey(k, cols, row, keyValue)
}

// keyValue is a value of column c as pgx decodes it, as a key value.
func keyValue(c keyCol, v any) (keyVal, bool) {
	switch c.Kind {
	case cdcsnap.Int:
		switch x := v.(type) {
		case int64:
			return keyVal{I: x}, true
		case int32:
			return keyVal{I: int64(x)}, true
		case int16:
			return keyVal{I: int64(x)}, true
		}
	case cdcsnap.Text:
		if x, ok := v.(string); ok {
			return keyVal{S: x}, true
		}
	case cdcsnap.Bytes:
		switch x := v.(type) {
		case [16]byte:
			return keyVal{S: string(x[:])}, true
		case pgtype.UUID:
			return keyVal{S: string(x.Bytes[:])}, x.Valid
		case []byte:
			return keyVal{S: string(x)}, true
		}
	}
	return keyVal{}, false
}

// keyArgs are a key's values as query arguments.
func keyArgs(cols []keyCol, k rowKey) []any {
	args := make([]any, len(cols))
	for i, c := range cols {
		switch {
		case c.Kind == cdcsnap.Int:
			args[i] = k[i].I
		case c.Kind == cdcsnap.Text:
			args[i] = k[i].S
		case c.Type == "uuid":
			var u [16]byte
			copy(u[:], k[i].S)
			args[i] = u
		default:
			args[i] = []byte(k[i].S)
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
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		if c.Kind == cdcsnap.Text {
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
			c := keyCol{Name: name}
			switch typ {
			case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
				c.Kind = cdcsnap.Int
			case pgtype.TextOID, pgtype.VarcharOID:
				c.Kind = cdcsnap.Text
				usable = usable && enc == "UTF8"
			case pgtype.UUIDOID:
				c.Kind, c.Type = cdcsnap.Bytes, "uuid"
			case pgtype.ByteaOID:
				c.Kind, c.Type = cdcsnap.Bytes, "bytea"
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
