package sql

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/stream"
)

// Resumable reports that a poller resumes from positions the runtime
// stores (the last value of poll_column read).
func (d *DB) Resumable() bool { return true }

// OpenSource polls the table for rows whose poll_column is greater than the
// last one read, in that column's order. The position is the last value;
// the runtime stores it and resumes after it.
//
// A committed row is never skipped, although values of the column become
// visible out of order (a transaction that took id 1 commits after one
// that took id 2; now() is a transaction's start). The source reads only
// up to a horizon: the largest value of the column at some moment, once
// every transaction open at that moment has ended (PostgreSQL: the virtual
// transaction locks of the database's client sessions; SQLite serialises
// its writers, so the largest value is final at once). Values a
// transaction draws later are larger: a sequence only grows, and a
// timestamp is taken after that moment. The horizon must also be poll_lag
// old. On MySQL and MariaDB (default 5s), whose open transactions cannot be
// listed reliably, that is the whole horizon: a row is read once its value
// has been the largest for poll_lag, so no row of a transaction that
// commits within poll_lag of drawing its value is skipped. Elsewhere
// (default 0) it covers values the client computed before its transaction
// began (a timestamp taken in the application): the horizon is also that
// old. Rows that share a value of the column are read as one group, so a
// batch never ends inside a group and LIMIT loses none of them (a group
// larger than the batch is read whole).
func (d *DB) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if d.pollCol == "" {
		return nil, fmt.Errorf("connector %q: a source needs params.poll_column (an increasing column)", d.cfg.CName)
	}
	if d.table == "" {
		return nil, fmt.Errorf("connector %q: a source needs a table (key)", d.cfg.CName)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &pollSource{d: d, log: log}
	if opts.Resume != "" {
		s.last, s.hasLast = typed(d.dialect, opts.Resume), true
	}
	return s, nil
}

type pollSource struct {
	d       *DB
	log     *slog.Logger
	last    any // the last poll_column value read
	hasLast bool

	safe    any // the horizon: every row up to it is committed
	hasSafe bool
	pending *mark // a candidate horizon waiting for transactions to end
}

// mark is the largest value of the poll column at a moment, with the
// transactions that were open then: once they have all ended (and poll_lag
// has passed), no row with a value up to max can appear any more.
type mark struct {
	max    any
	empty  bool     // the table had no rows
	open   []string // the open transactions, as openTransactions names them
	at     time.Time
	warned bool
}

