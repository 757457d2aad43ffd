// Package sql provides SQL connectors behind one implementation: sqlite (the
// embedded default, modernc.org/sqlite, pure Go), mysql (MySQL and MariaDB,
// go-sql-driver/mysql) and postgres (pgx v5). Each is a stream sink, a
// transactional sink for exactly-once delivery (a batch's rows, the source
// position and the IDs of the messages it consumed commit in one
// transaction), a Save/Load target for functions, and a polling source on
// an increasing column.
//
// Config: key is the table. The params of each type are declared in
// SQLiteSpec, MySQLSpec and PostgresSpec (`kisflow list postgres`).
//
// Rows may be maps, structs (fields by json tag or name) or JSON text. A
// field holding a map, a slice or a struct (a dead letter's headers, a
// nested object) is stored as its JSON text, in a TEXT column when create
// makes the table.
//
// Errors are marked for the runtime (see classify): a row the database
// rejects is stream.Permanent, a configuration error stream.Fatal, and an
// SQLite file deleted or replaced while open fails the next commit with a
// stream.Fatal error naming it.
package sql

import (
	"context"
	stdsql "database/sql"
	sqldriver "database/sql/driver"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Connector types this package registers.
const (
	TypeSQLite   = "sqlite"
	TypeMySQL    = "mysql"
	TypePostgres = "postgres"
)

// Install registers the SQL drivers and the shared pool plugin types.
func Install(reg *kisflow.Registry) error {
	for _, c := range []struct {
		spec *driver.Spec
		f    driver.Factory
	}{{SQLiteSpec, NewSQLite}, {MySQLSpec, NewMySQL}, {PostgresSpec, NewPostgres}} {
		if err := reg.RegisterConnector(c.spec, c.f); err != nil {
			return err
		}
	}
	for _, spec := range PoolSpecs {
		if err := reg.RegisterPlugin(spec); err != nil {
			return err
		}
	}
	return nil
}

// DB is a SQL connector. It is safe for concurrent use.
type DB struct {
	cfg       *config.Conn
	dialect   checkpoint.Dialect
	path      string // sqlite
	dsn       string // mysql, postgres
	timeout   time.Duration
	maxConns  int
	table     string
	pollCol   string
	pollEvery time.Duration
	pollLag   time.Duration
	inboxTTL  time.Duration
	create    bool
	apply     bool   // mode apply: rows are changes
	srcTable  string // mode apply: the captured table whose changes are applied (source_table); "": any one
	seenTable string // mode apply without source_table: the captured table of the changes applied so far
	tableMu   sync.Mutex
	loadQuery string
	loadArgs  []string
	client    string // the shared pool's name (mysql, postgres)

	db     *stdsql.DB
	guard  *checkpoint.FileGuard // sqlite: the file opened, checked at each commit
	shared *PoolPlugin           // set by UsePlugins: the pool is the plugin's

	pruneMu   sync.Mutex
	nextPrune map[string]time.Time // per stream: when its inbox is pruned next

	mu sync.Mutex
	// mysqlCreated: the table was created outside any transaction (MySQL).
	mysqlCreated bool
	columns      []string          // fixed once known
	fieldOf      map[string]string // column -> row field, from columns' col=field entries
	upsertKey    []string          // conflict columns: insert or update
	pgTypes      map[string]string // postgres: column -> type, "" for an array (see pgArrayTypes)
	// upsertOnly: mode apply on PostgreSQL upserts even the rows of keys
	// a batch inserted, for its next upsertOnly writes of them (see
	// insertFresh).
	upsertOnly int
	// keyChecked: keyUnique tells whether a unique index of the table
	// (PostgreSQL) has exactly the key's columns (see uniqueKey).
	keyChecked, keyUnique bool

	stmts stmtCache // the writes' statements, prepared once
}

// NewSQLite builds an SQLite connector from its config.
func NewSQLite(cfg *config.Conn) (driver.Driver, error) {
	var p sqliteParams
	if err := SQLiteSpec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	if p.Path == "" {
		if a := cfg.AddrList(); len(a) > 0 {
			p.Path = a[0]
		}
	}
	if p.Path == "" {
		return nil, fmt.Errorf("sqlite connector %q: params.path is required", cfg.CName)
	}
	d := &DB{cfg: cfg, dialect: checkpoint.SQLite, path: cfg.Path(p.Path), table: cfg.Key}
	if err := d.parseCommon(&p.common, p.PollLag); err != nil {
		return nil, err
	}
	return d, nil
}

// NewMySQL builds a MySQL or MariaDB driver from its config; it does not
// connect.
func NewMySQL(cfg *config.Conn) (driver.Driver, error) {
	var p mysqlParams
	if err := MySQLSpec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	dsn := p.DSN
	if dsn == "" {
		addr := "127.0.0.1:3306"
		switch a := cfg.AddrList(); {
		case len(a) > 1:
			return nil, fmt.Errorf("mysql connector %q: addrs names %d servers; the driver connects to one: give one address (a proxy or a virtual IP in front of a failover group)", cfg.CName, len(a))
		case len(a) == 1:
			addr = a[0]
		}
		dsn = fmt.Sprintf("%s:%s@tcp(%s)/%s", p.User, p.Password, addr, p.Database)
	}
	dsn, err := mysqlDSN(dsn, p.TLS)
	if err != nil {
		return nil, fmt.Errorf("mysql connector %q: bad dsn: %w", cfg.CName, err)
	}
	d := &DB{cfg: cfg, dialect: checkpoint.MySQL, dsn: dsn, table: cfg.Key, client: p.Client}
	if err := d.parseCommon(&p.common, p.PollLag); err != nil {
		return nil, err
	}
	return d, nil
}

// NewPostgres builds a PostgreSQL driver from its config; it does not
// connect.
func NewPostgres(cfg *config.Conn) (driver.Driver, error) {
	var p postgresParams
	if err := PostgresSpec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	dsn := p.DSN
	if a := cfg.AddrList(); dsn == "" && len(a) == 1 && (strings.HasPrefix(a[0], "postgres://") || strings.HasPrefix(a[0], "postgresql://")) {
		dsn = a[0] // a URL in addrs is the DSN
	}
	if dsn == "" {
		addrs := cfg.AddrList()
		if len(addrs) == 0 {
			addrs = []string{"127.0.0.1:5432"}
		}
		u := url.URL{Scheme: "postgres", Host: strings.Join(addrs, ","), Path: "/" + p.Database}
		if p.User != "" {
			u.User = url.UserPassword(p.User, p.Password)
		}
		q := url.Values{}
		q.Set("sslmode", p.SSLMode)
		q.Set("connect_timeout", "5")
		if len(addrs) > 1 {
			q.Set("target_session_attrs", p.TargetSessionAttrs)
		}
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return nil, fmt.Errorf("postgres connector %q: bad dsn: %w", cfg.CName, err)
	}
	d := &DB{cfg: cfg, dialect: checkpoint.Postgres, dsn: dsn, table: cfg.Key, client: p.Client}
	if err := d.parseCommon(&p.common, p.PollLag); err != nil {
		return nil, err
	}
	return d, nil
}

var placeholder = regexp.MustCompile(`:([A-Za-z_][A-Za-z0-9_]*)`)

func (d *DB) parseCommon(p *common, pollLag time.Duration) error {
	d.timeout, d.pollEvery, d.pollLag, d.inboxTTL, d.maxConns = p.Timeout, p.PollInterval, pollLag, p.InboxTTL, p.MaxConns
	d.create = p.Create
	d.apply = p.Mode == "apply"
	d.srcTable = p.SourceTable
	d.pollCol = p.PollColumn
	if d.pollCol != "" && !validIdent(d.pollCol) {
		return fmt.Errorf("connector %q: poll_column %q is not a plain identifier", d.cfg.CName, d.pollCol)
	}
	for _, c := range p.Columns {
		col, field, mapped := strings.Cut(c, "=")
		col, field = strings.TrimSpace(col), strings.TrimSpace(field)
		if col == "" {
			continue
		}
		if !mapped {
			field = col
		}
		if d.fieldOf == nil {
			d.fieldOf = map[string]string{}
		}
		d.fieldOf[col] = field
		d.columns = append(d.columns, col)
	}
	for _, c := range p.UpsertKey {
		if !validIdent(c) {
			return fmt.Errorf("connector %q: upsert_key column %q is not a plain identifier", d.cfg.CName, c)
		}
		d.upsertKey = append(d.upsertKey, c)
	}
	if q := p.LoadQuery; q != "" {
		for _, m := range placeholder.FindAllStringSubmatch(q, -1) {
			d.loadArgs = append(d.loadArgs, m[1])
		}
		i := 0
		d.loadQuery = placeholder.ReplaceAllStringFunc(q, func(string) string {
			i++
			return d.bind(i)
		})
	}
	if d.table != "" && !validIdent(d.table) {
		return fmt.Errorf("connector %q: table %q is not a plain identifier", d.cfg.CName, d.table)
	}
	for _, c := range d.columns {
		if !validIdent(c) {
			return fmt.Errorf("connector %q: column %q is not a plain identifier", d.cfg.CName, c)
		}
	}
	return nil
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validIdent(s string) bool { return ident.MatchString(s) }

// bind is the dialect's i-th placeholder (from 1).
func (d *DB) bind(i int) string {
	if d.dialect == checkpoint.Postgres {
		return fmt.Sprintf("$%d", i)
	}
	return "?"
}

// binds writes n placeholders, separated by commas, from the one after
// the from-th.
func (d *DB) binds(b *strings.Builder, from, n int) {
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.bind(from + i + 1))
	}
}

