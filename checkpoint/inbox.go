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
// kisflow_inbox(stream, id, committed_at), with a primary key on stream
// and id, which every lookup uses, and an index on (stream, committed_at),
// which pruning uses. committed_at is the Unix time, in seconds, of the
// commit that recorded the ID.
//
// On PostgreSQL the primary key is (id, stream) and the pruning index
// compares stream in the "C" collation, so that the primary key is the
// only index a lookup's condition matches: a lookup is one descent of it
// per ID whatever the planner's statistics say (with a key led by stream,
// statistics that predate the stream made PostgreSQL read all of the
// stream's IDs for every lookup).
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

// inboxPrune is the name of PostgreSQL's pruning index, on (stream
// COLLATE "C", committed_at); inboxAge is that of the others', on
// (stream, committed_at), and of PostgreSQL's before the lookups were made
// to match the primary key only.
const (
	inboxPrune = InboxTable + "_prune"
	inboxAge   = InboxTable + "_age"
)

func (d Dialect) createInbox() []string {
	switch d {
	case MySQL:
		return []string{"CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream VARCHAR(255) NOT NULL, id VARCHAR(255) NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id), KEY " + inboxAge + " (stream, committed_at))"}
	case Postgres:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id, stream))",
			"CREATE INDEX IF NOT EXISTS " + inboxPrune + " ON " + InboxTable + ` (stream COLLATE "C", committed_at)`,
			"DROP INDEX IF EXISTS " + inboxAge,
		}
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + InboxTable + " (stream TEXT NOT NULL, id TEXT NOT NULL, committed_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (stream, id))",
		"CREATE INDEX IF NOT EXISTS " + inboxAge + " ON " + InboxTable + " (stream, committed_at)",
	}
}

