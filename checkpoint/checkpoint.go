// Package checkpoint stores stream positions in SQL: a table
// kisflow_checkpoints(stream, position, updated_at), where stream is a
// state key (a flow name and its source's identity) and updated_at the
// commit time, RFC 3339 in UTC. SQLite is the embedded
// default (modernc.org/sqlite, pure Go); the Tx helpers let a transactional
// sink record a position in the same transaction as its rows.
package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	kstream "github.com/kisflow-go/kisflow/stream"
	"modernc.org/sqlite" // the embedded database/sql driver "sqlite"
)

// Table is the name of the checkpoint table.
const Table = "kisflow_checkpoints"

// Dialect is the SQL flavour of a database holding checkpoints.
type Dialect int

// Dialects with their upsert syntax and placeholders.
const (
	SQLite Dialect = iota
	Postgres
	MySQL
)

func (d Dialect) create() string {
	if d == MySQL {
		return "CREATE TABLE IF NOT EXISTS " + Table + " (stream VARCHAR(255) PRIMARY KEY, position TEXT NOT NULL, updated_at VARCHAR(40) NOT NULL)"
	}
	return "CREATE TABLE IF NOT EXISTS " + Table + " (stream TEXT PRIMARY KEY, position TEXT NOT NULL, updated_at TEXT NOT NULL)"
}

func (d Dialect) upsert() string {
	switch d {
	case Postgres:
		return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES ($1, $2, $3) ON CONFLICT (stream) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
	case MySQL:
		return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = VALUES(updated_at)"
	}
	return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (stream) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
}

func (d Dialect) selectPos() string {
	return d.bind("SELECT position, updated_at FROM " + Table + " WHERE stream = ?")
}

