package mysqlcdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/kisflow-go/kisflow/internal/cdcsnap"
)

// On MariaDB a snapshot is read table by table, each table in its primary
// key's order, so that a run stopped during it resumes after the last row
// delivered (see package cdcsnap): the rows after it are read from a new
// consistent snapshot, whose binlog position MariaDB gives
// (binlog_snapshot_file and _position), while the binlog is still read
// from the first snapshot's position; a change of a transaction starting
// before the position of the snapshot its row was read from is not
// delivered. MySQL gives no position of a snapshot itself: there a run
// stopped during the snapshot reads it again from its first row.
//
// Keys Go orders as the server does: integers (signed or unsigned),
// varchar in utf8 or ascii compared by their bytes (CAST AS BINARY), and
// varbinary. A table whose key has another type, or without a primary
// key, is read again whole when a run stopped in it resumes.

// binlogCodec writes points as a binlog file's number (its extension) and
// an offset: 3:1234 for mysql-bin.000003 at 1234.
var binlogCodec = &cdcsnap.Codec{
	Format: func(p cdcsnap.Point) string { return fmt.Sprintf("%d:%d", uint64(p)>>32, uint32(p)) },
	Parse: func(s string) (cdcsnap.Point, error) {
		f, o, ok := strings.Cut(s, ":")
		n, err1 := strconv.ParseUint(f, 10, 32)
		off, err2 := strconv.ParseUint(o, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return 0, fmt.Errorf("binlog point %q: want FILE_NUMBER:OFFSET", s)
		}
		return cdcsnap.Point(n<<32 | off), nil
	},
}

// binlogPoint is the point of offset in binlog file, false when the
// file's name does not end with its number.
func binlogPoint(file string, offset uint32) (cdcsnap.Point, bool) {
	i := strings.LastIndexByte(file, '.')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(file[i+1:], 10, 32)
	if err != nil {
		return 0, false
	}
	return cdcsnap.Point(n<<32 | uint64(offset)), true
}

