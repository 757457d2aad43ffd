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

	kstream "github.com/kisflow-go/kisflow/stream"
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

// InboxTable records the IDs of consumed messages for exactly-once sinks.
const InboxTable = "kisflow_inbox"

func (d Dialect) createInbox() string {
	if d == MySQL {
		return "CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream VARCHAR(255) NOT NULL, id VARCHAR(255) NOT NULL, PRIMARY KEY (stream, id))"
	}
	return "CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (stream, id))"
}

// EnsureInbox creates the inbox table if it does not exist.
func EnsureInbox(ctx context.Context, db Execer, d Dialect) error {
	if err := DDL(ctx, db, d.createInbox()); err != nil {
		return fmt.Errorf("create %s: %w", InboxTable, err)
	}
	return nil
}

// SaveInbox records message IDs of stream through db (a transaction).
func SaveInbox(ctx context.Context, db Execer, d Dialect, stream string, ids []string) error {
	const per = 500
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		var b strings.Builder
		b.WriteString("INSERT INTO " + InboxTable + " (stream, id) VALUES ")
		args := make([]any, 0, 2*len(chunk))
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			if d == Postgres {
				fmt.Fprintf(&b, "($%d, $%d)", 2*i+1, 2*i+2)
			} else {
				b.WriteString("(?, ?)")
			}
			args = append(args, stream, id)
		}
		if _, err := db.ExecContext(ctx, b.String(), args...); err != nil {
			if uniqueViolation(err) {
				return fmt.Errorf("record consumed messages of %q: %w: %v", stream, kstream.ErrAlreadyCommitted, err)
			}
			return fmt.Errorf("record consumed messages of %q: %w", stream, err)
		}
	}
	return nil
}

// Seen returns which ids of stream are recorded.
func Seen(ctx context.Context, db Querier, d Dialect, stream string, ids []string) (map[string]bool, error) {
	seen := map[string]bool{}
	const per = 500
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		var b strings.Builder
		args := make([]any, 0, len(chunk)+1)
		args = append(args, stream)
		if d == Postgres {
			b.WriteString("SELECT id FROM " + InboxTable + " WHERE stream = $1 AND id IN (")
		} else {
			b.WriteString("SELECT id FROM " + InboxTable + " WHERE stream = ? AND id IN (")
		}
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			if d == Postgres {
				fmt.Fprintf(&b, "$%d", i+2)
			} else {
				b.WriteString("?")
			}
			args = append(args, id)
		}
		b.WriteString(")")
		rows, err := db.QueryContext(ctx, b.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			seen[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return seen, nil
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