// bind numbers the ? placeholders of q for PostgreSQL ($1, $2, ...).
func (d Dialect) bind(q string) string {
	if d != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Querier runs a query (a *sql.DB or *sql.Tx).
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Execer is what Ensure and SaveTx need: a *sql.DB, *sql.Tx or *sql.Conn.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Ensure creates the checkpoint table if it does not exist.
func Ensure(ctx context.Context, db Execer, d Dialect) error {
	if err := DDL(ctx, db, d.create()); err != nil {
		return fmt.Errorf("create %s: %w", Table, err)
	}
	return nil
}

// DDL runs a CREATE ... IF NOT EXISTS statement. When several processes
// start at once, PostgreSQL can fail one of them with a unique violation
// on its catalog even with IF NOT EXISTS; the statement is then tried
// again, and finds the table there.
func DDL(ctx context.Context, db Execer, q string) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = db.ExecContext(ctx, q); err == nil || !concurrentCreate(err) {
			return err
		}
		t := time.NewTimer(time.Duration(20*(attempt+1)) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// uniqueViolation reports a primary key conflict in any of the dialects.
func uniqueViolation(err error) bool {
	s := err.Error()
	return strings.Contains(s, "SQLSTATE 23505") || strings.Contains(s, "Error 1062") || strings.Contains(s, "UNIQUE constraint failed")
}

func concurrentCreate(err error) bool {
	s := err.Error()
	return strings.Contains(s, "pg_type_typname_nsp_index") || strings.Contains(s, "already exists") || strings.Contains(s, "SQLSTATE 23505")
}

// Save records position for stream through db (typically a transaction).
func Save(ctx context.Context, db Execer, d Dialect, stream, position string) error {
	if _, err := db.ExecContext(ctx, d.upsert(), stream, position, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("save position of %q: %w", stream, err)
	}
	return nil
}

// Load returns stream's position, "" if none was saved.
func Load(ctx context.Context, db Execer, d Dialect, stream string) (string, error) {
	pos, _, err := LoadAt(ctx, db, d, stream)
	return pos, err
}

// LoadAt returns stream's position and when it was committed: "" and the
// zero time if none was saved.
func LoadAt(ctx context.Context, db Execer, d Dialect, stream string) (string, time.Time, error) {
	var pos, at string
	err := db.QueryRowContext(ctx, d.selectPos(), stream).Scan(&pos, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("load position of %q: %w", stream, err)
	}
	t, _ := time.Parse(time.RFC3339Nano, at) // unreadable: unknown, the zero time
	return pos, t, nil
}

// Rekey moves the state an earlier version saved under the key from (a
// flow name) to the key to, in one transaction: the position and, with
// inbox, the consumed message IDs. It moves nothing and returns false when
// from has no state, when to has some, or when another key from+"@..."
// has some: from's state may then be that key's, and is left alone. Of
// processes racing to move the same key, one moves it.
func Rekey(ctx context.Context, db *sql.DB, d Dialect, from, to string, inbox bool) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	moved, err := rekey(ctx, tx, d, from, to, inbox)
	if err != nil || !moved {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
	}
	return true, nil
}

func rekey(ctx context.Context, tx *sql.Tx, d Dialect, from, to string, inbox bool) (bool, error) {
	tables := []string{Table}
	if inbox {
		tables = append(tables, InboxTable)
	}
	has := func(table, where string, args ...any) (bool, error) {
		var one int
		err := tx.QueryRowContext(ctx, d.bind("SELECT 1 FROM "+table+" WHERE "+where+" LIMIT 1"), args...).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	}
	// Cheap look-ups by primary key first: once moved, from has nothing.
	var legacy bool
	for _, t := range tables {
		found, err := has(t, "stream = ?", from)
		if err != nil {
			return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
		}
		legacy = legacy || found
	}
	if !legacy {
		return false, nil
	}
	like := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(from) + "@%"
	for _, t := range tables {
		for _, q := range []struct {
			where string
			args  []any
		}{{"stream = ?", []any{to}}, {"stream LIKE ? ESCAPE '!'", []any{like}}} {
			found, err := has(t, q.where, q.args...)
			if err != nil {
				return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
			}
			if found {
				return false, nil
			}
		}
	}
	// The checks read a snapshot (MySQL's repeatable read); the updates
	// read what is committed: a racing process that moved the state first
	// leaves them nothing.
	var n int64
	for _, t := range tables {
		res, err := tx.ExecContext(ctx, d.bind("UPDATE "+t+" SET stream = ? WHERE stream = ?"), to, from)
		if err != nil {
			return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("move state of %q to %q: %w", from, to, err)
		}
		n += k
	}
	return n > 0, nil
}

// Store is a checkpoint store over one database. It is safe for concurrent
// use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	guard   *FileGuard // the SQLite file, checked at every save
}

// OpenSQLite opens (creating) an SQLite checkpoint file.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	var db *sql.DB
	// Two processes or flows opening a new file at once: switching it to
	// WAL, or creating its tables, may find the other's lock and fail with
	// SQLITE_BUSY without waiting out the busy timeout. Both go on once
	// the first has made the file, so an open that is refused so is tried
	// again for a while.
	for wait, deadline := 10*time.Millisecond, time.Now().Add(openBusyFor); ; wait = min(2*wait, time.Second) {
		var err error
		db, err = OpenSQLiteDB(path)
		if err == nil {
			if err = errors.Join(Ensure(ctx, db, SQLite), EnsureState(ctx, db, SQLite)); err != nil {
				db.Close()
			}
		}
		if err == nil {
			break
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
	guard, err := NewFileGuard(path)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, dialect: SQLite, guard: guard}, nil
}

// openBusyFor is how long OpenSQLite tries again an open refused because
// another connection holds the file's lock.
const openBusyFor = 30 * time.Second

