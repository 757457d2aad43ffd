package sql

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	gojson "github.com/goccy/go-json"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// ownTable returns the changes of the captured table the connector
// applies: with source_table, the changes of other tables (by _table) are
// left out; without it, the first table seen is the one, and a change of
// another ends the run before anything of its batch is written (two
// tables' rows would be mixed in one). A change without _table is kept.
func (d *DB) ownTable(maps []map[string]any) ([]map[string]any, error) {
	d.tableMu.Lock()
	defer d.tableMu.Unlock()
	want, seen := d.srcTable, d.seenTable
	if want == "" {
		want = seen
	}
	out := maps[:0:0]
	for i, m := range maps {
		t, ok := m["_table"].(string)
		switch {
		case !ok || t == "":
		case want == "":
			want = t
		case sameTable(t, want):
		case d.srcTable != "":
			continue
		default:
			return nil, stream.Fatal(fmt.Errorf("connector %q (mode apply, table %s): row %d is a change of table %s (_op %v), the rows before of table %s: the changes of two tables cannot be applied to one; give each table its own flow and sink, or set params.source_table on this sink to apply only one table's changes", d.cfg.CName, d.table, i, t, m["_op"], want))
		}
		out = append(out, m)
	}
	if d.srcTable == "" {
		d.seenTable = want
	}
	if len(out) == len(maps) {
		return maps, nil
	}
	return out, nil
}

// sameTable reports whether two names of a captured table are the same
// table: schema.table, or table alone (any schema).
func sameTable(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	if strings.Contains(a, ".") == strings.Contains(b, ".") {
		return false
	}
	return strings.EqualFold(a[strings.LastIndexByte(a, '.')+1:], b[strings.LastIndexByte(b, '.')+1:])
}

// change is the last change of one key within a batch: an upsert of row,
// or a delete. fresh: the key's first change in the batch inserted it, so
// that the replica has no row of it before the batch (unless a change is
// applied again, after a crash say).
type change struct {
	del, fresh bool
	key        []any
	row        map[string]any
}

