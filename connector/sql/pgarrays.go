package sql

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// PostgreSQL takes a batch's rows as one array per column: one INSERT ...
// SELECT FROM unnest($1::type[], ...), whatever the number of rows, whose
// text never changes, instead of a VALUES list of thousands of parameters
// that the server parses and plans at each batch.

// pgArrayTypes returns the types of cols in the table without their
// modifiers (an explicit cast to varchar(5) would cut a longer value that
// the column refuses), for the casts of their arrays, or nil when a column's type or the table is unknown or a
// column is an array (unnest would flatten it): the rows then go as a
// VALUES list.
func (d *DB) pgArrayTypes(ctx context.Context, tx *stdsql.Tx, cols []string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pgTypes == nil {
		rows, err := tx.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, NULL), t.typcategory = 'A'
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped`, d.table)
		if err != nil {
			return nil, fmt.Errorf("connector %q: read the column types of %s: %w", d.cfg.CName, d.table, err)
		}
		defer rows.Close()
		types := map[string]string{}
		for rows.Next() {
			var name, typ string
			var array bool
			if err := rows.Scan(&name, &typ, &array); err != nil {
				return nil, fmt.Errorf("connector %q: read the column types of %s: %w", d.cfg.CName, d.table, err)
			}
			if array {
				typ = ""
			}
			types[name] = typ
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("connector %q: read the column types of %s: %w", d.cfg.CName, d.table, err)
		}
		if len(types) == 0 {
			return nil, nil // not created yet: asked again next time
		}
		d.pgTypes = types
	}
	out := make([]string, len(cols))
	for i, c := range cols {
		if out[i] = d.pgTypes[c]; out[i] == "" {
			return nil, nil
		}
	}
	return out, nil
}

// typesChanged forgets the column types when PostgreSQL refused the
// statement of arrays as such (class 42: a column's type changed since
// they were read, say): the next attempt, the runtime's retry of the
// batch's halves, reads them again.
func (d *DB) typesChanged(err error) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Code, "42") {
		d.mu.Lock()
		d.pgTypes = nil
		d.mu.Unlock()
	}
}

// unnestOf is "unnest($1::t1[], $2::t2[], ...)".
func unnestOf(types []string) string {
	var b strings.Builder
	b.WriteString("unnest(")
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d::%s[]", i+1, t)
	}
	b.WriteByte(')')
	return b.String()
}

// insertFromArrays is the INSERT (an upsert on key when key is not empty)
// of the rows of one array per column of cols.
func (d *DB) insertFromArrays(cols, key, types []string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + d.quote(d.table) + " (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.quote(c))
	}
	b.WriteString(") SELECT * FROM " + unnestOf(types))
	if len(key) > 0 {
		d.upsertClause(&b, cols, key)
	}
	return b.String()
}

// deleteByArrays is the DELETE of the keys of one array per column of
// key.
func (d *DB) deleteByArrays(key, types []string) string {
	q := make([]string, len(key))
	for i, k := range key {
		q[i] = d.quote(k)
	}
	return "DELETE FROM " + d.quote(d.table) + " WHERE (" + strings.Join(q, ", ") + ") IN (SELECT * FROM " + unnestOf(types) + ")"
}
