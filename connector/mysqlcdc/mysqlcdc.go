// Package mysqlcdc provides the connector type mysql_cdc: change data
// capture from MySQL or MariaDB through the binary log (row format), read
// with go-mysql's replication client as a replica would.
//
// A source first reads a consistent snapshot of its tables (START
// TRANSACTION WITH CONSISTENT SNAPSHOT; on MariaDB the binlog position of
// that very snapshot, Binlog_snapshot_file/position), then the binlog from
// there. Each row is a map of the table's columns (the new image; the old
// one for a delete) plus _op (insert, update or delete), _table
// (database.table), _gtid (the transaction's GTID) and _pos (the binlog
// file:offset where the transaction starts); an update also carries
// _before, the old image. Snapshot rows are inserts whose _gtid and _pos
// are the snapshot's. On MariaDB the snapshot is read table by table in
// primary key order, and a run stopped during it resumes after the last
// row delivered, from a new snapshot, skipping the changes that snapshot
// already holds (resume.go).
//
// The position is a GTID set (positions: gtid, the default) or a binlog
// file and offset (positions: file): the runtime stores it (in its
// checkpoint store, or in an exactly-once sink's table with the rows) and
// the source resumes from it. A position inside a transaction (POS+n: the
// first n changes of the transaction after POS) lets a batch end anywhere.
//
// Its params are declared in Spec (`kisflow list mysql_cdc`).
package mysqlcdc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "mysql_cdc"

// Install registers the mysql_cdc connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	ServerID  int           `param:"server_id" required:"true" min:"1" doc:"the replica server id the source registers with (unique among the server's replicas and other readers, and not the server's own)" example:"4001"`
	Snapshot  bool          `param:"snapshot" default:"true" doc:"read the tables' rows first, from a consistent snapshot, each table in its primary key's order on MariaDB (a run stopped during it resumes after its last row delivered), then the binlog from that snapshot's position; false: the changes only, from the binlog's end when the flow first runs"`
	Positions string        `param:"positions" default:"gtid" enum:"gtid|file" doc:"how positions are kept: gtid (a GTID set: MariaDB domain-server-seq, or MySQL with gtid_mode=ON) or file (binlog file:offset, for servers without GTIDs)"`
	Heartbeat time.Duration `param:"heartbeat" default:"5s" min:"100ms" doc:"how often the server sends a heartbeat when it has no events; a connection silent for three heartbeats is taken as lost"`
	Timeout   time.Duration `param:"timeout" default:"10s" min:"1ms" doc:"connect, and each query outside the stream"`
}

// Spec declares the mysql_cdc params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "MySQL/MariaDB change data capture from the binary log (row format): a snapshot of the tables, then every insert, update and delete, resumed from the committed GTID set or binlog file:offset")
	s.Addrs, s.Key = "the DSN (user:password@tcp(host:port)/database) of a server with log_bin, binlog_format=ROW and binlog_row_image=FULL, as a user with REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR on MariaDB) and SELECT on the tables", "the table, or a comma-separated list ([database.]table; the DSN's database when none is given)"
	s.BatchSize = driver.ChangeBatchSize
	return s
}()

// CDC is the driver: a source of a database's changes. Each flow reading it
// opens its own binlog connection.
type CDC struct {
	cfg    *config.Conn
	p      params
	dsn    *gomysql.Config
	tables []table
	byName map[string]bool
}

// table is a captured table.
type table struct {
	db, name string
}

// String is db.name, as _table holds it.
func (t table) String() string { return t.db + "." + t.name }

// quoted is the table's qualified name, quoted for SQL.
func (t table) quoted() string { return "`" + t.db + "`.`" + t.name + "`" }

