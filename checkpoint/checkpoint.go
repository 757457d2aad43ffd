// Package checkpoint stores stream positions in SQL: a table
// kisflow_checkpoints(stream, position, updated_at). SQLite is the embedded
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

	_ "modernc.org/sqlite" // the embedded database/sql driver "sqlite"
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
	if d == Postgres {
		return "SELECT position FROM " + Table + " WHERE stream = $1"
	}
	return "SELECT position FROM " + Table + " WHERE stream = ?"
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
	var pos string
	err := db.QueryRowContext(ctx, d.selectPos(), stream).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("load position of %q: %w", stream, err)
	}
	return pos, nil
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
	db, err := OpenSQLiteDB(path)
	if err != nil {
		return nil, err
	}
	if err := Ensure(ctx, db, SQLite); err != nil {
		db.Close()
		return nil, err
	}
	guard, err := NewFileGuard(path)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, dialect: SQLite, guard: guard}, nil
}

// OpenSQLiteDB opens an SQLite file with the settings the runtime relies
// on: WAL journal, a busy timeout, foreign keys on, full sync of commits.
func OpenSQLiteDB(path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"
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

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
