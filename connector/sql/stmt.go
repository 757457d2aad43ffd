package sql

import (
	"context"
	stdsql "database/sql"
	"errors"
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kisflow-go/kisflow/checkpoint"
)

// The sinks' writes run a few statements again and again: the INSERT (or
// upsert) of n rows of a set of columns, the DELETE of n keys. Their text
// is built once, and each is prepared once on the database and run in
// every transaction after (tx.StmtContext finds it prepared on the
// connection): SQLite then no longer parses a statement of hundreds of
// rows at each batch, MySQL no longer prepares and closes one per Exec.
// A batch is cut into chunks of a few sizes (see chunks) so that a few
// statements serve every batch size.
//
// A statement is prepared after the transaction that first ran it, not
// within it: SQLite's pool has one connection, which the transaction
// holds, and preparing on the pool would wait for it for ever.

// maxStmts bounds the statements kept prepared per connector; the oldest
// is closed when another is prepared.
const maxStmts = 64

// stmtKey names a statement: its kind, columns, key columns and rows.
type stmtKey struct {
	kind      byte // 'i' insert or upsert, 'd' delete, 'u' PostgreSQL insert from arrays, 'x' PostgreSQL delete by arrays
	cols, key string
	n         int
}

type cachedStmt struct {
	key stmtKey
	q   string
	st  *stdsql.Stmt // nil until prepared
}

// stmtCache is the statements of one connector. It is safe for
// concurrent use.
type stmtCache struct {
	mu    sync.Mutex
	m     map[stmtKey]*cachedStmt
	order []stmtKey // prepared ones, oldest first
	want  []*cachedStmt
}

// get returns the statement of k, its text built by build on first use,
// and the prepared statement when there is one; otherwise the statement
// is prepared at the next call of prepare.
func (c *stmtCache) get(k stmtKey, build func() string) (string, *stdsql.Stmt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.m[k]
	if s == nil {
		if len(c.m) >= 4*maxStmts { // texts never prepared: statements the database refused
			for k, o := range c.m {
				if o.st == nil {
					delete(c.m, k)
				}
			}
		}
		if c.m == nil {
			c.m = map[stmtKey]*cachedStmt{}
		}
		s = &cachedStmt{key: k, q: build()}
		c.m[k] = s
	}
	if s.st == nil && len(c.want) < maxStmts && !containsStmt(c.want, s) {
		c.want = append(c.want, s)
	}
	return s.q, s.st
}

func containsStmt(list []*cachedStmt, s *cachedStmt) bool {
	for _, o := range list {
		if o == s {
			return true
		}
	}
	return false
}

// prepare prepares on db the statements run unprepared since the last
// call. It must be called outside any transaction of the caller. A
// statement the database does not prepare keeps running unprepared: that
// is only slower.
func (c *stmtCache) prepare(ctx context.Context, db *stdsql.DB) {
	c.mu.Lock()
	want := c.want
	c.want = nil
	c.mu.Unlock()
	for _, s := range want {
		st, err := db.PrepareContext(ctx, s.q)
		if err != nil {
			continue
		}
		var old *stdsql.Stmt
		c.mu.Lock()
		if c.m[s.key] != s || s.st != nil { // forgotten meanwhile, or prepared twice
			c.mu.Unlock()
			st.Close()
			continue
		}
		s.st = st
		c.order = append(c.order, s.key)
		if len(c.order) > maxStmts {
			o := c.m[c.order[0]]
			delete(c.m, c.order[0])
			c.order = c.order[1:]
			old = o.st
		}
		c.mu.Unlock()
		if old != nil {
			old.Close() // a transaction using it keeps it until it ends
		}
	}
}

// close closes the prepared statements.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.m {
		if s.st != nil {
			s.st.Close()
		}
	}
	c.m, c.order, c.want = nil, nil, nil
}

// exec runs the statement of k (built by build) in tx, prepared when it
// has been.
func (d *DB) exec(ctx context.Context, tx *stdsql.Tx, k stmtKey, build func() string, args []any) error {
	q, st := d.stmts.get(k, build)
	var err error
	if st != nil {
		_, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	} else {
		_, err = tx.ExecContext(ctx, q, args...)
	}
	return err
}

// chunks calls fn with consecutive chunks of n rows: as many of per rows
// (a power of two) as fit, then the rest by powers of two, largest first.
// A batch of any size takes at most one statement of each size.
func chunks(n, per int, fn func(start, size int) error) error {
	start := 0
	for ; n-start >= per; start += per {
		if err := fn(start, per); err != nil {
			return err
		}
	}
	for rest := n - start; rest > 0; {
		size := 1 << (bits.Len(uint(rest)) - 1)
		if err := fn(start, size); err != nil {
			return err
		}
		start += size
		rest -= size
	}
	return nil
}

// perChunk is the rows of one statement of cols columns: the largest
// power of two up to 512 that keeps its bound values under maxArgs.
func perChunk(cols int) int {
	p := max(1, min(512, maxArgs/max(1, cols)))
	return 1 << (bits.Len(uint(p)) - 1)
}