func (d *DB) quote(id string) string {
	if d.dialect == checkpoint.MySQL {
		return "`" + id + "`"
	}
	return `"` + id + `"`
}

// Start opens the database, checks it answers within the timeout, and
// creates the checkpoint and inbox tables.
func (d *DB) Start(ctx context.Context) error {
	var db *stdsql.DB
	var err error
	switch {
	case d.shared != nil:
		db = d.shared.DB()
	case d.dialect == checkpoint.SQLite:
		db, err = checkpoint.OpenSQLiteDB(d.path)
	case d.dialect == checkpoint.MySQL:
		db, err = stdsql.Open("mysql", d.dsn)
	case d.dialect == checkpoint.Postgres:
		db, err = stdsql.Open("pgx", d.dsn)
	}
	if err != nil {
		return err
	}
	closeOwn := func() {
		if d.shared == nil {
			db.Close()
		}
	}
	if d.dialect != checkpoint.SQLite && d.shared == nil {
		db.SetMaxOpenConns(d.maxConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		pctx, cancel := context.WithTimeout(ctx, d.timeout)
		err = db.PingContext(pctx)
		cancel()
		if err != nil {
			db.Close()
			return classify(fmt.Errorf("connector %q: %w", d.cfg.CName, err))
		}
	}
	if err := checkpoint.Ensure(ctx, db, d.dialect); err != nil {
		closeOwn()
		return err
	}
	if err := checkpoint.EnsureInbox(ctx, db, d.dialect); err != nil {
		closeOwn()
		return err
	}
	if err := checkpoint.EnsureState(ctx, db, d.dialect); err != nil {
		closeOwn()
		return err
	}
	if d.dialect == checkpoint.SQLite {
		if d.guard, err = checkpoint.NewFileGuard(d.path); err != nil {
			closeOwn()
			return err
		}
	}
	d.db = db
	return nil
}

// Close closes the database (a shared pool stays open for the others; its
// plugin closes it).
func (d *DB) Close(context.Context) error {
	d.stmts.close()
	if d.db == nil || d.shared != nil {
		return nil
	}
	return d.db.Close()
}

// SQL returns the database handle, for queries of the caller's own.
func (d *DB) SQL() *stdsql.DB { return d.db }

// Table is the connector's table (its key).
func (d *DB) Table() string { return d.table }

// Write inserts rows into the table in one transaction.
func (d *DB) Write(ctx context.Context, rows []any) error {
	return d.inTx(ctx, func(tx *stdsql.Tx) error { return d.insert(ctx, tx, rows) })
}

// CommitBatch inserts rows, records the stream's position and the IDs of
// the messages consumed, in one transaction: the exactly-once commit.
func (d *DB) CommitBatch(ctx context.Context, stream, position string, ids []string, rows []any) error {
	return d.commitBatch(ctx, false, stream, "", position, ids, rows, nil)
}

// CommitBatchAfter is CommitBatch fenced on the position from: the
// transaction first locks the stream's checkpoint row and commits nothing,
// failing with a *stream.FenceError, unless it still holds from ("":
// none); see stream.FencedTxSink.
func (d *DB) CommitBatchAfter(ctx context.Context, stream, from, position string, ids []string, rows []any) error {
	return d.commitBatch(ctx, true, stream, from, position, ids, rows, nil)
}

// CommitState is CommitBatch with keyed state changes, written in the
// same transaction; see stream.StateSink.
func (d *DB) CommitState(ctx context.Context, stream, position string, ids []string, rows []any, state []stream.StateChange) error {
	return d.commitBatch(ctx, false, stream, "", position, ids, rows, state)
}

// CommitStateAfter is CommitBatchAfter with keyed state changes, written
// in the same transaction; see stream.StateSink.
func (d *DB) CommitStateAfter(ctx context.Context, stream, from, position string, ids []string, rows []any, state []stream.StateChange) error {
	return d.commitBatch(ctx, true, stream, from, position, ids, rows, state)
}

func (d *DB) commitBatch(ctx context.Context, fence bool, stream, from, position string, ids []string, rows []any, state []stream.StateChange) error {
	if err := d.pruneInbox(ctx, stream); err != nil {
		return err
	}
	return d.inTx(ctx, func(tx *stdsql.Tx) error {
		if fence {
			if err := checkpoint.Fence(ctx, tx, d.dialect, stream, from); err != nil {
				return err
			}
		}
		if err := d.insert(ctx, tx, rows); err != nil {
			return err
		}
		if err := checkpoint.SaveInbox(ctx, tx, d.dialect, stream, ids); err != nil {
			return err
		}
		if err := checkpoint.SaveState(ctx, tx, d.dialect, stream, state); err != nil {
			return err
		}
		if position == "" {
			return nil
		}
		return checkpoint.Save(ctx, tx, d.dialect, stream, position)
	})
}

// MovePosition sets the stream's committed position to to (unless to is
// "") and forgets its consumed message IDs, in one transaction fenced on
// the position from; with truncate it also deletes every row of the
// connector's table. See stream.PositionMover.
func (d *DB) MovePosition(ctx context.Context, stream, from, to string, truncate bool) error {
	if truncate && d.table == "" {
		return fmt.Errorf("connector %q has no table (key) to truncate", d.cfg.CName)
	}
	return d.inTx(ctx, func(tx *stdsql.Tx) error {
		if err := checkpoint.Fence(ctx, tx, d.dialect, stream, from); err != nil {
			return err
		}
		if err := checkpoint.ForgetInbox(ctx, tx, d.dialect, stream); err != nil {
			return err
		}
		if truncate {
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+d.quote(d.table)); err != nil {
				return fmt.Errorf("connector %q: truncate %s: %w", d.cfg.CName, d.table, err)
			}
		}
		if to == "" {
			return nil
		}
		return checkpoint.Save(ctx, tx, d.dialect, stream, to)
	})
}