// applyRows applies rows as changes (mode apply): by the table's key, a
// row whose _op is delete deletes, truncate empties the table, and any
// other row upserts the columns it has. Fields starting with _ are not
// columns. The changes of one batch are folded per key, in order, into
// the last one of each key (a full image, or a delete): that is the
// batch's effect, written as one DELETE and one upsert per set of columns.
func (d *DB) applyRows(ctx context.Context, tx *stdsql.Tx, rows []any) error {
	maps := make([]map[string]any, len(rows))
	for i, r := range rows {
		m, err := fields.Of(r)
		if err != nil {
			return stream.Permanent(fmt.Errorf("connector %q: row %d: %w", d.cfg.CName, i, err))
		}
		maps[i] = m
	}
	maps, err := d.ownTable(maps)
	if err != nil {
		return err
	}
	if len(maps) == 0 {
		return nil
	}
	cols, key, err := d.applyColumns(ctx, tx, maps)
	if err != nil {
		return err
	}
	keyFields := d.fieldsOf(key)
	truncate := false
	// Each key's last change, in the order of the keys' first changes.
	at := make(map[any]int, len(maps))
	changes := make([]change, 0, len(maps))
	set := func(c change) error {
		id, err := keyID(c.key)
		if err != nil {
			return stream.Permanent(fmt.Errorf("connector %q: key %v: %w", d.cfg.CName, c.key, err))
		}
		if i, ok := at[id]; ok {
			c.fresh = changes[i].fresh
			changes[i] = c
			return nil
		}
		at[id] = len(changes)
		changes = append(changes, c)
		return nil
	}
	var keys []any // the keys' values, one allocation for the batch's
	keyOf := func(i int, m map[string]any) ([]any, error) {
		if len(keys) < len(key) {
			keys = make([]any, len(key)*(len(maps)-i+1))
		}
		k := keys[:len(key):len(key)]
		keys = keys[len(key):]
		for j, f := range keyFields {
			v, ok := m[f]
			if !ok || v == nil {
				return nil, stream.Permanent(fmt.Errorf("connector %q: row %d has no value for the key column %s", d.cfg.CName, i, key[j]))
			}
			k[j] = sqlValue(v)
		}
		return k, nil
	}
	for i, m := range maps {
		op, _ := m["_op"].(string)
		switch op {
		case "truncate":
			truncate, at, changes = true, map[any]int{}, changes[:0]
			continue
		case "delete":
			k, err := keyOf(i, m)
			if err != nil {
				return err
			}
			if err := set(change{del: true, key: k}); err != nil {
				return err
			}
			continue
		case "", "insert", "update", "upsert":
		default:
			return stream.Permanent(fmt.Errorf("connector %q: row %d: _op %q is none of insert, update, delete, truncate", d.cfg.CName, i, op))
		}
		k, err := keyOf(i, m)
		if err != nil {
			return err
		}
		// An update that changed the key deletes the old one.
		if before, ok := m["_before"].(map[string]any); ok && op == "update" {
			if old, err := keyOf(i, before); err == nil {
				if ok, _ := sameKey(old, k); !ok {
					if err := set(change{del: true, key: old}); err != nil {
						return err
					}
				}
			}
		}
		if err := set(change{key: k, row: m, fresh: op == "insert"}); err != nil {
			return err
		}
	}
	if truncate {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+d.quote(d.table)); err != nil {
			return fmt.Errorf("connector %q: empty %s: %w", d.cfg.CName, d.table, err)
		}
	}
	dels, groups, err := d.applyGroups(cols, changes)
	if err != nil {
		return err
	}
	if err := d.deleteRows(ctx, tx, key, dels); err != nil {
		return refused(fmt.Errorf("connector %q: delete from %s: %w", d.cfg.CName, d.table, err))
	}
	plain := true // one savepoint a transaction (see insertFresh): the first group of fresh keys
	for _, g := range groups {
		write := d.writeRows
		if g.fresh && plain {
			write, plain = d.insertFresh, false
		}
		if err := write(ctx, tx, g.have, key, g.args); err != nil {
			return refused(fmt.Errorf("connector %q: apply to %s: %w", d.cfg.CName, d.table, err))
		}
	}
	return nil
}

// upsertGroup is the upserts of a batch that have the same columns: have,
// and their values, row after row in the order of have; fresh: of keys
// the batch inserted.
type upsertGroup struct {
	have  []string
	args  []any
	fresh bool
}

// upsertOnlyBatches is how many writes of a batch's fresh keys upsert
// them after a plain INSERT of fresh keys met a row already there (see
// insertFresh).
const upsertOnlyBatches = 16

// insertFresh writes the upserts of keys the batch inserted. PostgreSQL
// checks a plain INSERT's keys once, as it adds them to the index, where
// INSERT ... ON CONFLICT looks each up before, inserts speculatively and
// confirms (a third more of the server's time for 100,000 CDC changes,
// the inserts' part nearly half): on PostgreSQL, they are inserted plainly
// after a savepoint. A key there already (a change applied again after a
// crash, a snapshot read into a replica that has its rows) makes the
// INSERT fail: the transaction goes back to the savepoint and upserts the
// rows, as it does for the next writes of fresh keys too
// (upsertOnlyBatches), which are likely to meet such keys again.
// Elsewhere the rows are upserted. A transaction takes one such
// savepoint at most (each is a subtransaction, and many in one
// transaction slow the server's other sessions): a batch's other groups
// of fresh keys, rows with other columns, are upserted.
func (d *DB) insertFresh(ctx context.Context, tx *stdsql.Tx, cols, key []string, args []any) error {
	d.mu.Lock()
	upsert := d.dialect != checkpoint.Postgres || d.upsertOnly > 0
	if d.upsertOnly > 0 {
		d.upsertOnly--
	}
	checked, unique := d.keyChecked, d.keyUnique
	d.mu.Unlock()
	if !upsert && !checked {
		var err error
		if unique, err = d.uniqueKey(ctx, tx, key); err != nil {
			return err
		}
		d.mu.Lock()
		d.keyChecked, d.keyUnique = true, unique
		d.mu.Unlock()
	}
	if upsert || !unique {
		return d.writeRows(ctx, tx, cols, key, args)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT kisflow_fresh"); err != nil {
		return err
	}
	err := d.writeRows(ctx, tx, cols, nil, args)
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return err
	}
	if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT kisflow_fresh"); err != nil {
		return err
	}
	d.mu.Lock()
	d.upsertOnly = upsertOnlyBatches
	d.mu.Unlock()
	return d.writeRows(ctx, tx, cols, key, args)
}

