// Package pgcdc provides the connector type postgres_cdc: change data
// capture from PostgreSQL through logical replication (the pgoutput
// plugin, read with pgx's replication protocol and pglogrepl's decoder).
//
// A source first reads a consistent snapshot of its tables (the snapshot
// exported when the replication slot is created, read in one REPEATABLE
// READ transaction), then the change stream from the slot's consistent
// point. Each row is a map of the table's columns (the new image; the old
// one for a delete) plus _op (insert, update or delete), _table
// (schema.table) and _lsn; an update whose key changed, or on a table with
// REPLICA IDENTITY FULL, also carries _before, the old image. Snapshot rows
// are inserts whose _lsn is the snapshot's.
//
// The snapshot is read table by table in primary key order; a run stopped
// during it resumes after the last row delivered, from a temporary slot's
// snapshot, skipping the changes that snapshot already holds (resume.go).
//
// The position is an LSN: the runtime stores it (in its checkpoint store, or
// in an exactly-once sink's table with the rows) and the source resumes from
// it; only a position the runtime committed is acknowledged to the server
// (the slot's flush position), so the server keeps every change not yet
// committed. Positions inside a transaction (LSN:n, the first n changes of
// the transaction that commits at LSN) let a batch end anywhere.
//
// Its params are declared in Spec (`kisflow list postgres_cdc`).
package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "postgres_cdc"

// Install registers the postgres_cdc connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	Slot              string        `param:"slot" required:"true" doc:"the logical replication slot (pgoutput) the source reads; it keeps the server's WAL until the source has committed it: drop it when the flow is retired" example:"kisflow_orders"`
	Publication       string        `param:"publication" required:"true" doc:"the publication naming the tables whose changes are sent" example:"kisflow_orders"`
	Snapshot          bool          `param:"snapshot" default:"true" doc:"read the tables' rows first, from the snapshot of the slot's creation, each table in its primary key's order (a run stopped during it resumes after its last row delivered), then the changes; false: the changes only"`
	CreateSlot        bool          `param:"create_slot" default:"true" doc:"create the slot when it does not exist"`
	CreatePublication bool          `param:"create_publication" default:"true" doc:"create the publication (FOR TABLE the key's tables) when it does not exist"`
	StatusInterval    time.Duration `param:"status_interval" default:"10s" min:"100ms" doc:"how often the source reports its committed position to the server (a standby status update)"`
	Timeout           time.Duration `param:"timeout" default:"10s" min:"1ms" doc:"connect, and each query outside the stream"`
}

// Spec declares the postgres_cdc params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "PostgreSQL change data capture through logical replication (pgoutput): a snapshot of the tables, then every insert, update and delete, resumed from the committed LSN")
	s.Addrs, s.Key = "the DSN (a postgres:// URL or key=value pairs) of a server with wal_level=logical, as a user with the REPLICATION attribute", "the table, or a comma-separated list ([schema.]table)"
	s.BatchSize = driver.ChangeBatchSize
	return s
}()

// CDC is the driver: a source of a database's changes. Each flow reading it
// opens its own replication connection (one slot, one reader).
type CDC struct {
	cfg    *config.Conn
	p      params
	dsn    string
	tables []table
}

// table is a captured table.
type table struct {
	schema, name string
}

// String is schema.name, as _table holds it.
func (t table) String() string { return t.schema + "." + t.name }

// quoted is the table's qualified name, quoted for SQL.
func (t table) quoted() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	d := &CDC{cfg: cfg, p: p, dsn: strings.TrimSpace(cfg.Addrs)}
	if d.dsn == "" {
		return nil, fmt.Errorf("postgres_cdc connector %q: addrs must be the DSN of the database (postgres://user@host:5432/db)", cfg.CName)
	}
	if _, err := pgconn.ParseConfig(d.dsn); err != nil {
		return nil, fmt.Errorf("postgres_cdc connector %q: bad DSN in addrs: %w", cfg.CName, err)
	}
	for _, name := range strings.Split(cfg.Key, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		t := table{schema: "public", name: name}
		if s, n, ok := strings.Cut(name, "."); ok {
			t = table{schema: s, name: n}
		}
		if !ident.MatchString(t.schema) || !ident.MatchString(t.name) {
			return nil, fmt.Errorf("postgres_cdc connector %q: table %q is not a plain [schema.]name", cfg.CName, name)
		}
		d.tables = append(d.tables, t)
	}
	if len(d.tables) == 0 {
		return nil, fmt.Errorf("postgres_cdc connector %q: key must name the table (or a comma-separated list of tables) to capture", cfg.CName)
	}
	for _, n := range []struct{ param, v string }{{"slot", p.Slot}, {"publication", p.Publication}} {
		if !regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(n.v) {
			return nil, fmt.Errorf("postgres_cdc connector %q: %s %q: use lower-case letters, digits and _ only", cfg.CName, n.param, n.v)
		}
	}
	return d, nil
}