// isBusy reports whether err is SQLite's SQLITE_BUSY (or SQLITE_LOCKED):
// another connection holds the lock.
func isBusy(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// OpenSQLiteDB opens an SQLite file with the settings the runtime relies
// on: WAL journal, a busy timeout, foreign keys on, full sync of commits.
// It creates the file's missing folders; a folder that cannot be made
// for good (see stream.FatalPath) is a stream.Fatal error.
func OpenSQLiteDB(path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, kstream.FatalPath(fmt.Errorf("open %s: %w", path, err))
		}
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer: SQLite serialises writes anyway
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// Position returns stream's saved position.
func (s *Store) Position(ctx context.Context, stream string) (string, error) {
	return Load(ctx, s.db, s.dialect, stream)
}

// SavePosition saves stream's position. It fails with a stream.Fatal
// error naming the file when the SQLite file was deleted or replaced since
// it was opened: the position would be saved where nobody reads it.
func (s *Store) SavePosition(ctx context.Context, stream, position string) error {
	if err := s.guard.Check(); err != nil {
		return err
	}
	if err := Save(ctx, s.db, s.dialect, stream, position); err != nil {
		return err
	}
	return s.guard.Check()
}

// PositionTime returns when stream's position was saved, the zero time if
// it was not.
func (s *Store) PositionTime(ctx context.Context, stream string) (time.Time, error) {
	_, at, err := LoadAt(ctx, s.db, s.dialect, stream)
	return at, err
}

// Rekey moves the position saved under from to to; see the package's
// Rekey.
func (s *Store) Rekey(ctx context.Context, from, to string) (bool, error) {
	if err := s.guard.Check(); err != nil {
		return false, err
	}
	return Rekey(ctx, s.db, s.dialect, from, to, false)
}

// Adopt moves the position that old holds for stream (a key an earlier
// version saved in another file) into s, with its time, and returns it. It
// adopts nothing ("") when old has none for stream, or when s already
// holds a position for stream or for a key stream+"@...". The position is
// saved in s before it is deleted from old: a crash in between leaves a
// copy in old that the next Adopt ignores.
func (s *Store) Adopt(ctx context.Context, old *Store, stream string) (string, error) {
	pos, at, err := LoadAt(ctx, old.db, old.dialect, stream)
	if err != nil || pos == "" {
		return "", err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("adopt position of %q: %w", stream, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	var one int
	like := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(stream) + "@%"
	err = tx.QueryRowContext(ctx, s.dialect.bind("SELECT 1 FROM "+Table+" WHERE stream = ? OR stream LIKE ? ESCAPE '!' LIMIT 1"), stream, like).Scan(&one)
	switch {
	case err == nil:
		return "", nil // s has positions of its own
	case !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("adopt position of %q: %w", stream, err)
	}
	if _, err := tx.ExecContext(ctx, s.dialect.upsert(), stream, pos, at.UTC().Format(time.RFC3339Nano)); err != nil {
		return "", fmt.Errorf("adopt position of %q: %w", stream, err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("adopt position of %q: %w", stream, err)
	}
	if _, err := old.db.ExecContext(ctx, old.dialect.bind("DELETE FROM "+Table+" WHERE stream = ?"), stream); err != nil {
		return "", fmt.Errorf("adopt position of %q: delete it from the old store: %w", stream, err)
	}
	return pos, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Fence checks, first in the transaction tx, that stream's position is
// still from ("": none), and locks it until tx ends, so that fenced
// commits of one stream by several processes take turns: it returns a
// *stream.FenceError, and tx must be rolled back, when another position
// is found. With from "", a row holding the empty position is inserted
// first when there is none, so that there is a row to lock; it is
// committed with tx and reads as no position.
func Fence(ctx context.Context, tx Execer, d Dialect, stream, from string) error {
	if from == "" {
		if _, err := tx.ExecContext(ctx, d.claim(), stream, "", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("lock position of %q: %w", stream, err)
		}
	}
	q := d.bind("SELECT position FROM " + Table + " WHERE stream = ?")
	if d != SQLite {
		q += " FOR UPDATE" // SQLite: the transaction is immediate, a writer alone
	}
	var found string
	err := tx.QueryRowContext(ctx, q, stream).Scan(&found)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("lock position of %q: %w", stream, err)
	}
	if found != from {
		return &kstream.FenceError{Stream: stream, Found: found, Expected: from}
	}
	return nil
}

// claim inserts a stream's row unless there is one.
func (d Dialect) claim() string {
	switch d {
	case Postgres:
		return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES ($1, $2, $3) ON CONFLICT (stream) DO NOTHING"
	case MySQL:
		return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE stream = stream"
	}
	return "INSERT INTO " + Table + " (stream, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (stream) DO NOTHING"
}