// applyGroups splits a batch's folded changes into the keys to delete and
// the upserts by the columns they have and whether their keys are fresh
// (most often one group: every column, of keys all fresh or all not).
// Each value is looked up in its row once.
func (d *DB) applyGroups(cols []string, changes []change) ([][]any, []*upsertGroup, error) {
	w := len(cols)
	colFields := d.fieldsOf(cols)
	var dels [][]any
	ups := 0
	for _, c := range changes {
		if c.del {
			ups--
		}
	}
	ups += len(changes)
	// vals holds each upsert's value of every column (nil when absent),
	// sigs which it has, '+' or '-' a column, then 'f' for a fresh key or
	// 'o'.
	vals := make([]any, 0, ups*w)
	sigs := make([]byte, 0, ups*(w+1))
	full, fresh := true, 0 // every upsert has every column; the fresh keys
	for _, c := range changes {
		if c.del {
			dels = append(dels, c.key)
			continue
		}
		have := 0
		for _, f := range colFields {
			v, ok := c.row[f]
			if ok {
				have++
				sigs = append(sigs, '+')
			} else {
				sigs = append(sigs, '-')
			}
			vals = append(vals, sqlValue(v))
		}
		if have == 0 {
			return nil, nil, stream.Permanent(fmt.Errorf("connector %q: a row of key %v has none of the columns of %s", d.cfg.CName, c.key, d.table))
		}
		full = full && have == w
		if c.fresh {
			fresh++
			sigs = append(sigs, 'f')
		} else {
			sigs = append(sigs, 'o')
		}
	}
	if ups == 0 {
		return dels, nil, nil
	}
	if full && (fresh == 0 || fresh == ups) {
		return dels, []*upsertGroup{{have: cols, args: vals, fresh: fresh > 0}}, nil
	}
	byCols := map[string]*upsertGroup{}
	var groups []*upsertGroup
	for u := range ups {
		sig := sigs[u*(w+1) : (u+1)*(w+1)]
		g := byCols[string(sig)]
		if g == nil {
			g = &upsertGroup{fresh: sig[w] == 'f'}
			for j, col := range cols {
				if sig[j] == '+' {
					g.have = append(g.have, col)
				}
			}
			byCols[string(sig)] = g
			groups = append(groups, g)
		}
		for j, v := range vals[u*w : (u+1)*w] {
			if sig[j] == '+' {
				g.args = append(g.args, v)
			}
		}
	}
	return dels, groups, nil
}

// fieldsOf is the row field each column takes its value from.
func (d *DB) fieldsOf(cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = d.field(c)
	}
	return out
}

func sameKey(a, b []any) (bool, error) {
	ka, err := keyID(a)
	if err != nil {
		return false, err
	}
	kb, err := keyID(b)
	return ka == kb, err
}

// jsonKey is the identity of a key keyID does not tell by its value: its
// JSON text, a type of its own so that it never equals a string key.
type jsonKey string

// keyID is a key's identity within a batch, a comparable value: a
// one-column key of a common type as itself (whole numbers of every size
// as int64, a JSON row's whole float64 too), others as their JSON text.
func keyID(key []any) (any, error) {
	if len(key) == 1 {
		switch v := key[0].(type) {
		case int64, string:
			return v, nil
		case int32:
			return int64(v), nil
		case int:
			return int64(v), nil
		case float64: // a JSON row's number: as the same whole number would be
			if v == float64(int64(v)) {
				return int64(v), nil
			}
		}
	}
	b, err := gojson.Marshal(key)
	return jsonKey(b), err
}

