package checkpoint

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	kstream "github.com/kisflow-go/kisflow/stream"
)

// InboxTable records the IDs of consumed messages for exactly-once sinks:
// kisflow_inbox(stream, id, committed_at), with the primary key (stream,
// id), which every lookup uses, and an index on (stream, committed_at),
// which pruning uses. committed_at is the Unix time, in seconds, of the
// commit that recorded the ID.
//
// The inbox holds the IDs of sources that redeliver (brokers: Redis
// Streams, Kafka, NATS, RabbitMQ, MQTT), whose IDs have no order to prune
// by; sources with a position (SQL polling, files) record no IDs. It is
// pruned by age: an ID older than the sink's inbox_ttl is deleted, and a
// redelivery later than that is not recognised. The TTL must exceed the
// longest time a broker may hold a message before redelivering it.
const InboxTable = "kisflow_inbox"

// inboxPK is the name SQLite gives the primary key index of the inbox.
const inboxPK = "sqlite_autoindex_" + InboxTable + "_1"

func (d Dialect) createInbox() []string {
	if d == MySQL {
		return []string{"CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream VARCHAR(255) NOT NULL, id VARCHAR(255) NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id), KEY " + InboxTable + "_age (stream, committed_at))"}
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
		"CREATE INDEX IF NOT EXISTS " + InboxTable + "_age ON " + InboxTable + " (stream, committed_at)",
	}
}

// EnsureInbox creates the inbox table if it does not exist, and adds the
// committed_at column and its index to an inbox made by an earlier
// version (its IDs are dated now, so they live one more TTL).
func EnsureInbox(ctx context.Context, db Execer, d Dialect) error {
	create := d.createInbox()
	if err := DDL(ctx, db, create[0]); err != nil {
		return fmt.Errorf("create %s: %w", InboxTable, err)
	}
	if _, err := db.ExecContext(ctx, "SELECT committed_at FROM "+InboxTable+" WHERE 1 = 0"); err != nil {
		migrate := []string{"ALTER TABLE " + InboxTable + " ADD COLUMN committed_at BIGINT NOT NULL DEFAULT 0"}
		if d == MySQL {
			migrate = append(migrate, "CREATE INDEX "+InboxTable+"_age ON "+InboxTable+" (stream, committed_at)")
		}
		for _, q := range migrate {
			if err := DDL(ctx, db, q); err != nil && !concurrentCreate(err) && !strings.Contains(err.Error(), "uplicate") {
				return fmt.Errorf("add committed_at to %s: %w", InboxTable, err)
			}
		}
		q := "UPDATE " + InboxTable + " SET committed_at = " + fmt.Sprint(time.Now().Unix()) + " WHERE committed_at = 0"
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("date the IDs of %s: %w", InboxTable, err)
		}
	}
	for _, q := range create[1:] {
		if err := DDL(ctx, db, q); err != nil {
			return fmt.Errorf("index %s: %w", InboxTable, err)
		}
	}
	return nil
}

// SaveInbox records message IDs of stream through db (a transaction),
// dated now.
func SaveInbox(ctx context.Context, db Execer, d Dialect, stream string, ids []string) error {
	const per = 500
	now := time.Now().Unix()
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		var b strings.Builder
		b.WriteString("INSERT INTO " + InboxTable + " (stream, id, committed_at) VALUES ")
		args := make([]any, 0, 3*len(chunk))
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			if d == Postgres {
				fmt.Fprintf(&b, "($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
			} else {
				b.WriteString("(?, ?, ?)")
			}
			args = append(args, stream, id, now)
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

// Seen returns which ids of stream are recorded. Every lookup goes
// through the primary key, whatever the planner's statistics say (stale
// statistics of a table that grew made PostgreSQL scan it): PostgreSQL
// looks up with sequential scans disabled for the transaction, MySQL
// forces the primary key, SQLite names its index.
func Seen(ctx context.Context, db *sql.DB, d Dialect, stream string, ids []string) (map[string]bool, error) {
	seen := map[string]bool{}
	if len(ids) == 0 {
		return seen, nil
	}
	var q Querier = db
	if d == Postgres {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
		}
		defer func() { _ = tx.Rollback() }() // read only
		if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
		}
		q = tx
	}
	const per = 500
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		var b strings.Builder
		args := make([]any, 0, len(chunk)+1)
		args = append(args, stream)
		switch d {
		case Postgres:
			b.WriteString("SELECT id FROM " + InboxTable + " WHERE stream = $1 AND id = ANY($2)")
			args = append(args, chunk)
		case MySQL:
			b.WriteString("SELECT id FROM " + InboxTable + " FORCE INDEX (PRIMARY) WHERE stream = ? AND id IN (")
		default:
			b.WriteString("SELECT id FROM " + InboxTable + " INDEXED BY " + inboxPK + " WHERE stream = ? AND id IN (")
		}
		if d != Postgres {
			for i, id := range chunk {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("?")
				args = append(args, id)
			}
			b.WriteString(")")
		}
		if err := scanIDs(ctx, q, b.String(), args, seen); err != nil {
			return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
		}
	}
	return seen, nil
}

func scanIDs(ctx context.Context, q Querier, query string, args []any, into map[string]bool) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		into[id] = true
	}
	return rows.Err()
}

// PruneInbox deletes up to limit IDs of stream committed before before,
// oldest first, through the (stream, committed_at) index, and returns how
// many it deleted.
func PruneInbox(ctx context.Context, db Execer, d Dialect, stream string, before time.Time, limit int) (int64, error) {
	var q string
	switch d {
	case Postgres:
		q = "DELETE FROM " + InboxTable + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + InboxTable + " WHERE stream = $1 AND committed_at < $2 ORDER BY committed_at LIMIT $3))"
	case MySQL:
		q = "DELETE FROM " + InboxTable + " WHERE stream = ? AND committed_at < ? ORDER BY committed_at LIMIT ?"
	default:
		q = "DELETE FROM " + InboxTable + " WHERE rowid IN (SELECT rowid FROM " + InboxTable + " WHERE stream = ? AND committed_at < ? ORDER BY committed_at LIMIT ?)"
	}
	res, err := db.ExecContext(ctx, q, stream, before.Unix(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune consumed messages of %q: %w", stream, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune consumed messages of %q: %w", stream, err)
	}
	return n, nil
}