var ident = regexp.MustCompile(`^[A-Za-z0-9_$]+$`)

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	addrs := strings.TrimSpace(cfg.Addrs)
	if addrs == "" {
		return nil, fmt.Errorf("mysql_cdc connector %q: addrs must be the DSN of the database (user:password@tcp(host:3306)/db)", cfg.CName)
	}
	dsn, err := gomysql.ParseDSN(addrs)
	if err != nil {
		return nil, fmt.Errorf("mysql_cdc connector %q: bad DSN in addrs (user:password@tcp(host:3306)/db): %w", cfg.CName, err)
	}
	if dsn.Net != "tcp" {
		return nil, fmt.Errorf("mysql_cdc connector %q: the DSN must name a TCP address (tcp(host:port)), not %s: the binlog is read over TCP", cfg.CName, dsn.Net)
	}
	if p.ServerID > 1<<32-1 {
		return nil, fmt.Errorf("mysql_cdc connector %q: server_id %d is above 4294967295", cfg.CName, p.ServerID)
	}
	d := &CDC{cfg: cfg, p: p, dsn: dsn, byName: map[string]bool{}}
	for _, name := range strings.Split(cfg.Key, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		t := table{db: dsn.DBName, name: name}
		if db, n, ok := strings.Cut(name, "."); ok {
			t = table{db: db, name: n}
		}
		if t.db == "" {
			return nil, fmt.Errorf("mysql_cdc connector %q: table %q names no database and the DSN has none: write database.table", cfg.CName, name)
		}
		if !ident.MatchString(t.db) || !ident.MatchString(t.name) {
			return nil, fmt.Errorf("mysql_cdc connector %q: table %q is not a plain [database.]name", cfg.CName, name)
		}
		d.tables = append(d.tables, t)
		d.byName[t.String()] = true
	}
	if len(d.tables) == 0 {
		return nil, fmt.Errorf("mysql_cdc connector %q: key must name the table (or a comma-separated list of tables) to capture", cfg.CName)
	}
	return d, nil
}

// Start checks that the server writes a row-format binlog and that the
// tables exist. A server that cannot be reached is an outage: the source
// connects again when it reads.
func (d *CDC) Start(ctx context.Context) error {
	db, err := d.open()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := d.prepare(ctx, db); err != nil && stream.IsFatal(err) {
		return err
	}
	return nil
}

// Check verifies, for kisflow dry-run, that the server writes a full
// row-format binlog, that the tables exist and that the user may read the
// binlog's position.
func (d *CDC) Check(ctx context.Context, _ config.ConnUse) error {
	db, err := d.open()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := d.prepare(ctx, db); err != nil {
		return err
	}
	_, _, err = d.head(ctx, db)
	return err
}

// Close does nothing: each source closes its own connections.
func (d *CDC) Close(context.Context) error { return nil }

// Resumable reports that the source resumes from the position the runtime
// stores.
func (d *CDC) Resumable() bool { return true }

// Identity names the source by its server and server_id (one reader, one
// stream), so that the flow keeps its position when the DSN's other
// settings or the table list change.
func (d *CDC) Identity() string { return fmt.Sprintf("%s/%d", d.dsn.Addr, d.p.ServerID) }

// open opens a pool for queries and the snapshot (it connects lazily).
func (d *CDC) open() (*sql.DB, error) {
	c := d.dsn.Clone()
	if c.Timeout == 0 || c.Timeout > d.p.Timeout {
		c.Timeout = d.p.Timeout
	}
	conn, err := gomysql.NewConnector(c)
	if err != nil {
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: %w", d.cfg.CName, err))
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(2)
	return db, nil
}

// mariaDB reports whether the server is MariaDB.
func (d *CDC) mariaDB(ctx context.Context, db *sql.DB) (bool, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return false, d.wrap("read the server's version", err)
	}
	return strings.Contains(strings.ToLower(v), "mariadb"), nil
}

// prepare checks the binlog settings and the tables.
func (d *CDC) prepare(ctx context.Context, db *sql.DB) error {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var logBin int
	var format, image string
	if err := db.QueryRowContext(qctx, "SELECT @@log_bin, @@binlog_format, @@binlog_row_image").Scan(&logBin, &format, &image); err != nil {
		return d.wrap("read the binlog settings", err)
	}
	if logBin == 0 {
		return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the server writes no binary log: start it with log_bin (and binlog_format=ROW, server_id)", d.cfg.CName))
	}
	if !strings.EqualFold(format, "ROW") {
		return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the server's binlog_format is %s; change data capture needs ROW (SET GLOBAL binlog_format = 'ROW', and in the server's configuration)", d.cfg.CName, format))
	}
	if !strings.EqualFold(image, "FULL") {
		return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the server's binlog_row_image is %s; change data capture needs FULL images (SET GLOBAL binlog_row_image = 'FULL')", d.cfg.CName, image))
	}
	for _, t := range d.tables {
		if _, err := d.columns(qctx, db, t); err != nil {
			return err
		}
	}
	return nil
}