// Start checks that the server is set up for logical replication and that
// the tables exist; it creates nothing (a source creates the publication
// and the slot when it first connects). A server that cannot be reached is
// an outage: the source connects again when it reads.
func (d *CDC) Start(ctx context.Context) error {
	conn, err := d.plain(ctx)
	if err != nil {
		if stream.IsFatal(err) {
			return err
		}
		return nil // an outage: the source prepares when it connects
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return d.prepare(ctx, conn, false)
}

// Check verifies, for kisflow dry-run, that the server has wal_level =
// logical, that the tables exist, and that the publication and the slot
// exist or may be created, without creating anything.
func (d *CDC) Check(ctx context.Context, _ config.ConnUse) error {
	conn, err := d.plain(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := d.prepare(ctx, conn, false); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var slots, repl int
	if err := conn.QueryRow(qctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", d.p.Slot).Scan(&slots); err != nil {
		return d.wrap("look up slot", err)
	}
	if slots == 0 && !d.p.CreateSlot {
		return stream.Fatal(fmt.Errorf("replication slot %s does not exist (and create_slot is false)", d.p.Slot))
	}
	if err := conn.QueryRow(qctx, "SELECT count(*) FROM pg_roles WHERE rolname = current_user AND (rolreplication OR rolsuper)").Scan(&repl); err != nil {
		return d.wrap("look up the user's attributes", err)
	}
	if repl == 0 {
		return stream.Fatal(fmt.Errorf("the user has no REPLICATION attribute (ALTER ROLE ... WITH REPLICATION)"))
	}
	return nil
}

// Close does nothing: each source closes its own connections.
func (d *CDC) Close(context.Context) error { return nil }

// Resumable reports that the source resumes from the LSN the runtime
// stores.
func (d *CDC) Resumable() bool { return true }

// Identity names the source by its server, database and slot (one slot,
// one stream), so that the flow keeps its position when the DSN's other
// settings or the table list change.
func (d *CDC) Identity() string {
	cfg, err := pgconn.ParseConfig(d.dsn)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s:%d/%s/%s", cfg.Host, cfg.Port, cfg.Database, d.p.Slot)
}

// connect opens a connection: a replication connection (replication =
// database) or a plain one.
func (d *CDC) connect(ctx context.Context, replication bool) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(d.dsn)
	if err != nil {
		return nil, stream.Fatal(err)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	cfg.RuntimeParams["application_name"] = "kisflow " + d.p.Slot
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > d.p.Timeout {
		cfg.ConnectTimeout = d.p.Timeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classify(err)
	}
	return conn, nil
}

// prepare checks wal_level and the tables, and creates the publication
// (when create).
func (d *CDC) prepare(ctx context.Context, conn *pgx.Conn, create bool) error {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var lvl string
	if err := conn.QueryRow(qctx, "SHOW wal_level").Scan(&lvl); err != nil {
		return d.wrap("read wal_level", err)
	}
	if lvl != "logical" {
		return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: the server's wal_level is %s; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)", d.cfg.CName, lvl))
	}
	for _, t := range d.tables {
		var ok bool
		if err := conn.QueryRow(qctx, "SELECT to_regclass($1) IS NOT NULL", t.quoted()).Scan(&ok); err != nil {
			return d.wrap("look up table "+t.String(), err)
		}
		if !ok {
			return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: table %s does not exist", d.cfg.CName, t))
		}
	}
	var n int
	if err := conn.QueryRow(qctx, "SELECT count(*) FROM pg_publication WHERE pubname = $1", d.p.Publication).Scan(&n); err != nil {
		return d.wrap("look up publication", err)
	}
	if n > 0 {
		return nil
	}
	if !d.p.CreatePublication {
		return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: publication %s does not exist (CREATE PUBLICATION %s FOR TABLE ..., or set params.create_publication: \"true\")", d.cfg.CName, d.p.Publication, d.p.Publication))
	}
	if !create {
		return nil
	}
	names := make([]string, len(d.tables))
	for i, t := range d.tables {
		names[i] = t.quoted()
	}
	q := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgx.Identifier{d.p.Publication}.Sanitize(), strings.Join(names, ", "))
	if _, err := conn.Exec(qctx, q); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42710" { // created meanwhile by another process
			return nil
		}
		return d.wrap("create publication", err)
	}
	return nil
}

// wrap names the connector and what failed, and marks the error.
func (d *CDC) wrap(what string, err error) error {
	return classify(fmt.Errorf("postgres_cdc connector %q: %s: %w", d.cfg.CName, what, err))
}

// classify marks configuration errors (refused credentials, missing
// privileges, unknown objects) fatal; everything else (a lost connection,
// a server restarting) is an outage, retried.
func classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "28"), // invalid authorization
			pe.Code == "42501", // insufficient privilege
			pe.Code == "3D000", // no such database
			pe.Code == "55000" && strings.Contains(pe.Message, "wal_level"), // object not in prerequisite state
			pe.Code == "42704": // undefined object (publication, slot)
			return stream.Fatal(err)
		}
	}
	return err
}
