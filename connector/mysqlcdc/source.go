package mysqlcdc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"

	"github.com/kisflow-go/kisflow/internal/cdcsnap"

	"github.com/kisflow-go/kisflow/stream"
)

// position is where the stream stands after a message:
//
//	gtid:SET            every transaction in SET is delivered; the
//	                    stream goes on after SET
//	file:NAME:OFFSET    every transaction before OFFSET of binlog NAME is
//	                    delivered
//	POS+n               the first n changes of the transaction right after
//	                    POS (one of the two above)
//	snapshot:POS+n      the snapshot was being read (n rows); the stream
//	                    starts at POS after it
//
// followed, on MariaDB, in the snapshot and in the stream until it passes
// the last of their points, by a space and the snapshot's key ranges as
// JSON (see resume.go): in the snapshot with the table being read and its
// last key delivered, where a resumed snapshot goes on. A snapshot
// position without them is read again from its first row.
type position struct {
	gtid     bool
	set      string // gtid: a GTID set (MariaDB domain-server-seq,...; MySQL uuid:1-n,...)
	file     string
	offset   uint32
	n        int
	snapshot bool
	rs       *cdcsnap.Ranges // the snapshot's key ranges (nil: none; every change counts)
	t        int             // snapshot: the table being read
	k        []string        // snapshot: the last key of table t delivered (nil: none)
}

func (p position) String() string {
	var b strings.Builder
	if p.snapshot {
		b.WriteString("snapshot:")
	}
	if p.gtid {
		b.WriteString("gtid:" + p.set)
	} else {
		fmt.Fprintf(&b, "file:%s:%d", p.file, p.offset)
	}
	if p.n > 0 {
		fmt.Fprintf(&b, "+%d", p.n)
	}
	if p.rs != nil {
		b.WriteByte(' ')
		b.Write(p.rs.AppendJSON(nil, p.snapshot, p.t, p.k))
	}
	return b.String()
}

// start is the position without its count and ranges: where the stream
// restarts.
func (p position) start() position {
	p.n, p.snapshot, p.rs, p.t, p.k = 0, false, nil, 0, nil
	return p
}

func parsePosition(s string) (position, error) {
	var p position
	if s == "" {
		return p, nil
	}
	bad := func(why string) (position, error) {
		return p, fmt.Errorf("bad position %q: %s (gtid:SET, file:NAME:OFFSET, either with +N)", s, why)
	}
	s, state, hasState := strings.Cut(s, " ")
	if hasState {
		rs, t, k, err := cdcsnap.Parse(binlogCodec, state)
		if err != nil {
			return bad("the snapshot's key ranges: " + err.Error())
		}
		p.rs, p.t, p.k = rs, t, k
	}
	rest, snap := strings.CutPrefix(s, "snapshot:")
	p.snapshot = snap
	if i := strings.LastIndexByte(rest, '+'); i >= 0 {
		n, err := strconv.Atoi(rest[i+1:])
		if err != nil || n < 0 {
			return bad("the count after + is not a number")
		}
		p.n, rest = n, rest[:i]
	}
	switch {
	case strings.HasPrefix(rest, "gtid:"):
		p.gtid, p.set = true, strings.TrimPrefix(rest, "gtid:")
	case strings.HasPrefix(rest, "file:"):
		f, off, ok := strings.Cut(strings.TrimPrefix(rest, "file:"), ":")
		o, err := strconv.ParseUint(off, 10, 32)
		if !ok || f == "" || err != nil {
			return bad("want file:NAME:OFFSET")
		}
		p.file, p.offset = f, uint32(o)
	default:
		return bad("unknown kind")
	}
	return p, nil
}

// gtidSet is the GTID set after the transactions seen: for MariaDB the
// last GTID of each domain (as gtid_binlog_pos), for MySQL a set of
// intervals.
type gtidSet struct {
	maria   bool
	domains map[string]string // domain -> domain-server-seq
	mysql   gmysql.GTIDSet
}