// typed binds a position as a number or a time when it is one, so that it
// compares as such with the column in every dialect (SQLite compares the
// text it stores).
func typed(d checkpoint.Dialect, s string) any {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	if d != checkpoint.SQLite {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return s
}

// positionOf is the text of a column value stored as a position.
func positionOf(v any) string {
	switch x := v.(type) {
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func (s *pollSource) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	for {
		msgs, err := s.poll(ctx, max)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		t := time.NewTimer(d.pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// query runs q; a table that does not exist yet (and that the first write
// creates) reads as empty: nil rows and no error.
func (d *DB) query(ctx context.Context, q string, args ...any) (*stdsql.Rows, error) {
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil && ctx.Err() == nil && d.create {
		// A writer may create the table between the failed query and this
		// check: then the query runs again.
		exists, xerr := d.tableExists(ctx)
		if xerr == nil && !exists {
			return nil, nil
		}
		if xerr == nil {
			rows, err = d.db.QueryContext(ctx, q, args...)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("connector %q: poll %s: %w", d.cfg.CName, d.table, err)
	}
	return rows, nil
}

// advance moves the horizon: a pending mark whose transactions have all
// ended becomes the horizon, and a new mark is taken.
func (s *pollSource) advance(ctx context.Context) error {
	d := s.d
	if p := s.pending; p != nil {
		if time.Since(p.at) < d.pollLag {
			return nil
		}
		if len(p.open) > 0 {
			open, err := d.openTransactions(ctx)
			if err != nil {
				return err
			}
			p.open = slices.DeleteFunc(p.open, func(t string) bool { return !slices.Contains(open, t) })
			if len(p.open) > 0 {
				if wait := time.Since(p.at); !p.warned && wait > max(10*d.pollEvery, 5*time.Second) {
					p.warned = true
					s.log.Warn("sql source waits for open transactions before reading further",
						"connector", d.cfg.CName, "table", d.table, "transactions", strings.Join(p.open, " "), "waited", wait.Round(time.Second))
				}
				return nil
			}
		}
		if !p.empty {
			s.safe, s.hasSafe = p.max, true
		}
		s.pending = nil
	}
	// The largest value first, then the open transactions: a transaction
	// that began after the second query draws a larger value than the
	// first query saw.
	m := &mark{at: time.Now()}
	rows, err := d.query(ctx, fmt.Sprintf("SELECT MAX(%s) FROM %s", d.quote(d.pollCol), d.quote(d.table)))
	if err != nil {
		return err
	}
	if rows == nil {
		return nil // no table yet
	}
	var v any
	if rows.Next() {
		err = rows.Scan(&v)
	}
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		return fmt.Errorf("connector %q: poll %s: %w", d.cfg.CName, d.table, err)
	}
	if b, ok := v.([]byte); ok {
		v = string(b)
	}
	m.max, m.empty = v, v == nil
	if m.open, err = d.openTransactions(ctx); err != nil {
		return err
	}
	if len(m.open) == 0 && d.pollLag == 0 {
		if !m.empty {
			s.safe, s.hasSafe = m.max, true
		}
		return nil
	}
	s.pending = m
	return nil
}

// openTransactions names the transactions open in the database other than
// the caller's: PostgreSQL's only. SQLite's writers take turns; MySQL's
// horizon is poll_lag alone (information_schema.innodb_trx answers from a
// cache that is refreshed only once nobody has read it for 100 ms, so
// sources polling the server often enough see it stale for ever).
func (d *DB) openTransactions(ctx context.Context) ([]string, error) {
	if d.dialect != checkpoint.Postgres {
		return nil, nil
	}
	// Every transaction, with or without a transaction ID yet, holds the
	// lock on its own virtual transaction ID until it ends.
	const q = `SELECT l.virtualxid || ' (pid ' || l.pid || ')' FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()
AND a.datname = current_database() AND a.backend_type = 'client backend'`
	rows, err := d.db.QueryContext(ctx, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("connector %q: list open transactions: %w", d.cfg.CName, err)
	}
	defer rows.Close()
	var open []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("connector %q: list open transactions: %w", d.cfg.CName, err)
		}
		open = append(open, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("connector %q: list open transactions: %w", d.cfg.CName, err)
	}
	return open, nil
}

func (s *pollSource) poll(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	if err := s.advance(ctx); err != nil {
		return nil, err
	}
	if !s.hasSafe || max < 1 {
		return nil, nil
	}
	col := d.quote(d.pollCol)
	where := fmt.Sprintf(" WHERE %s <= %s", col, d.bind(1))
	args := []any{s.safe}
	if s.hasLast {
		where += fmt.Sprintf(" AND %s > %s", col, d.bind(2))
		args = append(args, s.last)
	}
	out, err := s.rows(ctx, fmt.Sprintf("SELECT * FROM %s%s ORDER BY %s LIMIT %d", d.quote(d.table), where, col, max), args...)
	if err != nil || len(out) == 0 {
		return nil, err
	}
	last, ok := out[len(out)-1][d.pollCol]
	if !ok {
		return nil, fmt.Errorf("connector %q: poll_column %q is not a column of %s", d.cfg.CName, d.pollCol, d.table)
	}
	if len(out) == max {
		// The last value's group may go on past LIMIT: end the batch
		// before it, or, when the batch is that one group, read it whole.
		first := slices.IndexFunc(out, func(m map[string]any) bool { return sameValue(m[d.pollCol], last) })
		if first > 0 {
			out = out[:first]
			last = out[first-1][d.pollCol]
		} else {
			q := fmt.Sprintf("SELECT * FROM %s WHERE %s = %s", d.quote(d.table), col, d.bind(1))
			if out, err = s.rows(ctx, q, last); err != nil {
				return nil, err
			}
		}
	}
	msgs := make([]*stream.Message, len(out))
	slab := make([]stream.Message, len(out))
	for i, m := range out {
		slab[i].Payload = m
		msgs[i] = &slab[i]
	}
	s.last, s.hasLast = last, true
	msgs[len(msgs)-1].Position = positionOf(last)
	return msgs, nil
}

func (s *pollSource) rows(ctx context.Context, q string, args ...any) ([]map[string]any, error) {
	rows, err := s.d.query(ctx, q, args...)
	if err != nil || rows == nil {
		return nil, err
	}
	defer rows.Close()
	out, err := scanMaps(rows)
	if err != nil {
		return nil, fmt.Errorf("connector %q: poll %s: %w", s.d.cfg.CName, s.d.table, err)
	}
	return out, nil
}

// sameValue reports whether two values of one column are equal.
func sameValue(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return a == b
}

func (d *DB) tableExists(ctx context.Context) (bool, error) {
	tx, err := d.db.BeginTx(ctx, &stdsql.TxOptions{ReadOnly: d.dialect != checkpoint.SQLite})
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }() // read only
	cols, err := d.tableColumns(ctx, tx)
	return len(cols) > 0, err
}

// scanMaps reads every row as a map of column to value.
func scanMaps(rows *stdsql.Rows) ([]map[string]any, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]any, len(cols))
		for i, c := range cols {
			if b, ok := vals[i].([]byte); ok {
				m[c] = string(b)
			} else {
				m[c] = vals[i]
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Ack does nothing: the runtime stores the position.
func (s *pollSource) Ack(context.Context, []*stream.Message) error { return nil }

// Close does nothing; the connector keeps the database open.
func (s *pollSource) Close(context.Context) error { return nil }