// LoadState calls fn with every live entry of the stream's keyed state;
// see stream.StateLoader.
func (d *DB) LoadState(ctx context.Context, stream string, fn func(stream.StateChange) error) error {
	if d.db == nil {
		return fmt.Errorf("connector %q is not started", d.cfg.CName)
	}
	return checkpoint.LoadState(ctx, d.db, d.dialect, stream, fn)
}

// LoadPartitionState calls fn with every live entry of the stream's keyed
// state whose source partition is one of parts; see
// stream.PartitionStateLoader.
func (d *DB) LoadPartitionState(ctx context.Context, stream string, parts []string, fn func(stream.StateChange) error) error {
	if d.db == nil {
		return fmt.Errorf("connector %q is not started", d.cfg.CName)
	}
	return checkpoint.LoadPartitionState(ctx, d.db, d.dialect, stream, parts, fn)
}

// pruneBatch bounds the IDs one prune deletes, so that it never holds up
// a commit for long; a prune that deleted that many runs again at the next
// commit, until the inbox has caught up.
const pruneBatch = 10000

// pruneInbox deletes the stream's inbox IDs older than inbox_ttl, at most
// every inbox_ttl/10 (and at least hourly), before a commit: an error
// leaves the batch unwritten, to be retried.
func (d *DB) pruneInbox(ctx context.Context, stream string) error {
	if d.db == nil {
		return nil // inTx reports it
	}
	now := time.Now()
	d.pruneMu.Lock()
	defer d.pruneMu.Unlock()
	if now.Before(d.nextPrune[stream]) {
		return nil
	}
	n, err := checkpoint.PruneInbox(ctx, d.db, d.dialect, stream, now.Add(-d.inboxTTL), pruneBatch)
	if err != nil {
		return classify(fmt.Errorf("connector %q: %w", d.cfg.CName, err))
	}
	if d.nextPrune == nil {
		d.nextPrune = map[string]time.Time{}
	}
	d.nextPrune[stream] = now.Add(min(d.inboxTTL/10, time.Hour))
	if n == pruneBatch {
		d.nextPrune[stream] = now
	}
	return nil
}