func newGTIDSet(maria bool, s string) (*gtidSet, error) {
	g := &gtidSet{maria: maria, domains: map[string]string{}}
	if !maria {
		set, err := gmysql.ParseMysqlGTIDSet(s)
		if err != nil {
			return nil, err
		}
		g.mysql = set
		return g, nil
	}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			if err := g.update(part); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

func (g *gtidSet) update(gtid string) error {
	if !g.maria {
		return g.mysql.Update(gtid)
	}
	if _, err := gmysql.ParseMariadbGTID(gtid); err != nil {
		return err
	}
	dom, _, _ := strings.Cut(gtid, "-")
	g.domains[dom] = gtid
	return nil
}

// contains reports whether every transaction of set (in the server's
// notation) is in g.
func (g *gtidSet) contains(set string) bool {
	if !g.maria {
		o, err := gmysql.ParseMysqlGTIDSet(set)
		return err == nil && g.mysql.Contain(o)
	}
	for _, part := range strings.Split(set, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		dom, _, _ := strings.Cut(part, "-")
		if mine, ok := g.domains[dom]; !ok || !covers(true, mine, part) {
			return false
		}
	}
	return true
}

// covers reports whether the transaction gtid is in set: MariaDB, the
// last GTID of each domain (a transaction of a domain up to its sequence
// number); MySQL, an interval set.
func covers(maria bool, set, gtid string) bool {
	if !maria {
		s, err1 := gmysql.ParseMysqlGTIDSet(set)
		g, err2 := gmysql.ParseMysqlGTIDSet(gtid)
		return err1 == nil && err2 == nil && s.Contain(g)
	}
	g, err := gmysql.ParseMariadbGTID(gtid)
	if err != nil {
		return false
	}
	for _, part := range strings.Split(set, ",") {
		if p, err := gmysql.ParseMariadbGTID(strings.TrimSpace(part)); err == nil && p.DomainID == g.DomainID {
			return g.SequenceNumber <= p.SequenceNumber
		}
	}
	return false
}

func (g *gtidSet) String() string {
	if !g.maria {
		return g.mysql.String()
	}
	out := make([]string, 0, len(g.domains))
	for _, v := range g.domains {
		out = append(out, v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// column is a captured table's column.
type column struct {
	name     string
	text     bool // bytes read are text
	unsigned bool
}

// OpenSource opens the change stream of the connector's tables at the
// resume position: the snapshot first when none was committed yet (and
// params.snapshot asks for it). It connects when first read.
func (d *CDC) OpenSource(_ context.Context, opts stream.SourceOptions) (stream.Source, error) {
	at, err := parsePosition(opts.Resume)
	if err != nil {
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: %w", d.cfg.CName, err))
	}
	if opts.Resume != "" && at.gtid != (d.p.Positions == "gtid") {
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the committed position %s is not of the kind params.positions (%s) asks for: set positions back, or move the flow's position (kisflow positions set)", d.cfg.CName, opts.Resume, d.p.Positions))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &source{d: d, log: log, at: at, fresh: opts.Resume == ""}
	switch opts.Start.Kind {
	case stream.Committed:
	case stream.Earliest, stream.Latest:
		s.start, s.fresh = opts.Start, false // resolved when it connects
	case stream.AtPosition:
		if s.at, err = d.ownPosition(opts.Start.Position); err != nil {
			return nil, stream.Fatal(err)
		}
		s.fresh = false
	default:
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q cannot start at %s (it can do %s)", d.cfg.CName, opts.Start, d.Seeks().Describe()))
	}
	if !opts.Start.IsZero() {
		log.Info("mysql_cdc starts at "+opts.Start.String()+", not at the committed position", "connector", d.cfg.CName, "committed", opts.Resume)
	}
	switch opts.Stop.Kind {
	case stream.Committed:
	case stream.AtStart:
		s.stopAtStart = true
	case stream.AtPosition:
		p, err := d.ownPosition(opts.Stop.Position)
		if err != nil || p.n > 0 || p.snapshot {
			return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: stream.stop position %q: want a position at a transaction's end, gtid:SET or file:NAME:OFFSET as the connector keeps them (err %v)", d.cfg.CName, opts.Stop.Position, err))
		}
		s.stopPos, s.stopping = &p, true
	case stream.AtTime:
		s.stopTime, s.stopping = opts.Stop.Time, true
	default:
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q cannot stop at %s (it can do %s)", d.cfg.CName, opts.Stop, d.Seeks().Describe()))
	}
	return s, nil
}

type source struct {
	d   *CDC
	log *slog.Logger

	at    position // the position of the last message delivered, or the resume position
	fresh bool     // nothing was ever committed: the snapshot comes first

	// Start and stop positions other than the committed one.
	start       stream.Bound // earliest or latest, resolved when it connects
	stopAtStart bool         // stop at the binlog's end when the run began (read when it connects)
	stopping    bool         // a stop is set
	stopPos     *position    // stop before the first transaction after it
	stopTime    time.Time    // stop before the first transaction written at or after it
	reached     bool         // the stop was reached: Read returns io.EOF

	db      *sql.DB
	maria   bool
	columns map[string][]column

	// The snapshot, while it is read.
	snapConn   *sql.Conn
	snapRows   *sql.Rows
	snapTable  int
	snapN      int
	snapStart  position // where the stream starts after it
	snapGTID   string
	snapPos    string
	snapFile   string          // the snapshot's binlog position (MariaDB)
	snapOffset uint32          //
	snapRS     *cdcsnap.Ranges // its key ranges (MariaDB)
	snapAfter  cdcsnap.Key     // the first table read resumes after this key
	snapKey    []string        // the last key of snapTable delivered

	keys   map[string][]cdcsnap.Col // each table's key, read when a snapshot or ranges need it
	ranges *cdcsnap.Ranges          // the stream skips the changes its snapshot's rows hold (bound)

	// The stream.
	syncer   *replication.BinlogSyncer
	streamer *replication.BinlogStreamer
	file     string   // the binlog file being read
	cur      *gtidSet // after the last transaction seen
	curText  string

	// The transaction being received.
	inTx, sawBegin, standalone bool
	txStart                    position // the position right before it
	txGTID, txPos              string
	txPoint                    cdcsnap.Point // where it starts in the binlog
	txPointOK                  bool
	txN                        int
	skip                       int // resuming inside it: its first changes are skipped
	skipNext                   int // the skip of the next transaction (the first after a start)
	held                       *stream.Message
}

// Anchor fixes, for a flow without a committed position and without a
// snapshot, where the stream starts: the binlog's end now. The runtime
// commits it before the first read (see stream.Anchorer), so that the
// changes made while a run that read nothing is stopped are read by the
// next. With a snapshot there is nothing to fix ("").
func (s *source) Anchor(ctx context.Context) (string, error) {
	d := s.d
	if !s.fresh || d.p.Snapshot {
		return "", nil
	}
	db, err := d.open()
	if err != nil {
		return "", err
	}
	defer db.Close()
	set, file, err := d.head(ctx, db)
	if err != nil {
		return "", err
	}
	s.at = file
	if d.p.Positions == "gtid" {
		s.at = position{gtid: true, set: set}
	}
	s.fresh = false
	s.log.Info("mysql_cdc starts at the binlog's end", "connector", d.cfg.CName, "position", s.at.String())
	return s.at.String(), nil
}

// PositionsPerMessage reports that every message carries the position
// right after it.
func (s *source) PositionsPerMessage() bool { return true }

// Ack does nothing: the server keeps its binlog by its own retention
// (binlog_expire_logs_seconds), not by its readers' positions.
func (s *source) Ack(context.Context, []*stream.Message) error { return nil }

// Close closes the source's connections.
func (s *source) Close(ctx context.Context) error {
	s.disconnect()
	return nil
}

func (s *source) disconnect() {
	if s.snapRows != nil {
		s.snapRows.Close()
		s.snapRows = nil
	}
	if s.snapConn != nil {
		_ = s.snapConn.Close() // a read-only transaction, rolled back
		s.snapConn = nil
	}
	if s.syncer != nil {
		s.syncer.Close()
		s.syncer, s.streamer = nil, nil
	}
	if s.db != nil {
		_ = s.db.Close()
		s.db = nil
	}
	s.held, s.inTx = nil, false
}

// Read returns the next rows: the snapshot's, then the changes'. A lost
// connection is returned as an outage after the rows read before it; the
// next Read connects again and goes on after the last row returned.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	if s.reached {
		return nil, io.EOF
	}
	if s.syncer == nil && s.snapConn == nil {
		if err := s.open(ctx); err != nil {
			s.disconnect()
			return nil, err
		}
	}
	if s.snapConn != nil {
		return s.readSnapshot(ctx, max)
	}
	return s.readStream(ctx, max)
}

// open connects and prepares the snapshot or the stream from s.at.
func (s *source) open(ctx context.Context) error {
	d := s.d
	db, err := d.open()
	if err != nil {
		return err
	}
	s.db = db
	if err := d.prepare(ctx, db); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	if s.maria, err = d.mariaDB(qctx, db); err != nil {
		return err
	}
	s.columns = map[string][]column{}
	for _, t := range d.tables {
		if err := s.loadColumns(qctx, t.String()); err != nil {
			return err
		}
	}
	gtid := d.p.Positions == "gtid"
	if s.stopAtStart {
		set, file, err := d.head(ctx, db)
		if err != nil {
			return err
		}
		stop := file
		if gtid {
			stop = position{gtid: true, set: set}
		}
		s.stopPos, s.stopping, s.stopAtStart = &stop, true, false
		s.log.Info("mysql_cdc stops at the binlog's end when the run began", "connector", d.cfg.CName, "stop", stop.String())
	}
	if !s.start.IsZero() {
		pos, err := d.seek(ctx, db, s.start)
		if err != nil {
			return err
		}
		if s.at, err = parsePosition(pos); err != nil {
			return stream.Fatal(err)
		}
		s.start = stream.Bound{}
	}
	if s.fresh {
		if d.p.Snapshot {
			s.fresh = false
			if err := s.beginSnapshot(ctx, nil); err != nil {
				return err
			}
			return s.initRanges(qctx, nil)
		}
		set, file, err := d.head(ctx, db)
		if err != nil {
			return err
		}
		s.at = file
		if gtid {
			s.at = position{gtid: true, set: set}
		}
		s.fresh = false
		s.log.Info("mysql_cdc starts at the binlog's end", "connector", d.cfg.CName, "position", s.at.String())
	} else if s.at.snapshot {
		if d.p.Snapshot {
			// A snapshot cut short: the rest from a new snapshot, the
			// stream from the old one's position (see initRanges).
			prev, start := s.at, s.at.start()
			if err := s.beginSnapshot(ctx, &start); err != nil {
				return err
			}
			return s.initRanges(qctx, &prev)
		}
		s.at = s.at.start()
	}
	if s.at.rs != nil {
		if s.keys, err = s.loadKeys(qctx); err != nil {
			return err
		}
	}
	return s.startStream(ctx)
}

// loadColumns reads a table's columns from information_schema.
func (s *source) loadColumns(ctx context.Context, name string) error {
	db, tbl, _ := strings.Cut(name, ".")
	rows, err := s.db.QueryContext(ctx, "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", db, tbl)
	if err != nil {
		return s.d.wrap("look up the columns of "+name, err)
	}
	defer rows.Close()
	var cols []column
	for rows.Next() {
		var n, dt, ct string
		if err := rows.Scan(&n, &dt, &ct); err != nil {
			return s.d.wrap("look up the columns of "+name, err)
		}
		dt = strings.ToLower(dt)
		cols = append(cols, column{name: n, text: !strings.Contains(dt, "blob") && !strings.Contains(dt, "binary") && dt != "bit",
			unsigned: strings.Contains(strings.ToLower(ct), "unsigned")})
	}
	if err := rows.Err(); err != nil {
		return s.d.wrap("look up the columns of "+name, err)
	}
	s.columns[name] = cols
	return nil
}

// beginSnapshot starts a consistent snapshot and reads its binlog
// position; the stream starts there, or at from when the snapshot is read
// again.
func (s *source) beginSnapshot(ctx context.Context, from *position) error {
	d := s.d
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	conn, err := s.db.Conn(qctx)
	if err != nil {
		return d.wrap("connect for the snapshot", err)
	}
	s.snapConn, s.snapFile, s.snapOffset = conn, "", 0
	gtid := d.p.Positions == "gtid"
	var at position
	if !s.maria {
		// MySQL has no position of the snapshot itself: the binlog's end
		// before it is earlier, and the changes between are read again
		// (full images: the result is the same).
		set, file, err := d.head(ctx, s.db)
		if err != nil {
			return err
		}
		at = file
		if gtid {
			at = position{gtid: true, set: set}
		}
	}
	for _, q := range []string{"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"} {
		if _, err := conn.ExecContext(qctx, q); err != nil {
			return d.wrap("begin the snapshot", err)
		}
	}
	if s.maria {
		// MariaDB gives the binlog position of the snapshot itself.
		var file string
		var off uint32
		rows, err := conn.QueryContext(qctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
		if err != nil {
			return d.wrap("read the snapshot's binlog position", err)
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return d.wrap("read the snapshot's binlog position", err)
			}
			switch strings.ToLower(k) {
			case "binlog_snapshot_file":
				file = v
			case "binlog_snapshot_position":
				o, _ := strconv.ParseUint(v, 10, 32)
				off = uint32(o)
			}
		}
		rows.Close()
		if file == "" {
			return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: the server gave no binlog_snapshot_file: is log_bin on?", d.cfg.CName))
		}
		at = position{file: file, offset: off}
		s.snapFile, s.snapOffset = file, off
		if gtid {
			var set sql.NullString
			if err := conn.QueryRowContext(qctx, "SELECT BINLOG_GTID_POS(?, ?)", file, off).Scan(&set); err != nil {
				return d.wrap("read the snapshot's GTID position", err)
			}
			at = position{gtid: true, set: set.String}
		}
	}
	s.snapGTID, s.snapPos = at.set, at.String()
	if !at.gtid {
		s.snapPos = fmt.Sprintf("%s:%d", at.file, at.offset)
	}
	if s.snapFile != "" { // MariaDB: the snapshot's own file:offset, GTIDs or not
		s.snapPos = fmt.Sprintf("%s:%d", s.snapFile, s.snapOffset)
	}
	if from != nil {
		at = *from
	}
	s.snapStart, s.snapTable, s.snapN = at, 0, 0
	s.at = position{gtid: at.gtid, set: at.set, file: at.file, offset: at.offset, snapshot: true}
	s.log.Info("mysql_cdc reads the snapshot of its tables", "connector", d.cfg.CName, "tables", len(d.tables), "position", at.String())
	return nil
}

// deliver appends the held message to out and holds m instead.
func (s *source) deliver(out []*stream.Message, m *stream.Message) []*stream.Message {
	if s.held != nil {
		out = s.emit(out, s.held)
	}
	s.held = m
	return out
}

func (s *source) emit(out []*stream.Message, m *stream.Message) []*stream.Message {
	s.at = m.Handle.(position)
	return append(out, m)
}

func (s *source) readSnapshot(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	bg := context.WithoutCancel(ctx) // the query outlives a Read
	var out []*stream.Message
	fail := func(what string, err error) ([]*stream.Message, error) {
		s.disconnect()
		return out, d.wrap(what, err)
	}
	for len(out) < max {
		if len(out) > 0 && ctx.Err() != nil {
			return out, nil
		}
		if s.snapRows == nil {
			if s.snapTable == len(d.tables) {
				return s.endSnapshot(ctx, out)
			}
			q, args := "SELECT * FROM "+d.tables[s.snapTable].quoted(), []any(nil)
			if s.snapRS != nil {
				q, args = snapshotQuery(d.tables[s.snapTable], s.snapRS.Cols(s.snapTable), s.snapAfter)
				s.snapAfter = nil
			}
			rows, err := s.snapConn.QueryContext(bg, q, args...)
			if err != nil {
				return fail("snapshot of "+d.tables[s.snapTable].String(), err)
			}
			s.snapRows = rows
		}
		t := d.tables[s.snapTable].String()
		if !s.snapRows.Next() {
			err := s.snapRows.Err()
			s.snapRows.Close()
			s.snapRows = nil
			if err != nil {
				return fail("snapshot of "+t, err)
			}
			s.snapTable++
			s.snapKey = nil
			continue
		}
		names, _ := s.snapRows.Columns()
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := s.snapRows.Scan(ptrs...); err != nil {
			return fail("snapshot of "+t, err)
		}
		cols := s.columns[t]
		row := make(map[string]any, len(vals)+4)
		for i, v := range vals {
			if b, ok := v.([]byte); ok && (i >= len(cols) || cols[i].text) {
				v = string(b)
			}
			row[names[i]] = v
		}
		row["_op"], row["_table"], row["_gtid"], row["_pos"] = "insert", t, s.snapGTID, s.snapPos
		if s.snapRS != nil {
			if cols := s.snapRS.Cols(s.snapTable); cols != nil {
				if k, ok := keyOf(cols, row); ok {
					s.snapKey = cdcsnap.Encode(cols, k)
				}
			}
		}
		s.snapN++
		pos := s.snapStart
		pos.n, pos.snapshot = s.snapN, true
		pos.rs, pos.t, pos.k = s.snapRS, s.snapTable, s.snapKey
		out = s.deliver(out, &stream.Message{Payload: row, Position: pos.String(), Handle: pos})
	}
	return out, nil
}

// endSnapshot ends the snapshot's transaction, gives its last row the
// stream's start as position, and starts the stream.
func (s *source) endSnapshot(ctx context.Context, out []*stream.Message) ([]*stream.Message, error) {
	_ = s.snapConn.Close()
	s.snapConn = nil
	start := s.snapStart.start()
	start.rs = s.snapRS // until the stream passes the last of its points
	if s.held != nil {
		s.held.Position, s.held.Handle = start.String(), start
		out = s.emit(out, s.held)
		s.held = nil
	} else {
		s.at = start
	}
	s.log.Info("mysql_cdc read its snapshot; the change stream follows", "connector", s.d.cfg.CName, "rows", s.snapN, "position", start.String())
	if err := s.startStream(ctx); err != nil {
		s.disconnect()
		return out, err
	}
	return out, nil
}

// startStream starts reading the binlog at s.at: a transaction's end, or
// the start of a transaction whose first s.at.n changes are skipped.
func (s *source) startStream(ctx context.Context) error {
	d := s.d
	host, port, err := net.SplitHostPort(d.dsn.Addr)
	if err != nil {
		return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: address %q: %w", d.cfg.CName, d.dsn.Addr, err))
	}
	p, _ := strconv.Atoi(port)
	flavor := gmysql.MySQLFlavor
	if s.maria {
		flavor = gmysql.MariaDBFlavor
	}
	cfg := replication.BinlogSyncerConfig{
		ServerID: uint32(d.p.ServerID), Flavor: flavor, Host: host, Port: uint16(p), User: d.dsn.User, Password: d.dsn.Passwd,
		HeartbeatPeriod: d.p.Heartbeat, ReadTimeout: 3 * d.p.Heartbeat, DisableRetrySync: true, DiscardGTIDSet: true,
		Logger: slog.New(slog.DiscardHandler), Localhost: "kisflow",
	}
	if s.d.p.Timeout > 0 {
		cfg.Dialer = (&net.Dialer{Timeout: d.p.Timeout}).DialContext
	}
	s.syncer = replication.NewBinlogSyncer(cfg)
	start := s.at.start()
	if start.gtid {
		if s.cur, err = newGTIDSet(s.maria, start.set); err != nil {
			return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: position %s: %w", d.cfg.CName, s.at, err))
		}
		var set gmysql.GTIDSet
		if s.maria {
			set, err = gmysql.ParseMariadbGTIDSet(start.set)
		} else {
			set, err = gmysql.ParseMysqlGTIDSet(start.set)
		}
		if err != nil {
			return stream.Fatal(fmt.Errorf("mysql_cdc connector %q: position %s: %w", d.cfg.CName, s.at, err))
		}
		s.streamer, err = s.syncer.StartSyncGTID(set)
	} else {
		s.file = start.file
		s.streamer, err = s.syncer.StartSync(gmysql.Position{Name: start.file, Pos: start.offset})
	}
	if err != nil {
		return d.wrap("start reading the binlog from "+start.String(), err)
	}
	if s.cur != nil {
		s.curText = s.cur.String()
	}
	s.skipNext, s.inTx = s.at.n, false
	s.ranges = s.at.rs.ForStream(s.at.snapshot, s.keys, func() {
		s.log.Warn("mysql_cdc: a key of its position no longer reads as its table's key: every change of that table since the stream's start is delivered", "connector", d.cfg.CName)
	})
	s.log.Info("mysql_cdc streams changes", "connector", d.cfg.CName, "server_id", d.p.ServerID, "from", s.at.String())
	s.checkStop(start)
	return nil
}

// checkStop marks the stop reached when the stream stands at or past
// the stop position (at: the position after the last transaction seen).
func (s *source) checkStop(at position) {
	if s.stopPos == nil || s.reached {
		return
	}
	stop := *s.stopPos
	if stop.gtid {
		if s.cur != nil && s.cur.contains(stop.set) {
			s.reached = true
		}
		return
	}
	if !at.gtid && (at.file > stop.file || (at.file == stop.file && at.offset >= stop.offset)) {
		s.reached = true
	}
}

// pastStop reports whether the transaction starting at h (with GTID gtid)
// lies at or past the stop.
func (s *source) pastStop(h *replication.EventHeader, gtid string) bool {
	if !s.stopTime.IsZero() {
		at := s.stopTime.Unix()
		if s.stopTime.Nanosecond() > 0 {
			at++ // the binlog's timestamps are whole seconds
		}
		if int64(h.Timestamp) >= at {
			return true
		}
	}
	if s.stopPos == nil {
		return false
	}
	stop := *s.stopPos
	if stop.gtid {
		return gtid != "" && !covers(s.maria, stop.set, gtid)
	}
	off := h.LogPos - h.EventSize
	return s.file > stop.file || (s.file == stop.file && off >= stop.offset)
}

func (s *source) readStream(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	var out []*stream.Message
	for len(out) < max {
		if s.reached {
			s.log.Info("mysql_cdc reached its stop", "connector", d.cfg.CName, "position", s.at.String())
			return out, io.EOF
		}
		ectx, cancel := ctx, context.CancelFunc(func() {})
		if len(out) > 0 {
			ectx, cancel = context.WithTimeout(ctx, 5*time.Millisecond)
		}
		ev, err := s.streamer.GetEvent(ectx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return out, nil
			}
			err = d.explainUnreadable(ctx, s.db, s.maria, s.at, err)
			s.disconnect()
			return out, d.wrap("binlog stream", err)
		}
		if out, err = s.event(out, ev); err != nil {
			s.disconnect()
			return out, err
		}
	}
	return out, nil
}

// event turns one binlog event into rows.
func (s *source) event(out []*stream.Message, ev *replication.BinlogEvent) ([]*stream.Message, error) {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		s.file = string(e.NextLogName)
	case *replication.MariadbGTIDEvent:
		s.begin(h, e.GTID.String())
		s.standalone = e.Flags&replication.BINLOG_MARIADB_FL_STANDALONE != 0
	case *replication.GTIDEvent:
		gtid := ""
		if u, err := uuid.FromBytes(e.SID); err == nil && e.GNO > 0 {
			gtid = fmt.Sprintf("%s:%d", u, e.GNO)
		}
		s.begin(h, gtid)
	case *replication.QueryEvent:
		if s.reached {
			break
		}
		switch q := strings.TrimSpace(string(e.Query)); {
		case strings.EqualFold(q, "BEGIN"):
			if !s.inTx {
				s.begin(h, "")
			}
			s.sawBegin = true
		case strings.EqualFold(q, "COMMIT") || !s.sawBegin:
			if !s.sawBegin { // DDL: the columns may have changed
				for _, t := range s.d.tables {
					delete(s.columns, t.String())
				}
			}
			if s.inTx {
				out = s.end(out, h)
			}
		}
	case *replication.XIDEvent:
		if s.inTx {
			out = s.end(out, h)
		}
	case *replication.RowsEvent:
		if !s.inTx || e.Table == nil {
			break
		}
		name := string(e.Table.Schema) + "." + string(e.Table.Table)
		if !s.d.byName[name] {
			break
		}
		cols, err := s.tableColumns(name, e)
		if err != nil {
			return out, err
		}
		switch e.Type() {
		case replication.EnumRowsEventTypeInsert:
			for _, r := range e.Rows {
				out = s.change(out, name, "insert", cols, r, nil)
			}
		case replication.EnumRowsEventTypeDelete:
			for _, r := range e.Rows {
				out = s.change(out, name, "delete", cols, r, nil)
			}
		case replication.EnumRowsEventTypeUpdate:
			for i := 0; i+1 < len(e.Rows); i += 2 {
				out = s.change(out, name, "update", cols, e.Rows[i+1], e.Rows[i])
			}
		}
	}
	return out, nil
}

// tableColumns returns the columns of a rows event's table: named by the
// binlog itself when the server writes them (binlog_row_metadata=FULL),
// else from information_schema, read again when their count differs from
// the event's (a column added or dropped since).
func (s *source) tableColumns(name string, e *replication.RowsEvent) ([]column, error) {
	cols, ok := s.columns[name]
	if names := e.Table.ColumnNameString(); len(names) == int(e.ColumnCount) {
		known := make(map[string]column, len(cols))
		for _, c := range cols {
			known[c.name] = c
		}
		for _, n := range names {
			if _, ok := known[n]; !ok { // a column added since: look again
				ctx, cancel := context.WithTimeout(context.Background(), s.d.p.Timeout)
				err := s.loadColumns(ctx, name)
				cancel()
				if err != nil {
					return nil, err
				}
				for _, c := range s.columns[name] {
					known[c.name] = c
				}
				break
			}
		}
		unsigned := e.Table.UnsignedMap()
		out := make([]column, len(names))
		for i, n := range names {
			c, ok := known[n]
			if !ok { // dropped since: the binlog's types tell
				c = column{name: n, text: true}
			}
			if u, ok := unsigned[i]; ok {
				c.unsigned = u
			}
			out[i] = c
		}
		return out, nil
	}
	if !ok || len(cols) != int(e.ColumnCount) {
		ctx, cancel := context.WithTimeout(context.Background(), s.d.p.Timeout)
		defer cancel()
		if err := s.loadColumns(ctx, name); err != nil {
			return nil, err
		}
		cols = s.columns[name]
	}
	if len(cols) != int(e.ColumnCount) {
		return nil, stream.Fatal(fmt.Errorf("mysql_cdc connector %q: a change of %s has %d columns and the table now %d: its columns changed while changes before were not yet read; set binlog_row_metadata=FULL on the server so the binlog names them", s.d.cfg.CName, name, e.ColumnCount, len(cols)))
	}
	return cols, nil
}

func (s *source) begin(h *replication.EventHeader, gtid string) {
	if s.stopping && s.pastStop(h, gtid) {
		s.reached, s.inTx = true, false
		return
	}
	s.inTx, s.sawBegin, s.standalone = true, false, false
	s.txGTID, s.txN = gtid, 0
	s.txPos = fmt.Sprintf("%s:%d", s.file, h.LogPos-h.EventSize)
	s.txPoint, s.txPointOK = binlogPoint(s.file, h.LogPos-h.EventSize)
	if s.ranges != nil && s.txPointOK && s.txPoint >= s.ranges.Max() {
		s.ranges = nil // past the snapshot's ranges: every change counts
	}
	if s.cur != nil {
		s.txStart = position{gtid: true, set: s.curText}
	} else {
		s.txStart = position{file: s.file, offset: h.LogPos - h.EventSize}
	}
	s.skip, s.skipNext = s.skipNext, 0
}

// end ends the transaction: its last change gets the position after it.
func (s *source) end(out []*stream.Message, h *replication.EventHeader) []*stream.Message {
	s.inTx = false
	var end position
	if s.cur != nil {
		if s.txGTID != "" {
			if err := s.cur.update(s.txGTID); err == nil {
				s.curText = s.cur.String()
			}
		}
		end = position{gtid: true, set: s.curText}
	} else {
		end = position{file: s.file, offset: h.LogPos}
	}
	end.rs = s.ranges
	if s.held != nil {
		s.held.Position, s.held.Handle = end.String(), end
		out = s.emit(out, s.held)
		s.held = nil
	}
	s.at, s.skip = end, 0
	s.checkStop(end)
	return out
}

func (s *source) change(out []*stream.Message, table, op string, cols []column, img, before []any) []*stream.Message {
	s.txN++
	if s.txN <= s.skip {
		return out // committed before the restart
	}
	row := image(cols, img, len(cols)+5)
	if before != nil {
		row["_before"] = image(cols, before, len(cols))
	}
	if s.ranges != nil {
		half, ok := s.ranged(table, op, row)
		if !ok {
			return out // the snapshot's image of the row holds it
		}
		if half != op { // the old key's half of an update: its delete
			row, op = row["_before"].(map[string]any), half
		}
	}
	row["_op"], row["_table"], row["_gtid"], row["_pos"] = op, table, s.txGTID, s.txPos
	pos := s.txStart
	pos.n, pos.rs = s.txN, s.ranges
	return s.deliver(out, &stream.Message{Payload: row, Position: pos.String(), Handle: pos})
}

// image is a row image as a map of column to value: text as strings,
// unsigned integers as unsigned.
func image(cols []column, vals []any, size int) map[string]any {
	row := make(map[string]any, size)
	for i, v := range vals {
		if i >= len(cols) {
			break
		}
		c := cols[i]
		switch x := v.(type) {
		case []byte:
			if c.text {
				v = string(x)
			}
		case int8:
			if c.unsigned {
				v = uint8(x)
			}
		case int16:
			if c.unsigned {
				v = uint16(x)
			}
		case int32:
			if c.unsigned {
				v = uint32(x)
			}
		case int64:
			if c.unsigned {
				v = uint64(x)
			}
		}
		row[c.name] = v
	}
	return row
}