// loadKeys reads each table's primary key columns (none for a table
// without a primary key, or with a key column of another type).
func (s *source) loadKeys(ctx context.Context) (map[string][]cdcsnap.Col, error) {
	d := s.d
	keys := make(map[string][]cdcsnap.Col, len(d.tables))
	for _, t := range d.tables {
		rows, err := s.db.QueryContext(ctx, `SELECT k.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, coalesce(c.CHARACTER_SET_NAME, '')
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY'
ORDER BY k.ORDINAL_POSITION`, t.db, t.name)
		if err != nil {
			return nil, d.wrap("look up the primary key of "+t.String(), err)
		}
		var cols []cdcsnap.Col
		usable := true
		for rows.Next() {
			var name, dt, ct, cs string
			if err := rows.Scan(&name, &dt, &ct, &cs); err != nil {
				rows.Close()
				return nil, d.wrap("look up the primary key of "+t.String(), err)
			}
			c := cdcsnap.Col{Name: name, Type: strings.ToLower(dt)}
			switch c.Type {
			case "tinyint", "smallint", "mediumint", "int", "bigint":
				c.Kind = cdcsnap.Int
				if strings.Contains(strings.ToLower(ct), "unsigned") {
					c.Kind = cdcsnap.Uint
				}
			case "varchar":
				c.Kind = cdcsnap.Text
				switch strings.ToLower(cs) {
				case "utf8mb4", "utf8mb3", "utf8", "ascii":
				default:
					usable = false // the bytes compared are not those Go reads
				}
			case "varbinary":
				c.Kind = cdcsnap.Bytes
			default:
				usable = false
			}
			cols = append(cols, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, d.wrap("look up the primary key of "+t.String(), err)
		}
		if !usable {
			cols = nil
		}
		keys[t.String()] = cols
	}
	return keys, nil
}

// keyOf is the key of row (a map of column to value, from the snapshot or
// the binlog), false when a column is missing or of an unexpected type.
func keyOf(cols []cdcsnap.Col, row map[string]any) (cdcsnap.Key, bool) {
	return cdcsnap.AppendKey(make(cdcsnap.Key, 0, len(cols)), cols, row, keyValue)
}

// keyValue is a value of column c (as the driver or the binlog gives it)
// as a key value.
func keyValue(c cdcsnap.Col, v any) (cdcsnap.Val, bool) {
	switch c.Kind {
	case cdcsnap.Int:
		switch x := v.(type) {
		case int64:
			return cdcsnap.Val{I: x}, true
		case int32:
			return cdcsnap.Val{I: int64(x)}, true
		case int16:
			return cdcsnap.Val{I: int64(x)}, true
		case int8:
			return cdcsnap.Val{I: int64(x)}, true
		case []byte:
			n, err := strconv.ParseInt(string(x), 10, 64)
			return cdcsnap.Val{I: n}, err == nil
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			return cdcsnap.Val{I: n}, err == nil
		}
	case cdcsnap.Uint:
		switch x := v.(type) {
		case uint64:
			return cdcsnap.Val{U: x}, true
		case uint32:
			return cdcsnap.Val{U: uint64(x)}, true
		case uint16:
			return cdcsnap.Val{U: uint64(x)}, true
		case uint8:
			return cdcsnap.Val{U: uint64(x)}, true
		case int64:
			return cdcsnap.Val{U: uint64(x)}, x >= 0
		case []byte:
			n, err := strconv.ParseUint(string(x), 10, 64)
			return cdcsnap.Val{U: n}, err == nil
		case string:
			n, err := strconv.ParseUint(x, 10, 64)
			return cdcsnap.Val{U: n}, err == nil
		}
	default:
		switch x := v.(type) {
		case string:
			return cdcsnap.Val{S: x}, true
		case []byte:
			return cdcsnap.Val{S: string(x)}, true
		}
	}
	return cdcsnap.Val{}, false
}

// snapshotQuery is the query reading table t in its key's order, after
// the key after (all of it when after is nil); a table without a usable
// key is read whole, in no order.
func snapshotQuery(t table, cols []cdcsnap.Col, after cdcsnap.Key) (string, []any) {
	q := "SELECT * FROM " + t.quoted()
	if len(cols) == 0 {
		return q, nil
	}
	names := make([]string, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		names[i] = "`" + strings.ReplaceAll(c.Name, "`", "``") + "`"
		if c.Kind == cdcsnap.Text {
			names[i] = "CAST(" + names[i] + " AS BINARY)"
		}
		params[i] = "?"
	}
	var args []any
	if after != nil {
		if len(cols) == 1 {
			q += " WHERE " + names[0] + " > ?"
		} else {
			q += " WHERE (" + strings.Join(names, ", ") + ") > (" + strings.Join(params, ", ") + ")"
		}
		args = make([]any, len(cols))
		for i, c := range cols {
			switch c.Kind {
			case cdcsnap.Int:
				args[i] = after[i].I
			case cdcsnap.Uint:
				args[i] = after[i].U
			default:
				args[i] = []byte(after[i].S)
			}
		}
	}
	return q + " ORDER BY " + strings.Join(names, ", "), args
}

// initRanges sets the key ranges of the snapshot just begun
// (beginSnapshot), from the position of the run before (prev, nil for a
// first snapshot): the rows after its last key are read from this
// snapshot, whose changes count from its binlog position. Without the
// snapshot's own position (MySQL) there are none: the snapshot is read
// again from its first row, every change counting, as before.
func (s *source) initRanges(ctx context.Context, prev *position) error {
	d := s.d
	keys, err := s.loadKeys(ctx)
	if err != nil {
		return err
	}
	s.keys = keys
	s.snapRS, s.snapAfter, s.snapKey = nil, nil, nil
	if !s.maria {
		s.log.Warn("mysql_cdc: MySQL gives no binlog position of a snapshot itself: a run stopped during the snapshot reads it again from its first row, so a sink that inserts holds its rows already written twice (MariaDB resumes it)", "connector", d.cfg.CName)
		return nil
	}
	point, ok := binlogPoint(s.snapFile, s.snapOffset)
	if !ok {
		s.log.Warn("mysql_cdc: the binlog's file names do not end with a number: a snapshot stopped in the middle is read again from its first row", "connector", d.cfg.CName, "file", s.snapFile)
		return nil
	}
	names := make([]string, len(d.tables))
	cols := make([][]cdcsnap.Col, len(d.tables))
	for i, t := range d.tables {
		names[i], cols[i] = t.String(), keys[t.String()]
		if cols[i] == nil {
			s.log.Warn("mysql_cdc: a table without a primary key the source can order by (integers, varchar in utf8 or ascii, varbinary): a run stopped during its snapshot reads it again from its first row, so a sink that inserts holds its rows already written twice", "connector", d.cfg.CName, "table", names[i])
		}
	}
	rs, t, after, n := cdcsnap.New(binlogCodec, names, cols, point), 0, []string(nil), 0
	again := func(why string) {
		s.log.Warn("mysql_cdc reads its snapshot again from the first row: "+why, "connector", d.cfg.CName)
		rs = cdcsnap.New(binlogCodec, names, cols, 0)
	}
	switch {
	case prev == nil || (prev.rs == nil && prev.n == 0):
		// A new snapshot: nothing of one was delivered.
	case prev.rs == nil:
		again("the position " + prev.String() + " (of an earlier version) does not say where it stopped")
	case !cdcsnap.SameTables(prev.rs.Tables(), d.tables):
		again("the connector's tables are no longer the ones of its position")
	default:
		b, ok := prev.rs.Bind(keys)
		if ok {
			var nr *cdcsnap.Ranges
			if nr, after, ok = b.Resumed(prev.t, prev.k, point); ok {
				rs, t, n = nr, prev.t, prev.n
			}
		}
		if !ok {
			again("a key of its position no longer reads as the table's key")
		}
	}
	if after != nil && t < len(d.tables) {
		if s.snapAfter, err = cdcsnap.Decode(rs.Cols(t), after); err != nil {
			return err
		}
	}
	s.snapRS, s.snapTable, s.snapKey, s.snapN = rs, t, after, n
	s.at.rs, s.at.t, s.at.k, s.at.n = rs, t, after, n
	if after != nil || t > 0 {
		s.log.Info("mysql_cdc resumes its snapshot after the last row delivered", "connector", d.cfg.CName, "table", names[min(t, len(names)-1)], "after", strings.Join(after, ","), "snapshot_position", fmt.Sprintf("%s:%d", s.snapFile, s.snapOffset))
	}
	return nil
}

// ranged decides, while the stream is within a resumed snapshot's ranges,
// whether a change of table's row is delivered (see Ranges.Delivered):
// not when its transaction starts before the point from which the row's
// changes count. Without the transaction's point every change counts.
func (s *source) ranged(table, op string, row map[string]any) (string, bool) {
	if !s.txPointOK {
		return op, true
	}
	return s.ranges.Delivered(table, op, row, s.txPoint, keyValue)
}