// EnsureInbox creates the inbox table if it does not exist, and brings an
// inbox made by an earlier version to the current shape: it adds the
// committed_at column and its index (its IDs are dated now, so they live
// one more TTL) and, on PostgreSQL, rebuilds a primary key led by stream
// as (id, stream) and replaces the (stream, committed_at) index by the
// pruning index (each a build of an index over the whole inbox, once).
func EnsureInbox(ctx context.Context, db Execer, d Dialect) error {
	create := d.createInbox()
	if err := DDL(ctx, db, create[0]); err != nil {
		return fmt.Errorf("create %s: %w", InboxTable, err)
	}
	if _, err := db.ExecContext(ctx, "SELECT committed_at FROM "+InboxTable+" WHERE 1 = 0"); err != nil {
		migrate := []string{"ALTER TABLE " + InboxTable + " ADD COLUMN committed_at BIGINT NOT NULL DEFAULT 0"}
		if d == MySQL {
			migrate = append(migrate, "CREATE INDEX "+inboxAge+" ON "+InboxTable+" (stream, committed_at)")
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
	if d == Postgres {
		if err := keyByID(ctx, db); err != nil {
			return fmt.Errorf("key %s by id: %w", InboxTable, err)
		}
	}
	for _, q := range create[1:] {
		if err := DDL(ctx, db, q); err != nil {
			return fmt.Errorf("index %s: %w", InboxTable, err)
		}
	}
	return nil
}

// keyByID makes the primary key of a PostgreSQL inbox (id, stream) if it
// is led by stream, as earlier versions made it: a unique index on (id,
// stream) is built, then takes the place of the primary key, in one
// transaction. Processes that start at once take turns (an advisory
// lock); those after the first find the key done.
func keyByID(ctx context.Context, db Execer) error {
	_, err := db.ExecContext(ctx, `DO $$
DECLARE pk name;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('`+InboxTable+` key'));
	SELECT c.conname INTO pk FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
		WHERE c.conrelid = '`+InboxTable+`'::regclass AND c.contype = 'p' AND a.attname = 'stream';
	IF pk IS NOT NULL THEN
		CREATE UNIQUE INDEX `+InboxTable+`_id_stream ON `+InboxTable+` (id, stream);
		EXECUTE format('ALTER TABLE `+InboxTable+` DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY USING INDEX `+InboxTable+`_id_stream', pk, pk);
	END IF;
END $$`)
	return err
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
// looks up with sequential scans disabled for the transaction and no
// other index that the condition matches (see InboxTable), MySQL forces
// the primary key, SQLite names its index.
//
// A lookup costs one descent of the primary key per ID, whose depth grows
// with the logarithm of the inbox's size. For the IDs the runtime asks
// about, a new batch's (mostly never recorded) and redeliveries of the
// last batches committed, the leaf pages read are the few that hold the
// newest IDs when IDs grow as broker sequence numbers, offsets and stream
// IDs do, so they stay cached however large the inbox grows; IDs spread
// over the whole inbox each cost a read of a page that may not be cached.
func Seen(ctx context.Context, db *sql.DB, d Dialect, stream string, ids []string) (map[string]bool, error) {
	seen := map[string]bool{}
	if len(ids) == 0 {
		return seen, nil
	}
	q, done, err := lookupIn(ctx, db, d)
	if err != nil {
		return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
	}
	defer done()
	const per = 500
	for start := 0; start < len(ids); start += per {
		query, args := seenQuery(d, stream, ids[start:min(start+per, len(ids))])
		if err := scanIDs(ctx, q, query, args, seen); err != nil {
			return nil, fmt.Errorf("look up consumed messages of %q: %w", stream, err)
		}
	}
	return seen, nil
}

// lookupIn returns what Seen queries through, and the function that
// releases it: for PostgreSQL, a read-only transaction with sequential
// scans disabled; for the others, db.
func lookupIn(ctx context.Context, db *sql.DB, d Dialect) (Querier, func(), error) {
	if d != Postgres {
		return db, func() {}, nil
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		_ = tx.Rollback() // read only
		return nil, nil, err
	}
	return tx, func() { _ = tx.Rollback() }, nil // read only
}

// seenQuery returns the query, and its arguments, that selects which of
// ids (at most a few hundred) of stream are recorded, through the
// primary key.
func seenQuery(d Dialect, stream string, ids []string) (string, []any) {
	if d == Postgres {
		return "SELECT id FROM " + InboxTable + " WHERE stream = $1 AND id = ANY($2)", []any{stream, ids}
	}
	var b strings.Builder
	if d == MySQL {
		b.WriteString("SELECT id FROM " + InboxTable + " FORCE INDEX (PRIMARY) WHERE stream = ? AND id IN (")
	} else {
		b.WriteString("SELECT id FROM " + InboxTable + " INDEXED BY " + inboxPK + " WHERE stream = ? AND id IN (")
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, stream)
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("?")
		args = append(args, id)
	}
	b.WriteString(")")
	return b.String(), args
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
// oldest first, through the pruning index (stream, committed_at), and
// returns how many it deleted.
func PruneInbox(ctx context.Context, db Execer, d Dialect, stream string, before time.Time, limit int) (int64, error) {
	res, err := db.ExecContext(ctx, pruneQuery(d), stream, before.Unix(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune consumed messages of %q: %w", stream, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune consumed messages of %q: %w", stream, err)
	}
	return n, nil
}

// pruneQuery returns PruneInbox's statement, whose arguments are the
// stream, the Unix time before which IDs are deleted, and how many at
// most. On PostgreSQL it compares stream in the "C" collation, as the
// pruning index does.
func pruneQuery(d Dialect) string {
	switch d {
	case Postgres:
		return "DELETE FROM " + InboxTable + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + InboxTable + ` WHERE stream COLLATE "C" = $1 AND committed_at < $2 ORDER BY committed_at LIMIT $3))`
	case MySQL:
		return "DELETE FROM " + InboxTable + " WHERE stream = ? AND committed_at < ? ORDER BY committed_at LIMIT ?"
	}
	return "DELETE FROM " + InboxTable + " WHERE rowid IN (SELECT rowid FROM " + InboxTable + " WHERE stream = ? AND committed_at < ? ORDER BY committed_at LIMIT ?)"
}

// ForgetInbox deletes every consumed message ID of stream through db (a
// transaction), so that messages read again after its position was moved
// back are written again (once: their IDs are recorded anew).
func ForgetInbox(ctx context.Context, db Execer, d Dialect, stream string) error {
	if _, err := db.ExecContext(ctx, d.bind("DELETE FROM "+InboxTable+" WHERE stream = ?"), stream); err != nil {
		return fmt.Errorf("forget consumed messages of %q: %w", stream, err)
	}
	return nil
}