// Seen returns which of the message IDs a batch of stream already
// committed.
func (d *DB) Seen(ctx context.Context, stream string, ids []string) (map[string]bool, error) {
	return checkpoint.Seen(ctx, d.db, d.dialect, stream, ids)
}

// Position returns the stream's committed position.
func (d *DB) Position(ctx context.Context, stream string) (string, error) {
	return checkpoint.Load(ctx, d.db, d.dialect, stream)
}

// PositionTime returns when the stream's position was committed.
func (d *DB) PositionTime(ctx context.Context, stream string) (time.Time, error) {
	_, at, err := checkpoint.LoadAt(ctx, d.db, d.dialect, stream)
	return at, err
}

// Rekey moves the position and consumed message IDs an earlier version
// committed under the key from to the key to, in one transaction; see
// stream.Rekeyer.
func (d *DB) Rekey(ctx context.Context, from, to string) (bool, error) {
	return checkpoint.Rekey(ctx, d.db, d.dialect, from, to, true)
}

// SavePosition records a position outside a batch (the checkpoint store
// role, for at-least-once delivery).
func (d *DB) SavePosition(ctx context.Context, stream, position string) error {
	if err := d.guard.Check(); err != nil {
		return d.fileGone(err)
	}
	if err := checkpoint.Save(ctx, d.db, d.dialect, stream, position); err != nil {
		return err
	}
	return d.fileGone(d.guard.Check())
}