// applyColumns fixes, on first use, the columns and the key of mode
// apply: the configured columns, else the table's (created, with create,
// from the first upserted row's fields that do not start with _); the key
// is upsert_key, else the table's primary key.
func (d *DB) applyColumns(ctx context.Context, tx *stdsql.Tx, maps []map[string]any) ([]string, []string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.columns != nil && len(d.upsertKey) > 0 {
		return d.columns, d.upsertKey, nil
	}
	cols := d.columns
	if cols == nil {
		have, err := d.tableColumns(ctx, tx)
		if err != nil {
			return nil, nil, err
		}
		cols = have
	}
	if len(cols) == 0 || d.create {
		var first map[string]any
		for _, m := range maps {
			if op, _ := m["_op"].(string); op != "delete" && op != "truncate" {
				first = m
				break
			}
		}
		if len(cols) == 0 {
			if !d.create {
				return nil, nil, stream.Fatal(fmt.Errorf("connector %q: table %s does not exist (create it with a primary key, or set params.create: \"true\" and upsert_key)", d.cfg.CName, d.table))
			}
			if first == nil {
				return nil, nil, stream.Permanent(fmt.Errorf("connector %q: table %s does not exist yet and no row of the batch has the columns to create it with", d.cfg.CName, d.table))
			}
			if len(d.upsertKey) == 0 {
				return nil, nil, stream.Fatal(fmt.Errorf("connector %q: mode apply creates table %s with its key: set params.upsert_key", d.cfg.CName, d.table))
			}
			for k := range first {
				if validIdent(k) && !strings.HasPrefix(k, "_") {
					cols = append(cols, k)
				}
			}
			slices.Sort(cols)
		}
		if first != nil {
			if err := d.createTable(ctx, tx, cols, first); err != nil {
				return nil, nil, err
			}
		}
	}
	key := d.upsertKey
	if len(key) == 0 {
		pk, err := d.primaryKey(ctx, tx)
		if err != nil {
			return nil, nil, err
		}
		if len(pk) == 0 {
			return nil, nil, stream.Fatal(fmt.Errorf("connector %q: mode apply needs the key of table %s: give it a primary key, or set params.upsert_key", d.cfg.CName, d.table))
		}
		key = pk
	}
	cols = slices.DeleteFunc(slices.Clone(cols), func(c string) bool { return strings.HasPrefix(c, "_") })
	d.columns, d.upsertKey = cols, key
	return cols, key, nil
}

// uniqueKey reports whether the table (PostgreSQL) has a unique index of
// exactly the columns of key, as ON CONFLICT needs: without one, a plain
// INSERT of fresh keys would add a row applied again instead of failing,
// and the rows are upserted (which fails, naming the missing index).
func (d *DB) uniqueKey(ctx context.Context, tx *stdsql.Tx, key []string) (bool, error) {
	var ok bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index i
WHERE i.indrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1)) AND i.indisunique
AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($2::text[])
AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
WHERE a.attrelid = i.indrelid AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]))
= (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k))`, d.table, key).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("connector %q: read the unique indexes of %s: %w", d.cfg.CName, d.table, err)
	}
	return ok, nil
}

// primaryKey is the table's primary key columns, in order.
func (d *DB) primaryKey(ctx context.Context, tx *stdsql.Tx) ([]string, error) {
	var q string
	switch d.dialect {
	case checkpoint.SQLite:
		q = "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk"
	case checkpoint.MySQL:
		q = "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = DATABASE() AND table_name = ? AND constraint_name = 'PRIMARY' ORDER BY ordinal_position"
	case checkpoint.Postgres:
		q = `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1)) AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)`
	}
	key, err := queryStrings(ctx, tx, q, d.table)
	if err != nil {
		return nil, fmt.Errorf("connector %q: read the primary key of %s: %w", d.cfg.CName, d.table, err)
	}
	return key, nil
}
