package checkpoint

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	kstream "github.com/kisflow-go/kisflow/stream"
)

// StateTable holds the keyed state of jobs: kisflow_state(stream, id,
// name, skey, field, value, expires_at, spart), with the primary key
// (stream, id). stream is the job's state key, name the state's name, skey
// the stream key, field the entry of a map state ("" for a value state),
// value its JSON, expires_at its expiry in Unix milliseconds (0: never)
// and spart the source partition of the entry (stream.StateChange's
// Partition; "" for none), indexed with stream so that a process loads
// the state of one partition when it is assigned it. id is a hash of name,
// skey and field, so that the key fits every dialect's index limits
// whatever the length of the keys.
const StateTable = "kisflow_state"

// statePartIndex indexes the state table by stream and partition.
const statePartIndex = StateTable + "_part"

func (d Dialect) createState() string {
	if d == MySQL {
		return "CREATE TABLE IF NOT EXISTS " + StateTable + " (stream VARCHAR(255) NOT NULL, id CHAR(32) NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value LONGTEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, spart VARCHAR(255) NOT NULL DEFAULT '', PRIMARY KEY (stream, id), INDEX " + statePartIndex + " (stream, spart))"
	}
	q := "CREATE TABLE IF NOT EXISTS " + StateTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, skey TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0, spart TEXT NOT NULL DEFAULT '', PRIMARY KEY (stream, id))"
	if d == SQLite {
		q += " WITHOUT ROWID" // one b-tree, ordered by the key every write looks up
	}
	return q
}

// EnsureState creates the state table if it does not exist, and brings a
// table made by an earlier version to the current shape, once: it adds the
// spart column (existing entries have no partition: every process loads
// them at start, and each moves to its partition when it is next
// written) and its index.
func EnsureState(ctx context.Context, db Execer, d Dialect) error {
	if err := DDL(ctx, db, d.createState()); err != nil {
		return fmt.Errorf("create %s: %w", StateTable, err)
	}
	if _, err := db.ExecContext(ctx, "SELECT spart FROM "+StateTable+" WHERE 1 = 0"); err != nil {
		q := "ALTER TABLE " + StateTable + " ADD COLUMN spart TEXT NOT NULL DEFAULT ''"
		if d == MySQL {
			q = "ALTER TABLE " + StateTable + " ADD COLUMN spart VARCHAR(255) NOT NULL DEFAULT '', ADD INDEX " + statePartIndex + " (stream, spart)"
		}
		if err := DDL(ctx, db, q); err != nil && !concurrentCreate(err) && !strings.Contains(err.Error(), "uplicate") {
			return fmt.Errorf("add spart to %s: %w", StateTable, err)
		}
	}
	if d != MySQL {
		if err := DDL(ctx, db, "CREATE INDEX IF NOT EXISTS "+statePartIndex+" ON "+StateTable+" (stream, spart)"); err != nil {
			return fmt.Errorf("index %s: %w", StateTable, err)
		}
	}
	return nil
}

// stateID is the row ID of a state entry.
func stateID(name, key, field string) string {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(field))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// statePer bounds the entries of one statement.
const statePer = 400

// stateUpsert is the statement that writes one entry, with the text
// after its VALUES list per dialect.
func (d Dialect) stateUpsert(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + StateTable + " (stream, id, name, skey, field, value, expires_at, spart) VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
	}
	switch d {
	case MySQL:
		b.WriteString(" ON DUPLICATE KEY UPDATE value = VALUES(value), expires_at = VALUES(expires_at), spart = VALUES(spart)")
	default:
		b.WriteString(" ON CONFLICT (stream, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, spart = excluded.spart")
	}
	return d.bind(b.String())
}

// Preparer is the capability of a transaction to prepare a statement
// once and run it many times (*sql.Tx has it).
type Preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// SaveState writes the state changes of stream through db (a transaction):
// an upsert per changed entry, a delete per deleted one. SQLite, in the
// process, is written one prepared statement per entry in the order of
// the table's key (see saveStateSQLite): a statement of many rows costs
// SQLite a statement journal of every page it touches, and ordered writes
// touch each page once. A server is written many rows per statement, one
// round trip each.
func SaveState(ctx context.Context, db Execer, d Dialect, stream string, changes []kstream.StateChange) error {
	var puts, dels []kstream.StateChange
	for _, c := range changes {
		if c.Deleted {
			dels = append(dels, c)
		} else {
			puts = append(puts, c)
		}
	}
	if p, ok := db.(Preparer); ok && d == SQLite {
		return saveStateSQLite(ctx, p, stream, puts, dels)
	}
	for start := 0; start < len(puts); start += statePer {
		chunk := puts[start:min(start+statePer, len(puts))]
		args := make([]any, 0, 8*len(chunk))
		for _, c := range chunk {
			args = append(args, stream, stateID(c.Name, c.Key, c.Field), c.Name, c.Key, c.Field, string(c.Value), c.ExpiresAt, c.Partition)
		}
		if _, err := db.ExecContext(ctx, d.stateUpsert(len(chunk)), args...); err != nil {
			return fmt.Errorf("save state of %q: %w", stream, err)
		}
	}
	for start := 0; start < len(dels); start += statePer {
		chunk := dels[start:min(start+statePer, len(dels))]
		var b strings.Builder
		b.WriteString("DELETE FROM " + StateTable + " WHERE stream = ? AND id IN (")
		args := make([]any, 0, len(chunk)+1)
		args = append(args, stream)
		for i, c := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			args = append(args, stateID(c.Name, c.Key, c.Field))
		}
		b.WriteString(")")
		if _, err := db.ExecContext(ctx, d.bind(b.String()), args...); err != nil {
			return fmt.Errorf("save state of %q: %w", stream, err)
		}
	}
	return nil
}