// columns lists a table's columns in order.
func (d *CDC) columns(ctx context.Context, db *sql.DB, t table) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", t.db, t.name)
	if err != nil {
		return nil, d.wrap("look up table "+t.String(), err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, d.wrap("look up table "+t.String(), err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, d.wrap("look up table "+t.String(), err)
	}
	if len(cols) == 0 {
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: table %s does not exist (or the user may not see it)", d.cfg.CName, t))
	}
	return cols, nil
}

// head reads the binlog's end: its GTID set (gtid_binlog_pos on MariaDB,
// gtid_executed on MySQL) and its file:offset (SHOW MASTER STATUS).
func (d *CDC) head(ctx context.Context, db *sql.DB) (gtid string, file position, err error) {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	maria, err := d.mariaDB(qctx, db)
	if err != nil {
		return "", file, err
	}
	rows, err := db.QueryContext(qctx, "SHOW MASTER STATUS")
	if err != nil {
		return "", file, d.wrap("read the binlog position (SHOW MASTER STATUS; the user needs REPLICATION CLIENT, BINLOG MONITOR on MariaDB)", err)
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	var name string
	var off uint32
	vals[0], vals[1] = &name, &off
	for i := 2; i < len(vals); i++ {
		vals[i] = new(sql.RawBytes)
	}
	found := rows.Next()
	if found {
		err = rows.Scan(vals...)
	}
	rows.Close()
	if err != nil || !found {
		return "", file, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: SHOW MASTER STATUS gave no position (err %v): is log_bin on?", d.cfg.CName, err))
	}
	file = position{file: name, offset: off}
	q := "SELECT @@gtid_binlog_pos"
	if !maria {
		q = "SELECT @@gtid_executed"
	}
	if d.p.Positions == "gtid" {
		if err := db.QueryRowContext(qctx, q).Scan(&gtid); err != nil {
			return "", file, d.wrap("read the GTID position", err)
		}
		if !maria {
			var mode string
			if err := db.QueryRowContext(qctx, "SELECT @@gtid_mode").Scan(&mode); err == nil && !strings.EqualFold(mode, "ON") {
				return "", file, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the server's gtid_mode is %s: set params.positions: file (or turn GTIDs on)", d.cfg.CName, mode))
			}
		}
	}
	return strings.ReplaceAll(gtid, "\n", ""), file, nil
}

// wrap names the connector and what failed, and marks the error.
func (d *CDC) wrap(what string, err error) error {
	return classify(fmt.Errorf("mysql_cdc connector %q: %s: %w", d.cfg.CName, what, err))
}

// classify marks configuration errors (refused credentials, missing
// privileges, unknown databases or tables, a binlog purged) fatal;
// everything else (a lost connection, a server restarting) is an outage,
// retried.
func classify(err error) error {
	if errors.Is(err, stream.ErrFatal) {
		return err // explained already
	}
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1045, // access denied
			1044, // access denied to the database
			1142, // command denied
			1227, // needs a privilege
			1049, // unknown database
			1146: // no such table
			return stream.Fatal(err)
		}
	}
	var ge *gmysql.MyError
	if errors.As(err, &ge) {
		switch ge.Code {
		case 1236: // the binlog at the position is gone
			return stream.Fatal(fmt.Errorf("%w (the server no longer keeps the binlog at the flow's position, purged by its retention: rebuild the replica from a snapshot: drop the flow's committed position and the replica's rows, then run again)", err))
		case 1045, 1044, 1142, 1227:
			return stream.Fatal(err)
		}
	}
	return err
}