// fileGone names the connector in the error of a guard check.
func (d *DB) fileGone(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlite connector %q: %w", d.cfg.CName, err)
}

func (d *DB) inTx(ctx context.Context, fn func(*stdsql.Tx) error) error {
	if d.db == nil {
		return fmt.Errorf("connector %q is not started", d.cfg.CName)
	}
	// An SQLite file deleted or replaced while open takes every commit
	// into the old, unlinked file: checked before (nothing more is
	// written there) and after (this commit went there).
	if err := d.guard.Check(); err != nil {
		return d.fileGone(err)
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return classify(fmt.Errorf("connector %q: begin: %w", d.cfg.CName, err))
	}
	defer d.stmts.prepare(ctx, d.db) // those run unprepared, now that the connection is free
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the write's error is the one to report
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		return classify(fmt.Errorf("connector %q: commit: %w", d.cfg.CName, err))
	}
	return d.fileGone(d.guard.Check())
}

// maxArgs keeps one INSERT under every dialect's limit on bound values.
const maxArgs = 30000

func (d *DB) insert(ctx context.Context, tx *stdsql.Tx, rows []any) error {
	if len(rows) == 0 {
		return nil
	}
	if d.table == "" {
		return stream.Fatal(fmt.Errorf("connector %q: no table (set key)", d.cfg.CName))
	}
	if d.apply {
		return d.applyRows(ctx, tx, rows)
	}
	maps := make([]map[string]any, len(rows))
	for i, r := range rows {
		m, err := fields.Of(r)
		if err != nil {
			return stream.Permanent(fmt.Errorf("connector %q: row %d: %w", d.cfg.CName, i, err))
		}
		maps[i] = m
	}
	cols, err := d.columnsFor(ctx, tx, maps[0])
	if err != nil {
		return err
	}
	args := make([]any, 0, len(maps)*len(cols))
	for _, m := range maps {
		for _, c := range cols {
			args = append(args, sqlValue(m[d.field(c)]))
		}
	}
	if err := d.writeRows(ctx, tx, cols, d.upsertKey, args); err != nil {
		return refused(fmt.Errorf("connector %q: insert into %s: %w", d.cfg.CName, d.table, err))
	}
	return nil
}