// saveStateSQLite is SaveState for SQLite: see there. An entry the table
// holds with the same partition (the common case: a key changed again)
// is updated in place, which leaves the partition index alone; the others
// are upserted.
func saveStateSQLite(ctx context.Context, db Preparer, stream string, puts, dels []kstream.StateChange) error {
	fail := func(err error) error { return fmt.Errorf("save state of %q: %w", stream, err) }
	type row struct {
		id string
		c  *kstream.StateChange
	}
	sorted := func(cs []kstream.StateChange) []row {
		rows := make([]row, len(cs))
		for i := range cs {
			rows[i] = row{stateID(cs[i].Name, cs[i].Key, cs[i].Field), &cs[i]}
		}
		slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.id, b.id) })
		return rows
	}
	if len(puts) > 0 {
		update, err := db.PrepareContext(ctx, "UPDATE "+StateTable+" SET value = ?, expires_at = ? WHERE stream = ? AND id = ? AND spart = ?")
		if err != nil {
			return fail(err)
		}
		defer update.Close()
		var upsert *sql.Stmt
		for _, r := range sorted(puts) {
			c := r.c
			res, err := update.ExecContext(ctx, string(c.Value), c.ExpiresAt, stream, r.id, c.Partition)
			if err != nil {
				return fail(err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fail(err)
			} else if n == 1 {
				continue
			}
			if upsert == nil {
				if upsert, err = db.PrepareContext(ctx, SQLite.stateUpsert(1)); err != nil {
					return fail(err)
				}
				defer upsert.Close()
			}
			if _, err := upsert.ExecContext(ctx, stream, r.id, c.Name, c.Key, c.Field, string(c.Value), c.ExpiresAt, c.Partition); err != nil {
				return fail(err)
			}
		}
	}
	if len(dels) > 0 {
		del, err := db.PrepareContext(ctx, "DELETE FROM "+StateTable+" WHERE stream = ? AND id = ?")
		if err != nil {
			return fail(err)
		}
		defer del.Close()
		for _, r := range sorted(dels) {
			if _, err := del.ExecContext(ctx, stream, r.id); err != nil {
				return fail(err)
			}
		}
	}
	return nil
}

// LoadState calls fn with every entry of stream's state that has not
// expired, after deleting those that have.
func LoadState(ctx context.Context, db interface {
	Querier
	Execer
}, d Dialect, stream string, fn func(kstream.StateChange) error) error {
	return LoadPartitionState(ctx, db, d, stream, nil, fn)
}

// LoadPartitionState is LoadState for the entries of the source
// partitions parts only ("" names the entries without a partition); nil
// parts is every entry.
func LoadPartitionState(ctx context.Context, db interface {
	Querier
	Execer
}, d Dialect, stream string, parts []string, fn func(kstream.StateChange) error) error {
	if parts != nil && len(parts) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	if _, err := db.ExecContext(ctx, d.bind("DELETE FROM "+StateTable+" WHERE stream = ? AND expires_at > 0 AND expires_at <= ?"), stream, now); err != nil {
		return fmt.Errorf("prune state of %q: %w", stream, err)
	}
	q := "SELECT name, skey, field, value, expires_at, spart FROM " + StateTable + " WHERE stream = ? AND (expires_at = 0 OR expires_at > ?)"
	args := []any{stream, now}
	if parts != nil {
		q += " AND spart IN (?" + strings.Repeat(", ?", len(parts)-1) + ")"
		for _, p := range parts {
			args = append(args, p)
		}
	}
	rows, err := db.QueryContext(ctx, d.bind(q), args...)
	if err != nil {
		return fmt.Errorf("load state of %q: %w", stream, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c kstream.StateChange
		if err := rows.Scan(&c.Name, &c.Key, &c.Field, &c.Value, &c.ExpiresAt, &c.Partition); err != nil {
			return fmt.Errorf("load state of %q: %w", stream, err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load state of %q: %w", stream, err)
	}
	return nil
}

// SaveState saves state changes and, when position is not empty, stream's
// position, in one transaction; see stream.StateStore.
func (s *Store) SaveState(ctx context.Context, stream, position string, changes []kstream.StateChange) error {
	if err := s.guard.Check(); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save state of %q: %w", stream, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	if err := SaveState(ctx, tx, s.dialect, stream, changes); err != nil {
		return err
	}
	if position != "" {
		if err := Save(ctx, tx, s.dialect, stream, position); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save state of %q: %w", stream, err)
	}
	return s.guard.Check()
}

// LoadState calls fn with every live entry of stream's state; see
// stream.StateLoader.
func (s *Store) LoadState(ctx context.Context, stream string, fn func(kstream.StateChange) error) error {
	return LoadState(ctx, s.db, s.dialect, stream, fn)
}

// LoadPartitionState calls fn with every live entry of stream's state
// whose partition is one of parts; see stream.PartitionStateLoader.
func (s *Store) LoadPartitionState(ctx context.Context, stream string, parts []string, fn func(kstream.StateChange) error) error {
	return LoadPartitionState(ctx, s.db, s.dialect, stream, parts, fn)
}