// Positions tells, for kisflow positions, the binlog's head in the kind of
// position the connector keeps, and with file positions the lag in bytes
// when the committed position is in the head's file (-1 otherwise).
func (d *CDC) Positions(ctx context.Context, _ stream.SourceOptions, committed string) (stream.Positions, error) {
	p := stream.Positions{Lag: -1, Unit: "bytes"}
	db, err := d.open()
	if err != nil {
		return p, err
	}
	defer db.Close()
	set, file, err := d.head(ctx, db)
	if err != nil {
		return p, err
	}
	if d.p.Positions == "gtid" {
		p.Head = position{gtid: true, set: set}.String()
		return p, nil
	}
	p.Head = file.String()
	if c, err := parsePosition(committed); err == nil && committed != "" && !c.gtid && !c.snapshot && c.file == file.file && c.offset <= file.offset {
		p.Lag = int64(file.offset - c.offset)
	}
	return p, nil
}

// SeekPosition returns the position for the runtime to store so that the
// next run streams from to: a position of the connector's kind, the
// binlog's end (latest) or its oldest file still kept (earliest). A run
// from a position so set reads no snapshot.
// It is refused while a reader with the connector's server_id is
// connected to the server (a run of the flow).
//
// A position given (to.Position) must be of the connector's kind, parse
// as the server's GTID set (or file:NAME:OFFSET), and not lie beyond the
// server's binlog head: otherwise it is refused (stream.ErrBadPosition).
func (d *CDC) SeekPosition(ctx context.Context, _ stream.SourceOptions, to stream.Bound) (string, error) {
	var p position
	if to.Kind == stream.AtPosition {
		var err error
		if p, err = d.ownPosition(to.Position); err != nil {
			return "", stream.BadPosition(err)
		}
	}
	db, err := d.open()
	if err != nil {
		return "", err
	}
	defer db.Close()
	if err := d.notReading(ctx, db); err != nil {
		return "", err
	}
	if to.Kind != stream.AtPosition {
		return d.seek(ctx, db, to)
	}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	maria, err := d.mariaDB(qctx, db)
	if err != nil {
		return "", err
	}
	if p.gtid {
		if _, err := newGTIDSet(maria, p.set); err != nil {
			return "", stream.BadPosition(fmt.Errorf("mysql_cdc connector %q: position %s: not a GTID set of this server (%s): %w", d.cfg.CName, to.Position, map[bool]string{true: "MariaDB: domain-server-seq,...", false: "MySQL: uuid:1-n,..."}[maria], err))
		}
	}
	head, ahead, err := d.beyondHead(ctx, db, maria, p)
	if err != nil {
		return "", err
	}
	if ahead {
		return "", stream.BadPosition(fmt.Errorf("mysql_cdc connector %q: position %s is ahead of the server's binlog (its head is %s): the server never wrote it; give a position at or before the head (kisflow positions shows it)", d.cfg.CName, to.Position, head))
	}
	return p.String(), nil
}

// beyondHead reports whether p lies beyond the server's binlog head (a
// GTID the server has not written, an offset past its last file's end),
// and the head.
func (d *CDC) beyondHead(ctx context.Context, db *sql.DB, maria bool, p position) (string, bool, error) {
	set, file, err := d.head(ctx, db)
	if err != nil {
		return "", false, err
	}
	if !p.gtid {
		return file.String(), p.file > file.file || (p.file == file.file && p.offset > file.offset), nil
	}
	h, err := newGTIDSet(maria, set)
	if err != nil {
		return "", false, d.wrap("parse the server's GTID position "+set, err)
	}
	return position{gtid: true, set: set}.String(), !h.contains(p.set), nil
}

// explainUnreadable turns the server's refusal to stream from at (error
// 1236) into what happened: at lies beyond the server's head (a position
// set ahead, a server reset or rebuilt), or the binlog there was purged.
// Other errors are returned as they are.
func (d *CDC) explainUnreadable(ctx context.Context, db *sql.DB, maria bool, at position, err error) error {
	var ge *gmysql.MyError
	if !errors.As(err, &ge) || ge.Code != 1236 || db == nil {
		return err
	}
	head, ahead, herr := d.beyondHead(ctx, db, maria, at.start())
	if herr != nil || !ahead {
		return err
	}
	return stream.Fatal(fmt.Errorf("%w (the flow's position %s is ahead of the server's binlog, whose head is %s: the server never wrote it: the position was set beyond the head, or the server was reset or rebuilt since. Move the flow's position to one the server has (kisflow positions set FLOW --latest, or --to a position at or before the head), and rebuild the replica if the server lost changes)", ge, at.start(), head))
}