// field is the row field a column takes its value from.
func (d *DB) field(col string) string {
	if f, ok := d.fieldOf[col]; ok {
		return f
	}
	return col
}

// insertInto is the INSERT of n rows of cols, an upsert on key when key is
// not empty.
func (d *DB) insertInto(cols []string, n int, key []string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(d.quote(d.table))
	b.WriteString(" (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.quote(c))
	}
	b.WriteString(") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		d.binds(&b, i*len(cols), len(cols))
		b.WriteByte(')')
	}
	if len(key) > 0 {
		d.upsertClause(&b, cols, key)
	}
	return b.String()
}

// upsertClause turns the insert into an upsert on the upsert_key columns:
// the other columns take the new row's values.
func (d *DB) upsertClause(b *strings.Builder, cols, key []string) {
	var set []string
	for _, c := range cols {
		if slices.Contains(key, c) {
			continue
		}
		q := d.quote(c)
		switch d.dialect {
		case checkpoint.MySQL:
			set = append(set, q+" = VALUES("+q+")")
		default:
			set = append(set, q+" = excluded."+q)
		}
	}
	if d.dialect == checkpoint.MySQL {
		if len(set) == 0 {
			q := d.quote(key[0])
			set = append(set, q+" = "+q)
		}
		b.WriteString(" ON DUPLICATE KEY UPDATE " + strings.Join(set, ", "))
		return
	}
	keys := make([]string, len(key))
	for i, k := range key {
		keys[i] = d.quote(k)
	}
	b.WriteString(" ON CONFLICT (" + strings.Join(keys, ", ") + ")")
	if len(set) == 0 {
		b.WriteString(" DO NOTHING")
		return
	}
	b.WriteString(" DO UPDATE SET " + strings.Join(set, ", "))
}

// columnsFor fixes the insert columns on first use: the configured ones,
// else the table's, else (creating the table) the first row's fields.
func (d *DB) columnsFor(ctx context.Context, tx *stdsql.Tx, first map[string]any) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.columns != nil {
		if d.create {
			if err := d.createTable(ctx, tx, d.columns, first); err != nil {
				return nil, err
			}
		}
		return d.columns, nil
	}
	cols, err := d.tableColumns(ctx, tx)
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		if !d.create {
			return nil, stream.Fatal(fmt.Errorf("connector %q: table %s does not exist (create it, or set params.create: \"true\")", d.cfg.CName, d.table))
		}
		for k := range first {
			if validIdent(k) {
				cols = append(cols, k)
			}
		}
		slices.Sort(cols)
		if len(cols) == 0 {
			return nil, stream.Permanent(fmt.Errorf("connector %q: the first row has no fields to make columns of", d.cfg.CName))
		}
		if err := d.createTable(ctx, tx, cols, first); err != nil {
			return nil, err
		}
	}
	d.columns = cols
	return cols, nil
}

