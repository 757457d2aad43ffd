package sql

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/stream"
)

// OpenSource polls the table for rows whose poll_column is greater than the
// last one read, in that column's order. The position is the last value;
// the runtime stores it and resumes after it.
func (d *DB) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if d.pollCol == "" {
		return nil, fmt.Errorf("connector %q: a source needs params.poll_column (an increasing column)", d.cfg.CName)
	}
	if d.table == "" {
		return nil, fmt.Errorf("connector %q: a source needs a table (key)", d.cfg.CName)
	}
	return &pollSource{d: d, last: opts.Resume}, nil
}

type pollSource struct {
	d    *DB
	last string // the last poll_column value read, "" before the first
}

// typed binds a position as a number when it is one, so that it compares
// as a number with numeric columns of every dialect.
func typed(s string) any {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	return s
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

func (s *pollSource) poll(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	q := fmt.Sprintf("SELECT * FROM %s", d.quote(d.table))
	var args []any
	if s.last != "" {
		q += fmt.Sprintf(" WHERE %s > %s", d.quote(d.pollCol), d.bind(1))
		args = append(args, typed(s.last))
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d", d.quote(d.pollCol), max)
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil && ctx.Err() == nil && d.create {
		// The table is created by the first write: until then, empty. A
		// writer may create it between the failed query and this check:
		// then the query runs again.
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
	defer rows.Close()
	out, err := scanMaps(rows)
	if err != nil {
		return nil, fmt.Errorf("connector %q: poll %s: %w", d.cfg.CName, d.table, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	msgs := make([]*stream.Message, len(out))
	slab := make([]stream.Message, len(out))
	for i, m := range out {
		slab[i].Payload = m
		msgs[i] = &slab[i]
	}
	last, ok := out[len(out)-1][d.pollCol]
	if !ok {
		return nil, fmt.Errorf("connector %q: poll_column %q is not a column of %s", d.cfg.CName, d.pollCol, d.table)
	}
	s.last = fmt.Sprint(last)
	msgs[len(msgs)-1].Position = s.last
	return msgs, nil
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