// Seeks says what a mysql_cdc source can start and stop at: positions
// of the kind it keeps (params.positions), the binlog's oldest file kept
// (earliest) or its end (latest); a stop also at a time (the binlog's
// timestamps, to the second). The binlog has no index by time to start
// at one.
func (d *CDC) Seeks() stream.SeekSupport {
	return stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition, stream.AtTime},
		Form: "gtid:SET or file:NAME:OFFSET, as params.positions keeps them (kisflow positions shows them): a start reads the transactions after it; " +
			"a stop ends before the first transaction not in the GTID set, or starting at or after the offset; earliest is the oldest binlog file kept (no snapshot)",
	}
}

// ownPosition parses a position given by a user, which must be of the
// kind the connector keeps.
func (d *CDC) ownPosition(s string) (position, error) {
	p, err := parsePosition(s)
	if err != nil {
		return p, err
	}
	if p.gtid != (d.p.Positions == "gtid") || s == "" {
		return p, fmt.Errorf("mysql_cdc connector %q keeps %s positions (params.positions): give gtid:SET or file:NAME:OFFSET accordingly, not %q", d.cfg.CName, d.p.Positions, s)
	}
	return p, nil
}

// notReading refuses while a reader with the connector's server_id is
// registered with the server (SHOW SLAVE HOSTS); a server that does not
// tell (the user lacks the privilege) is taken at its word.
func (d *CDC) notReading(ctx context.Context, db *sql.DB) error {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	rows, err := db.QueryContext(qctx, "SHOW SLAVE HOSTS")
	if err != nil {
		return nil
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]any, len(cols))
		var id int64
		vals[0] = &id
		for i := 1; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if rows.Scan(vals...) == nil && id == int64(d.p.ServerID) {
			return fmt.Errorf("mysql_cdc connector %q: a reader with server_id %d is connected to the server (SHOW SLAVE HOSTS): a run of the flow reads the binlog; stop it first", d.cfg.CName, d.p.ServerID)
		}
	}
	return nil
}

// seek returns the position of to: the binlog's end (latest) or its
// oldest file still kept (earliest).
func (d *CDC) seek(ctx context.Context, db *sql.DB, to stream.Bound) (string, error) {
	gtid := d.p.Positions == "gtid"
	switch to.Kind {
	case stream.Latest, stream.Earliest:
	default:
		return "", stream.Fatal(fmt.Errorf("mysql_cdc connector %q cannot seek to %s: the binlog has no index by time; use {position: P}, earliest or latest", d.cfg.CName, to))
	}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	if to.Kind == stream.Latest {
		set, file, err := d.head(qctx, db)
		if err != nil {
			return "", err
		}
		if gtid {
			return position{gtid: true, set: set}.String(), nil
		}
		return file.String(), nil
	}
	rows, err := db.QueryContext(qctx, "SHOW BINARY LOGS")
	if err != nil {
		return "", d.wrap("list the binlog files (SHOW BINARY LOGS)", err)
	}
	var first string
	if rows.Next() {
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		vals[0] = &first
		for i := 1; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		err = rows.Scan(vals...)
	}
	rows.Close()
	if err != nil || first == "" {
		return "", stream.Fatal(fmt.Errorf("mysql_cdc connector %q: SHOW BINARY LOGS lists no file (err %v): is log_bin on?", d.cfg.CName, err))
	}
	if !gtid {
		return position{file: first, offset: 4}.String(), nil
	}
	maria, err := d.mariaDB(qctx, db)
	if err != nil {
		return "", err
	}
	var set sql.NullString
	q, args := "SELECT BINLOG_GTID_POS(?, 4)", []any{first}
	if !maria {
		q, args = "SELECT @@gtid_purged", nil
	}
	if err := db.QueryRowContext(qctx, q, args...).Scan(&set); err != nil {
		return "", d.wrap("read the GTID position of the oldest binlog", err)
	}
	return position{gtid: true, set: strings.ReplaceAll(set.String, "\n", "")}.String(), nil
}