func (d *DB) createTable(ctx context.Context, tx *stdsql.Tx, cols []string, first map[string]any) error {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = d.quote(c)
		t := d.columnType(first[d.field(c)])
		if t == "TEXT" && d.dialect == checkpoint.MySQL && slices.Contains(d.upsertKey, c) {
			t = "VARCHAR(255)" // MySQL keys cannot be TEXT
		}
		if d.rowidKey(c, first) {
			t = "INTEGER"
		}
		if t != "" {
			defs[i] += " " + t
		}
	}
	if len(d.upsertKey) > 0 {
		keys := make([]string, len(d.upsertKey))
		for i, k := range d.upsertKey {
			keys[i] = d.quote(k)
		}
		defs = append(defs, "PRIMARY KEY ("+strings.Join(keys, ", ")+")")
	}
	q := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s)", d.quote(d.table), strings.Join(defs, ", "))
	if d.dialect == checkpoint.MySQL {
		// MySQL commits a transaction at any DDL statement, even one that
		// creates nothing, and runs the rest of it in autocommit mode: the
		// batch would no longer be atomic. Create the table apart, once.
		if d.mysqlCreated {
			return nil
		}
		if _, err := d.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("connector %q: create table %s: %w", d.cfg.CName, d.table, err)
		}
		d.mysqlCreated = true
		return nil
	}
	if _, err := tx.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("connector %q: create table %s: %w", d.cfg.CName, d.table, err)
	}
	return nil
}

// rowidKey reports whether col, created in SQLite, is declared INTEGER
// so that it is the table's rowid: mode apply's one key column, whose
// first value is a Go integer (a change of a database table's integer
// key, never NULL in mode apply). An upsert or delete by such a key then
// looks the row up in the table's own b-tree alone, where a key of no
// type is a second b-tree, an index, to search and keep (the CDC
// benchmark's changes take 1.4 to 1.8 µs of CPU each instead of 1.8 to
// 2.2, BenchmarkApplyChangesCreated). Such a column holds integers only:
// a later key that is not one (nor a text or a real that reads as one,
// stored as that integer) is refused by SQLite (datatype mismatch)
// instead of stored.
func (d *DB) rowidKey(col string, first map[string]any) bool {
	if d.dialect != checkpoint.SQLite || !d.apply || len(d.upsertKey) != 1 || d.upsertKey[0] != col {
		return false
	}
	switch first[d.field(col)].(type) {
	case int, int8, int16, int32, int64, uint8, uint16, uint32:
		return true
	}
	return false
}

// columnType is the column type for a first value; SQLite needs none.
func (d *DB) columnType(v any) string {
	if d.dialect == checkpoint.SQLite {
		return ""
	}
	switch v.(type) {
	case int, int8, int16, int32, int64, uint8, uint16, uint32:
		return "BIGINT"
	case float32, float64:
		if d.dialect == checkpoint.MySQL {
			return "DOUBLE"
		}
		return "DOUBLE PRECISION"
	case bool:
		return "BOOLEAN"
	case time.Time:
		if d.dialect == checkpoint.MySQL {
			return "DATETIME(6)"
		}
		return "TIMESTAMPTZ"
	}
	return "TEXT"
}

func (d *DB) tableColumns(ctx context.Context, tx *stdsql.Tx) ([]string, error) {
	var q string
	switch d.dialect {
	case checkpoint.SQLite:
		q = "SELECT name FROM pragma_table_info(?)"
	case checkpoint.MySQL:
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position"
	case checkpoint.Postgres:
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
	}
	cols, err := queryStrings(ctx, tx, q, d.table)
	if err != nil {
		return nil, fmt.Errorf("connector %q: read columns of %s: %w", d.cfg.CName, d.table, err)
	}
	return cols, nil
}

