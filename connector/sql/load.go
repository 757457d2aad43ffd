package sql

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// maxLoadKeys is the most keys one query of a YAML Load binds: a run with
// more distinct keys takes one query per maxLoadKeys (the default batch
// size, 1000, takes one).
const maxLoadKeys = 1000

var (
	inBefore = regexp.MustCompile(`(?i)\bIN\s*\(\s*$`)
	inAfter  = regexp.MustCompile(`^\s*\)`)
)

// LoadLookup is the body of a Load function with no Go body (the
// kisflow.Loader capability). Its query is the function's load_query
// param, else the connector's: one :field placeholder, written
// IN (:field), which each run fills with the distinct values of the field
// in its rows, so a run takes one query (per 1000 keys). The query must
// return the key as a column named field (SELECT id AS user_id, ...); each
// row gets the other columns of the first result row whose key matches
// its own.
func (d *DB) LoadLookup(params map[string]string) (kisflow.Lookup, error) {
	q := params["load_query"]
	if q == "" {
		q = d.cfg.Params["load_query"]
	}
	if q == "" {
		return nil, fmt.Errorf("give it a load_query (a param of the function or of connector %q), such as SELECT id AS user_id, name FROM users WHERE id IN (:user_id)", d.cfg.CName)
	}
	l, err := parseLoadQuery(q)
	if err != nil {
		return nil, &driver.ParamError{Param: "load_query", Msg: err.Error()}
	}
	l.d = d
	return l, nil
}

// sqlLookup is a parsed load_query: before and after surround the list of
// key placeholders.
type sqlLookup struct {
	d             *DB
	field         string
	before, after string
}

// parseLoadQuery finds the query's one placeholder, :field, written
// IN (:field). Quoted text and PostgreSQL casts (x::text) are not
// placeholders.
func parseLoadQuery(q string) (*sqlLookup, error) {
	type ph struct {
		start, end int
		name       string
	}
	var found []ph
	for i := 0; i < len(q); i++ {
		switch c := q[i]; c {
		case '\'', '"', '`':
			j := strings.IndexByte(q[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("%q: unterminated %c", q, c)
			}
			i += j + 1
		case ':':
			if i+1 < len(q) && q[i+1] == ':' {
				i++ // a cast
				continue
			}
			j := i + 1
			for j < len(q) && (q[j] == '_' || q[j] >= 'a' && q[j] <= 'z' || q[j] >= 'A' && q[j] <= 'Z' || j > i+1 && q[j] >= '0' && q[j] <= '9') {
				j++
			}
			if j > i+1 {
				found = append(found, ph{i, j, q[i+1 : j]})
				i = j - 1
			}
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("%q has no :field placeholder; write the key as IN (:field)", q)
	case len(found) > 1:
		return nil, fmt.Errorf("%q has %d placeholders; a YAML load takes one key, written IN (:%s)", q, len(found), found[0].name)
	}
	p := found[0]
	before, after := q[:p.start], q[p.end:]
	if !inBefore.MatchString(before) || !inAfter.MatchString(after) {
		return nil, fmt.Errorf("%q: write the placeholder as IN (:%s), which each run fills with its rows' keys", q, p.name)
	}
	return &sqlLookup{field: p.name, before: before, after: after}, nil
}

// Key is the row's value of the placeholder's field.
func (l *sqlLookup) Key(row map[string]any) (any, error) {
	v, ok := row[l.field]
	if !ok || v == nil {
		return nil, fmt.Errorf("connector %q: load_query needs field %q, which the row lacks", l.d.cfg.CName, l.field)
	}
	return sqlValue(v), nil
}

// Fetch runs the query for keys, maxLoadKeys at a time, and returns each
// key's first result row without the key column.
func (l *sqlLookup) Fetch(ctx context.Context, keys []any) ([]map[string]any, error) {
	d := l.d
	byKey := make(map[string]map[string]any, len(keys))
	var b strings.Builder
	for start := 0; start < len(keys); start += maxLoadKeys {
		chunk := keys[start:min(start+maxLoadKeys, len(keys))]
		b.Reset()
		b.WriteString(l.before)
		for i := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(d.bind(i + 1))
		}
		b.WriteString(l.after)
		rs, err := d.db.QueryContext(ctx, b.String(), chunk...)
		if err != nil {
			return nil, classify(fmt.Errorf("connector %q: load: %w", d.cfg.CName, err))
		}
		// The key column is checked on the result's columns, not its rows:
		// a query without it is a configuration error even when it finds
		// nothing.
		if cols, err := rs.Columns(); err == nil && !slices.Contains(cols, l.field) {
			rs.Close()
			return nil, stream.Fatal(fmt.Errorf("connector %q: load_query returns no column %q to match rows by (it returns %s): name the key column so (SELECT id AS %s, ...)", d.cfg.CName, l.field, strings.Join(cols, ", "), l.field))
		}
		recs, err := scanMaps(rs)
		rs.Close()
		if err != nil {
			return nil, classify(fmt.Errorf("connector %q: load: %w", d.cfg.CName, err))
		}
		for _, r := range recs {
			k := r[l.field]
			delete(r, l.field)
			if kt := fields.KeyText(k); byKey[kt] == nil {
				byKey[kt] = r
			}
		}
	}
	out := make([]map[string]any, len(keys))
	for i, k := range keys {
		out[i] = byKey[fields.KeyText(k)]
	}
	return out, nil
}

// CheckLookup runs the query for no key (IN (NULL), which matches no
// row): a missing table or column, or a result without the key column,
// is the error a Fetch would end the job with (kisflow.LookupChecker).
func (l *sqlLookup) CheckLookup(ctx context.Context) error {
	_, err := l.Fetch(ctx, []any{nil})
	return err
}

// LoadParams lists the function params LoadLookup reads.
func (d *DB) LoadParams() []string { return []string{"load_query"} }