// writeRows inserts (upserts on key when key is not empty) the rows of
// args, each len(cols) values in the order of cols.
func (d *DB) writeRows(ctx context.Context, tx *stdsql.Tx, cols, key []string, args []any) error {
	n := len(args) / len(cols)
	if n == 0 {
		return nil
	}
	if d.dialect == checkpoint.Postgres && n > 1 {
		types, err := d.pgArrayTypes(ctx, tx, cols)
		if err != nil {
			return err
		}
		if types != nil {
			err := d.exec(ctx, tx, stmtKey{kind: 'u', cols: strings.Join(cols, ",") + "|" + strings.Join(types, ","), key: strings.Join(key, ",")},
				func() string { return d.insertFromArrays(cols, key, types) }, columnArrays(args, len(cols)))
			d.typesChanged(err)
			if !encodeError(err) {
				return err
			}
			// pgx could not put a value in the column's array type
			// (nothing was sent): the rows go as one value each below,
			// where pgx encodes each value for its column.
		}
	}
	sig, ksig := strings.Join(cols, ","), strings.Join(key, ",")
	w := len(cols)
	return chunks(n, perChunk(w), func(start, size int) error {
		return d.exec(ctx, tx, stmtKey{kind: 'i', cols: sig, key: ksig, n: size},
			func() string { return d.insertInto(cols, size, key) }, args[start*w:(start+size)*w])
	})
}

// deleteRows deletes the rows of keys, each a value per column of key.
func (d *DB) deleteRows(ctx context.Context, tx *stdsql.Tx, key []string, keys [][]any) error {
	if len(keys) == 0 {
		return nil
	}
	ksig := strings.Join(key, ",")
	w := len(key)
	args := make([]any, 0, len(keys)*w)
	for _, k := range keys {
		args = append(args, k...)
	}
	if d.dialect == checkpoint.Postgres && len(keys) > 1 {
		types, err := d.pgArrayTypes(ctx, tx, key)
		if err != nil {
			return err
		}
		if types != nil {
			err := d.exec(ctx, tx, stmtKey{kind: 'x', key: ksig + "|" + strings.Join(types, ",")},
				func() string { return d.deleteByArrays(key, types) }, columnArrays(args, w))
			d.typesChanged(err)
			if !encodeError(err) {
				return err
			}
		}
	}
	return chunks(len(keys), perChunk(w), func(start, size int) error {
		return d.exec(ctx, tx, stmtKey{kind: 'd', key: ksig, n: size},
			func() string { return d.deleteWhere(key, size) }, args[start*w:(start+size)*w])
	})
}

// deleteWhere is the DELETE of n keys.
func (d *DB) deleteWhere(key []string, n int) string {
	var b strings.Builder
	b.WriteString("DELETE FROM " + d.quote(d.table) + " WHERE ")
	k := 0
	if len(key) == 1 {
		b.WriteString(d.quote(key[0]) + " IN (")
		d.binds(&b, 0, n)
		b.WriteByte(')')
		return b.String()
	}
	for i := range n {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteByte('(')
		for j, c := range key {
			if j > 0 {
				b.WriteString(" AND ")
			}
			k++
			b.WriteString(d.quote(c) + " = " + d.bind(k))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// columnArrays turns row-major args of w columns into one array per
// column: a slice of the values' type when they all have the same common
// one ([]int64, []string, ...), which pgx encodes without looking at each
// value's type, else []any.
func columnArrays(args []any, w int) []any {
	n := len(args) / w
	out := make([]any, w)
	for j := range w {
		out[j] = columnOf(args, w, j, n)
	}
	return out
}

// columnOf is column j of n rows of w values.
func columnOf(args []any, w, j, n int) any {
	var col any
	var ok bool
	switch args[j].(type) {
	case int64:
		col, ok = typedColumn[int64](args, w, j, n)
	case string:
		col, ok = typedColumn[string](args, w, j, n)
	case time.Time:
		col, ok = typedColumn[time.Time](args, w, j, n)
	case float64:
		col, ok = typedColumn[float64](args, w, j, n)
	case int32:
		col, ok = typedColumn[int32](args, w, j, n)
	case bool:
		col, ok = typedColumn[bool](args, w, j, n)
	}
	if ok {
		return col
	}
	vals := make([]any, n)
	for i := range n {
		vals[i] = args[i*w+j]
	}
	return vals
}

// typedColumn is column j as a []T, or false when a value is not a T (a
// NULL among them, say).
func typedColumn[T any](args []any, w, j, n int) ([]T, bool) {
	col := make([]T, n)
	for i := range n {
		v, ok := args[i*w+j].(T)
		if !ok {
			return nil, false
		}
		col[i] = v
	}
	return col, true
}

// encodeError reports whether err is pgx's failure to encode an argument
// before sending anything.
func encodeError(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	return !errors.As(err, &pe) && strings.Contains(err.Error(), "failed to encode args[")
}