// queryStrings runs q, whose rows have one text column, and returns them.
func queryStrings(ctx context.Context, tx *stdsql.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Call is the Save and Load target for functions using this connector:
// with fmode Save it inserts args (a row or a []any of rows); with fmode
// Load it runs load_query with the row's fields and returns the result
// rows as []map[string]any.
func (d *DB) Call(ctx context.Context, c *kisflow.Connector, f kisflow.Flow, args any) (any, error) {
	fn := f.Function()
	switch fn.Mode() {
	case config.Save:
		rows, ok := args.([]any)
		if !ok {
			rows = []any{args}
		}
		return nil, d.Write(ctx, rows)
	case config.Load:
		return d.Load(ctx, args)
	}
	return nil, fmt.Errorf("connector %q: function %q has fmode %s; only Save and Load functions call it", d.cfg.CName, fn.Name(), fn.Mode())
}

// Load runs load_query with :field placeholders filled from row's fields.
func (d *DB) Load(ctx context.Context, row any) ([]map[string]any, error) {
	if d.loadQuery == "" {
		return nil, stream.Fatal(fmt.Errorf("connector %q: no params.load_query", d.cfg.CName))
	}
	m, err := fields.Of(row)
	if err != nil {
		return nil, stream.Permanent(err)
	}
	args := make([]any, len(d.loadArgs))
	for i, a := range d.loadArgs {
		v, ok := m[a]
		if !ok {
			return nil, stream.Permanent(fmt.Errorf("connector %q: load_query needs field %q, which the row lacks", d.cfg.CName, a))
		}
		args[i] = sqlValue(v)
	}
	rs, err := d.db.QueryContext(ctx, d.loadQuery, args...)
	if err != nil {
		return nil, classify(fmt.Errorf("connector %q: load: %w", d.cfg.CName, err))
	}
	defer rs.Close()
	return scanMaps(rs)
}

// sqlValue makes a value storable in every dialect: a map, a slice (other
// than bytes), an array or a struct (other than time.Time) becomes its
// JSON text, as in the row's JSON form, and a nil one NULL; a pointer is
// followed. What the drivers take themselves (scalars, strings, bytes,
// times, driver.Valuer) is returned as it is. The common types are told
// apart by a type switch; reflection looks only at the others.
func sqlValue(v any) any {
	switch v.(type) {
	case nil, string, []byte, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		float32, float64, time.Time, sqldriver.Valuer:
		return v
	case map[string]any, []any:
		return jsonText(v)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return sqlValue(rv.Elem().Interface())
	case reflect.Map:
		if rv.IsNil() {
			return nil
		}
		return jsonText(v)
	case reflect.Slice:
		if rv.IsNil() {
			return nil
		}
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return rv.Bytes() // a named byte slice (json.RawMessage): bytes
		}
		return jsonText(v)
	case reflect.Array, reflect.Struct:
		return jsonText(v)
	}
	return v
}

// jsonText is v's JSON text; a value JSON cannot encode (a channel, a
// function, NaN) is left to the driver, which refuses it as a conversion
// error (see classify).
func jsonText(v any) any {
	b, err := gojson.Marshal(v)
	if err != nil {
		return v
	}
	return string(b)
}

// Check verifies, for kisflow dry-run, that the table exists (or that
// params.create lets the first write create it) and that it has the
// configured columns, poll_column and upsert_key columns. It only reads
// the database's catalogue.
func (d *DB) Check(ctx context.Context, _ config.ConnUse) error {
	if d.table == "" {
		return nil
	}
	tx, err := d.db.BeginTx(ctx, &stdsql.TxOptions{ReadOnly: d.dialect != checkpoint.SQLite})
	if err != nil {
		return classify(err)
	}
	defer func() { _ = tx.Rollback() }() // read only
	cols, err := d.tableColumns(ctx, tx)
	if err != nil {
		return classify(err)
	}
	if len(cols) == 0 {
		if d.create {
			return nil
		}
		return stream.Fatal(fmt.Errorf("table %s does not exist (create it, or set params.create: \"true\")", d.table))
	}
	var missing []string
	for _, c := range slices.Concat(d.columns, d.upsertKey, []string{d.pollCol}) {
		if c != "" && !slices.ContainsFunc(cols, func(have string) bool { return strings.EqualFold(have, c) }) && !slices.Contains(missing, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return stream.Fatal(fmt.Errorf("table %s has no column %s (it has %s)", d.table, strings.Join(missing, ", "), strings.Join(cols, ", ")))
	}
	return nil
}
