package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/cdcsnap"
	"github.com/kisflow-go/kisflow/stream"
)

// position is where the stream stands after a message:
//
//	LSN            the changes of every transaction that ended at or before
//	               LSN (the transaction's end); the stream goes on from LSN
//	LSN:n          the first n changes of the transaction that commits at LSN
//	snapshot:LSN:n the snapshot was being read (n rows delivered); the
//	               stream starts at LSN after it
//
// followed, in the snapshot and in the stream until it passes the last of
// their LSNs, by a space and the snapshot's key ranges as JSON (see
// ranges): in the snapshot with the table being read and its last key
// delivered, where a resumed snapshot goes on. A snapshot position without
// them (of an earlier version) is read again from its first row.
type position struct {
	lsn      pglogrepl.LSN
	n        int
	snapshot bool
	rs       *cdcsnap.Ranges // the snapshot's key ranges (nil: none; every change counts)
	t        int             // snapshot: the table being read
	k        []string        // snapshot: the last key of table t delivered (nil: none)
}

func (p position) String() string {
	var buf [160]byte // most positions, ranges included, fit
	b := buf[:0]
	if p.snapshot {
		b = append(b, "snapshot:"...)
	}
	b = appendLSN(b, p.lsn)
	if p.n > 0 || p.snapshot {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(p.n), 10)
	}
	if p.rs != nil {
		b = append(b, ' ')
		b = p.rs.AppendJSON(b, p.snapshot, p.t, p.k)
	}
	return string(b)
}

// appendLSN appends lsn as PostgreSQL writes it (pglogrepl.LSN.String:
// upper-case hex, 16B/3748), without fmt: it is formatted for every
// change.
func appendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	b = appendHex(b, uint32(lsn>>32))
	b = append(b, '/')
	return appendHex(b, uint32(lsn))
}

func appendHex(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	if v == 0 {
		return append(b, '0')
	}
	var tmp [8]byte
	i := len(tmp)
	for v > 0 {
		i--
		tmp[i] = digits[v&0xF]
		v >>= 4
	}
	return append(b, tmp[i:]...)
}

func parsePosition(s string) (position, error) {
	var p position
	if s == "" {
		return p, nil
	}
	s, state, hasState := strings.Cut(s, " ")
	if hasState {
		rs, t, k, err := cdcsnap.Parse(lsnCodec, state)
		if err != nil {
			return p, fmt.Errorf("bad position %q: the snapshot's key ranges: %w", s, err)
		}
		p.rs, p.t, p.k = rs, t, k
	}
	rest, snap := strings.CutPrefix(s, "snapshot:")
	p.snapshot = snap
	l, n, hasN := strings.Cut(rest, ":")
	lsn, err := pglogrepl.ParseLSN(l)
	if err != nil {
		return p, fmt.Errorf("bad position %q: %w", s, err)
	}
	p.lsn = lsn
	if hasN {
		if p.n, err = strconv.Atoi(n); err != nil || p.n < 0 {
			return p, fmt.Errorf("bad position %q: the count after the LSN is not a number", s)
		}
	}
	return p, nil
}

// OpenSource opens the change stream of the connector's tables at the
// resume position: the snapshot first when none was committed yet (and
// params.snapshot asks for it). It connects when first read.
func (d *CDC) OpenSource(_ context.Context, opts stream.SourceOptions) (stream.Source, error) {
	at, err := parsePosition(opts.Resume)
	if err != nil {
		return nil, stream.Fatal(fmt.Errorf("postgres_cdc connector %q: %w", d.cfg.CName, err))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &source{d: d, log: log, at: at, fresh: opts.Resume == "", delivered: opts.Resume, detached: opts.Detached, resume: opts.Resume}
	s.committed.pos = opts.Resume
	s.committed.lsn = at.lsn
	switch opts.Start.Kind {
	case stream.Committed:
	case stream.Earliest:
		// A new snapshot, then the changes from the slot's position.
		s.at, s.fresh = position{snapshot: true}, false
	case stream.Latest:
		s.at, s.fresh, s.latest = position{}, false, true
	case stream.AtPosition:
		if s.at, err = d.startPosition(opts.Start.Position); err != nil {
			return nil, stream.Fatal(err)
		}
		s.fresh, s.checkStart = false, true
	case stream.AtTime:
		// From the slot's confirmed position, skipping the transactions
		// committed before the time.
		s.at, s.fresh, s.startTime = position{}, false, opts.Start.Time
	default:
		return nil, stream.Fatal(fmt.Errorf("postgres_cdc connector %q cannot start at %s (it can do %s)", d.cfg.CName, opts.Start, d.Seeks().Describe()))
	}
	if !opts.Start.IsZero() {
		s.delivered = s.at.String()
		log.Info("postgres_cdc starts at "+opts.Start.String()+", not at the committed position", "connector", d.cfg.CName, "committed", opts.Resume)
	}
	switch opts.Stop.Kind {
	case stream.Committed:
	case stream.AtStart:
		s.stopAtStart = true
	case stream.AtPosition:
		if s.stopLSN, err = d.stopPosition(opts.Stop.Position); err != nil {
			return nil, err
		}
		s.stopping = true
	case stream.AtTime:
		s.stopTime, s.stopping = opts.Stop.Time, true
	default:
		return nil, stream.Fatal(fmt.Errorf("postgres_cdc connector %q cannot stop at %s (it can do %s)", d.cfg.CName, opts.Stop, d.Seeks().Describe()))
	}
	return s, nil
}

// PositionsPerMessage reports that every message carries the position
// right after it.
func (s *source) PositionsPerMessage() bool { return true }

type source struct {
	d   *CDC
	log *slog.Logger

	at        position // the position of the last message delivered, or the resume position
	fresh     bool     // nothing was ever committed: the snapshot comes first
	delivered string   // at, as text
	resume    string   // the committed position the source was opened with

	// Start and stop positions other than the committed one.
	detached    bool          // a one-off run: positions are not reported to the server
	latest      bool          // start at the server's WAL end
	checkStart  bool          // at is a start position given by the user
	startTime   time.Time     // skip the transactions committed before it
	skipTx      bool          // the transaction being received is skipped (startTime)
	stopAtStart bool          // stop at the WAL end when the run began (read when it connects)
	stopping    bool          // a stop is set (stopLSN and/or stopTime)
	stopLSN     pglogrepl.LSN // stop before the first transaction committing at or after it
	stopTime    time.Time     // stop before the first transaction committed at or after it
	reached     bool          // the stop was reached: Read returns io.EOF

	repl      *pgconn.PgConn
	streaming bool
	feed      chan chunk         // the pump's rows, while it runs
	stopPump  context.CancelFunc // stops the pump
	pending   []*stream.Message  // rows received from the pump, not yet handed out
	eof       bool               // the pump reached the stop
	failed    error              // the error that ended the pump, returned after pending
	types     *pgtype.Map
	relations map[uint32]*relation

	// The snapshot, while it is read.
	snap      *pgx.Conn
	snapTx    pgx.Tx
	snapRows  pgx.Rows
	snapTable int
	snapN     int
	snapLSN   pglogrepl.LSN   // where the stream starts after it
	snapImg   pglogrepl.LSN   // the consistent point of the snapshot read (the rows' _lsn)
	snapRS    *cdcsnap.Ranges // its key ranges (bound)
	snapAfter rowKey          // the first table read resumes after this key
	snapKey   []string        // the last key of snapTable delivered
	keyBuf    rowKey          // reused to read each snapshot row's key
	snapTmp   *pgconn.PgConn  // the replication connection holding the temporary slot whose snapshot is read

	keys   map[string][]keyCol // each table's key, read when a snapshot or ranges need it
	ranges *cdcsnap.Ranges     // the stream skips the changes its snapshot's rows hold (bound)

	// The transaction being received.
	inTx   bool
	txLSN  pglogrepl.LSN // its commit LSN
	txText string        // txLSN as text (each change's _lsn)
	txN    int           // its changes received so far
	skip   position      // resuming inside a transaction: its first changes are skipped
	held   *stream.Message

	nextStatus time.Time
	confirmed  pglogrepl.LSN // last reported to the server
	idle       pglogrepl.LSN // the server's WAL end seen while nothing was held back

	committed struct {
		sync.Mutex
		pos string
		lsn pglogrepl.LSN
	}
}

// PositionCommitted records a position the runtime committed: the next
// status update reports it to the server, which may then free the WAL
// before it.
func (s *source) PositionCommitted(_ context.Context, pos string) {
	head, _, _ := strings.Cut(pos, " ") // the LSN is all it needs, not the ranges
	p, err := parsePosition(head)
	if err != nil {
		return
	}
	s.committed.Lock()
	s.committed.pos = pos
	if p.lsn > s.committed.lsn {
		s.committed.lsn = p.lsn
	}
	s.committed.Unlock()
}

// Ack does nothing: positions are reported to the server once committed
// (PositionCommitted), which for at-least-once delivery is after Ack.
func (s *source) Ack(context.Context, []*stream.Message) error { return nil }

// Close closes the source's connections.
func (s *source) Close(ctx context.Context) error {
	s.disconnect(ctx)
	return nil
}

func (s *source) disconnect(ctx context.Context) {
	if s.feed != nil {
		s.stopPump()
		for range s.feed { // until the pump ended
		}
		s.feed, s.stopPump, s.pending = nil, nil, nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if s.snapRows != nil {
		s.snapRows.Close()
		s.snapRows = nil
	}
	if s.snap != nil {
		_ = s.snap.Close(cctx) // a rolled back read-only transaction
		s.snap, s.snapTx = nil, nil
	}
	if s.snapTmp != nil {
		_ = s.snapTmp.Close(cctx) // drops the temporary slot
		s.snapTmp = nil
	}
	if s.repl != nil {
		_ = s.repl.Close(cctx)
		s.repl = nil
	}
	s.streaming, s.held, s.inTx = false, nil, false
}

// Read returns the next rows: the snapshot's, then the changes'. A lost
// connection is returned as an outage after the rows read before it; the
// next Read connects again and goes on after the last row returned.
//
// The change stream is read ahead by a goroutine of the source's own (the
// pump), which receives and decodes while the flow works on the rows
// returned before; Read hands out what it decoded, in order.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	out, err := s.read(ctx, max)
	if n := len(out); n > 0 {
		s.at = out[n-1].Handle.(position)
	}
	return out, err
}

func (s *source) read(ctx context.Context, max int) ([]*stream.Message, error) {
	if len(s.pending) > 0 {
		return s.take(max), nil
	}
	if err := s.failed; err != nil {
		// The rows before the failure were handed out: the next Read
		// connects again after the last of them.
		s.failed = nil
		s.disconnect(ctx)
		return nil, err
	}
	if s.eof {
		return nil, io.EOF
	}
	if s.repl == nil {
		if err := s.open(ctx); err != nil {
			s.disconnect(ctx)
			return nil, err
		}
	}
	if s.snapTx != nil {
		return s.readSnapshot(ctx, max)
	}
	if s.feed == nil {
		if s.reached { // at the stop already
			s.eof = true
			return nil, io.EOF
		}
		s.startPump()
	}
	select {
	case c, ok := <-s.feed:
		if !ok {
			return nil, s.d.wrap("replication stream", errors.New("the reader ended"))
		}
		s.pending = c.msgs
		switch {
		case errors.Is(c.err, io.EOF):
			s.eof = true
		case c.err != nil:
			s.failed = c.err // once the rows before it are handed out
			if len(s.pending) == 0 {
				return s.read(ctx, max)
			}
		}
		return s.take(max), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take hands out up to max pending messages.
func (s *source) take(max int) []*stream.Message {
	n := min(max, len(s.pending))
	out := s.pending[:n:n]
	s.pending = s.pending[n:]
	if len(s.pending) == 0 {
		s.pending = nil
	}
	return out
}

// chunk is what the pump read: rows, then maybe the error that ended it
// (io.EOF at the stop).
type chunk struct {
	msgs []*stream.Message
	err  error
}

// pumpChunk is the most rows the pump sends at once; pumpAhead the
// chunks it may read ahead of Read: two batches of the CDC sources' batch
// size. While the sink writes a batch and the runtime holds no free slot
// to read the next, the pump goes on decoding, so that the next batch is
// there in full when a slot frees. With only a few chunks ahead, the
// reader took those and then waited for the stream, and the linger cut
// most batches at 2,500 to 3,500 changes (34 batches for the CDC
// benchmark's 100,000 changes, against 22 to 29 now), each a commit
// waiting for the disk.
const pumpChunk, pumpAhead = 512, 2 * driver.ChangeBatchSize / pumpChunk

// startPump starts the goroutine that reads the stream ahead. It owns the
// stream's state (the replication connection's reads and status updates,
// the transaction being received) until it ends: disconnect stops it.
func (s *source) startPump() {
	ctx, cancel := context.WithCancel(context.Background())
	feed := make(chan chunk, pumpAhead)
	s.feed, s.stopPump = feed, cancel
	go func() {
		defer close(feed)
		for {
			out, err := s.readStream(ctx, pumpChunk)
			if ctx.Err() != nil {
				return
			}
			if len(out) > 0 || err != nil {
				select {
				case feed <- chunk{msgs: out, err: err}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
}

// open connects, creates the slot when needed and prepares the snapshot
// or the stream from s.at.
func (s *source) open(ctx context.Context) error {
	d := s.d
	plain, err := d.plain(ctx)
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			_ = plain.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := d.prepare(ctx, plain, true); err != nil {
		return err
	}
	if s.repl, err = d.connect(ctx, true); err != nil {
		return d.wrap("replication connection", err)
	}
	s.types = plain.TypeMap()
	s.relations = map[uint32]*relation{}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	slot, err := d.slotState(ctx, plain)
	if err != nil {
		return err
	}
	exists := slot.exists
	if s.stopAtStart {
		if s.stopLSN, err = d.walEnd(ctx, plain); err != nil {
			return err
		}
		s.stopAtStart, s.stopping = false, true
		s.log.Info("postgres_cdc stops at the WAL's end when the run began", "connector", d.cfg.CName, "stop", s.stopLSN.String())
	}
	if !exists && !s.fresh && !s.at.snapshot && !s.latest && s.startTime.IsZero() {
		if s.checkStart {
			return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: replication slot %s does not exist: the server keeps no changes to start at %s (start at latest, or earliest for a new snapshot)", d.cfg.CName, d.p.Slot, s.at))
		}
		return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: replication slot %s does not exist, but the flow's committed position is %s: the server no longer keeps the changes since. Recreate the replica from a snapshot: drop the flow's committed position (and the replica's rows), then run again", d.cfg.CName, d.p.Slot, s.delivered))
	}
	if s.checkStart {
		if err := d.readable(s.at, slot, s.resume); err != nil {
			return err
		}
		s.checkStart = false
	}
	if s.latest && exists {
		head, err := d.walEnd(ctx, plain)
		if err != nil {
			return err
		}
		s.at, s.latest = position{lsn: max(head, slot.flushed)}, false
	}
	snapName := ""
	if !exists {
		if !d.p.CreateSlot {
			return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: replication slot %s does not exist (SELECT pg_create_logical_replication_slot('%s', 'pgoutput'), or set params.create_slot: \"true\")", d.cfg.CName, d.p.Slot, d.p.Slot))
		}
		action := "NOEXPORT_SNAPSHOT"
		if d.p.Snapshot && (s.fresh || s.at.snapshot) {
			action = "EXPORT_SNAPSHOT"
		}
		res, err := pglogrepl.CreateReplicationSlot(qctx, s.repl, d.p.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
		if err != nil {
			return d.wrap("create replication slot "+d.p.Slot, err)
		}
		lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return d.wrap("create replication slot "+d.p.Slot, err)
		}
		s.log.Info("postgres_cdc created its replication slot", "connector", d.cfg.CName, "slot", d.p.Slot, "lsn", lsn.String())
		snapName = res.SnapshotName
		s.at, s.latest = position{lsn: lsn, snapshot: s.at.snapshot, n: s.at.n, rs: s.at.rs}, false
	} else if s.fresh {
		// A slot from a run that committed nothing: its changes start at
		// its flush position.
		s.at.lsn = slot.flushed
	}
	// From here on the source has a position: a connection lost later
	// goes on from the last row delivered (s.at), a snapshot too.
	snapshot := (s.fresh || s.at.snapshot) && d.p.Snapshot
	fresh := s.fresh
	s.fresh = false
	if snapshot || s.at.rs != nil {
		if s.keys, err = d.loadKeys(ctx, plain); err != nil {
			return err
		}
	}
	if snapshot {
		if err := s.openSnapshot(ctx, plain, snapName, fresh, slot.flushed); err != nil {
			return err
		}
		keep = true
		return nil
	}
	if s.at.snapshot { // a snapshot cut short, and no longer asked for
		s.at = position{lsn: s.at.lsn}
	}
	return s.startStream(ctx)
}

// openSnapshot begins reading the snapshot: the one exported when the
// slot was created now (name), or, the slot being older, the snapshot of
// a temporary slot created for it, resuming after the last row delivered
// by the run before (s.at).
func (s *source) openSnapshot(ctx context.Context, plain *pgx.Conn, name string, fresh bool, flushed pglogrepl.LSN) error {
	d := s.d
	names := make([]string, len(d.tables))
	cols := make([][]keyCol, len(d.tables))
	for i, t := range d.tables {
		names[i], cols[i] = t.String(), s.keys[t.String()]
		if cols[i] == nil {
			s.log.Warn("postgres_cdc: a table without a primary key the source can order by (integers, text, uuid, bytea; replica identity default or full): a run stopped during its snapshot reads it again from its first row, so a sink that inserts holds its rows already written twice", "connector", d.cfg.CName, "table", names[i])
		}
	}
	at := s.at
	if name != "" { // the slot was created now: its snapshot is the stream's start
		if at.snapshot && (at.rs != nil || at.n > 0) {
			s.log.Warn("postgres_cdc: the replication slot was gone and is created again: the snapshot is read again from its first row, and the changes between the slot's old and new start are lost", "connector", d.cfg.CName, "slot", d.p.Slot)
		}
		s.at = position{lsn: at.lsn, snapshot: true}
		return s.beginSnapshot(ctx, plain, name, at.lsn, at.lsn, cdcsnap.New(lsnCodec, names, cols, cdcsnap.Point(at.lsn)), 0, nil, 0)
	}
	lsn0 := at.lsn
	if fresh || lsn0 == 0 {
		lsn0 = flushed // the stream starts at the slot's position
	}
	tmp, lsn1, snapName, err := s.tempSlot(ctx)
	if err != nil {
		return err
	}
	keepTmp := false
	defer func() {
		if !keepTmp {
			_ = tmp.Close(context.WithoutCancel(ctx))
		}
	}()
	// The rows after where the last run stopped are read from the
	// temporary slot's snapshot: their changes count from its point.
	rs, t, after, n := cdcsnap.New(lsnCodec, names, cols, cdcsnap.Point(lsn1)), 0, []string(nil), 0
	again := func(why string) {
		// Read again from the first row, every change counting: the
		// tables end the same by key, and a sink that inserts holds the
		// rows already written twice.
		s.log.Warn("postgres_cdc reads its snapshot again from the first row: "+why, "connector", d.cfg.CName)
		rs = cdcsnap.New(lsnCodec, names, cols, 0)
	}
	switch {
	case !at.snapshot || (at.rs == nil && at.n == 0):
		// A new snapshot: nothing of one was delivered.
	case at.rs == nil:
		again("the position " + at.String() + " (of an earlier version) does not say where it stopped")
	case !cdcsnap.SameTables(at.rs.Tables(), d.tables):
		again("the connector's tables are no longer the ones of its position")
	default:
		b, ok := at.rs.Bind(s.keys)
		if ok {
			var nr *cdcsnap.Ranges
			if nr, after, ok = b.Resumed(at.t, at.k, cdcsnap.Point(lsn1)); ok {
				rs, t, n = nr, at.t, at.n
			}
		}
		if !ok {
			again("a key of its position no longer reads as the table's key")
		}
	}
	s.at = position{lsn: lsn0, n: n, snapshot: true, rs: rs, t: t, k: after}
	if err := s.beginSnapshot(ctx, plain, snapName, lsn0, lsn1, rs, t, after, n); err != nil {
		return err
	}
	s.snapTmp, keepTmp = tmp, true
	if after != nil || t > 0 {
		s.log.Info("postgres_cdc resumes its snapshot after the last row delivered", "connector", d.cfg.CName, "table", names[min(t, len(names)-1)], "after", strings.Join(after, ","), "snapshot_lsn", lsn1.String())
	}
	return nil
}

// tempSlot creates a temporary slot on a replication connection of its
// own and returns the connection (closing it drops the slot), the slot's
// consistent point and the name of the snapshot it exports, valid while
// the connection runs no other command.
func (s *source) tempSlot(ctx context.Context) (*pgconn.PgConn, pglogrepl.LSN, string, error) {
	d := s.d
	conn, err := d.connect(ctx, true)
	if err != nil {
		return nil, 0, "", d.wrap("replication connection", err)
	}
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	name := fmt.Sprintf("%.40s_snap_%x", d.p.Slot, uint32(time.Now().UnixNano()))
	res, err := pglogrepl.CreateReplicationSlot(qctx, conn, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err == nil {
		var lsn pglogrepl.LSN
		if lsn, err = pglogrepl.ParseLSN(res.ConsistentPoint); err == nil {
			return conn, lsn, res.SnapshotName, nil
		}
	}
	_ = conn.Close(context.WithoutCancel(ctx))
	return nil, 0, "", d.wrap("create temporary replication slot "+name, err)
}

// plain opens a connection for queries and the snapshot.
func (d *CDC) plain(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(d.dsn)
	if err != nil {
		return nil, stream.Fatal(err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > d.p.Timeout {
		cfg.ConnectTimeout = d.p.Timeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, d.wrap("connect", err)
	}
	return conn, nil
}

// beginSnapshot begins the transaction reading the snapshot name (whose
// consistent point is img), from table t after the key after (nil: from
// its start); the stream starts at lsn after it.
func (s *source) beginSnapshot(ctx context.Context, conn *pgx.Conn, name string, lsn, img pglogrepl.LSN, rs *cdcsnap.Ranges, t int, after []string, n int) error {
	d := s.d
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return d.wrap("begin snapshot", err)
	}
	if name != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(name)); err != nil {
			return d.wrap("set transaction snapshot", err)
		}
	}
	s.snap, s.snapTx, s.snapTable, s.snapN, s.snapLSN, s.snapImg, s.snapRS, s.snapKey = conn, tx, t, n, lsn, img, rs, after
	s.snapAfter = nil
	if after != nil && t < len(d.tables) {
		var err error
		if s.snapAfter, err = cdcsnap.Decode(rs.Cols(t), after); err != nil {
			return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: %w", d.cfg.CName, err))
		}
	}
	s.log.Info("postgres_cdc reads the snapshot of its tables", "connector", d.cfg.CName, "tables", len(d.tables), "lsn", lsn.String(), "snapshot_lsn", img.String())
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// deliver appends the held message to out and holds m instead.
func (s *source) deliver(out []*stream.Message, m *stream.Message) []*stream.Message {
	if s.held != nil {
		out = s.emit(out, s.held)
	}
	s.held = m
	return out
}

// emit appends m to out: Read sets s.at when it hands m out.
func (s *source) emit(out []*stream.Message, m *stream.Message) []*stream.Message {
	s.delivered = m.Position
	return append(out, m)
}

func (s *source) readSnapshot(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	// The query outlives a Read: it runs on a context of its own.
	bg := context.WithoutCancel(ctx)
	var out []*stream.Message
	for len(out) < max {
		if len(out) > 0 && ctx.Err() != nil {
			return out, nil
		}
		if s.snapRows == nil {
			if s.snapTable == len(d.tables) {
				return s.endSnapshot(ctx, out)
			}
			q, args := snapshotQuery(d.tables[s.snapTable], s.snapRS.Cols(s.snapTable), s.snapAfter)
			s.snapAfter = nil
			rows, err := s.snapTx.Query(bg, q, args...)
			if err != nil {
				s.disconnect(ctx)
				return out, d.wrap("snapshot of "+d.tables[s.snapTable].String(), err)
			}
			s.snapRows = rows
		}
		if !s.snapRows.Next() {
			err := s.snapRows.Err()
			s.snapRows.Close()
			s.snapRows = nil
			if err != nil {
				s.disconnect(ctx)
				return out, d.wrap("snapshot of "+d.tables[s.snapTable].String(), err)
			}
			s.snapTable++
			s.snapKey = nil
			continue
		}
		vals, err := s.snapRows.Values()
		if err != nil {
			s.disconnect(ctx)
			return out, d.wrap("snapshot of "+d.tables[s.snapTable].String(), err)
		}
		fds := s.snapRows.FieldDescriptions()
		row := make(map[string]any, len(vals)+3)
		for i, v := range vals {
			row[fds[i].Name] = v
		}
		row["_op"], row["_table"], row["_lsn"] = "insert", d.tables[s.snapTable].String(), s.snapImg.String()
		if cols := s.snapRS.Cols(s.snapTable); cols != nil {
			if k, ok := keyInto(s.keyBuf[:0], cols, row); ok {
				s.snapKey, s.keyBuf = cdcsnap.Encode(cols, k), k
			}
		}
		s.snapN++
		pos := position{lsn: s.snapLSN, n: s.snapN, snapshot: true, rs: s.snapRS, t: s.snapTable, k: s.snapKey}
		out = s.deliver(out, &stream.Message{Payload: row, Position: pos.String(), Handle: pos})
	}
	return out, nil
}

// endSnapshot ends the snapshot's transaction, gives its last row the
// stream's start as position, and starts the stream.
func (s *source) endSnapshot(ctx context.Context, out []*stream.Message) ([]*stream.Message, error) {
	_ = s.snapTx.Rollback(ctx) // read only
	_ = s.snap.Close(context.WithoutCancel(ctx))
	s.snap, s.snapTx = nil, nil
	if s.snapTmp != nil {
		_ = s.snapTmp.Close(context.WithoutCancel(ctx)) // drops the temporary slot
		s.snapTmp = nil
	}
	start := position{lsn: s.snapLSN}
	if s.snapRS.Max() > cdcsnap.Point(s.snapLSN) {
		start.rs = s.snapRS // some rows' changes count from later than the stream's start
	}
	if s.held != nil {
		s.held.Position, s.held.Handle = start.String(), start
		out = s.emit(out, s.held)
		s.held = nil
	}
	s.at = start
	s.log.Info("postgres_cdc read its snapshot; the change stream follows", "connector", s.d.cfg.CName, "rows", s.snapN, "lsn", s.snapLSN.String())
	if err := s.startStream(ctx); err != nil {
		s.disconnect(ctx)
		return out, err
	}
	return out, nil
}

// startStream starts replication at s.at: a transaction's end, or inside
// the transaction that commits at s.at.lsn (its first s.at.n changes are
// skipped).
func (s *source) startStream(ctx context.Context) error {
	d := s.d
	s.skip = position{}
	if s.at.n > 0 && !s.at.snapshot {
		s.skip = s.at
	}
	s.ranges = s.at.rs.ForStream(s.at.snapshot, s.keys, func() {
		s.log.Warn("postgres_cdc: a key of its position no longer reads as its table's key: every change of that table since the stream's start is delivered", "connector", d.cfg.CName)
	})
	args := []string{"proto_version '1'", "publication_names " + quoteLiteral(d.p.Publication)}
	if err := pglogrepl.StartReplication(ctx, s.repl, d.p.Slot, s.at.lsn, pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		var pe *pgconn.PgError
		if s.detached && errors.As(err, &pe) && pe.Code == "55006" {
			return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: replication slot %s is being read by another run of the flow: a one-off run (run --from/--until) reads the flow's slot, so stop the flow first: %w", d.cfg.CName, d.p.Slot, err))
		}
		return d.wrap("start replication from "+s.at.lsn.String(), err)
	}
	if s.stopping && s.stopLSN > 0 && !s.at.snapshot && s.at.lsn >= s.stopLSN {
		s.reached = true // nothing lies between the start and the stop
	}
	s.streaming = true
	s.confirmed = 0
	s.nextStatus = time.Now() // report the committed position at once
	s.log.Info("postgres_cdc streams changes", "connector", d.cfg.CName, "slot", d.p.Slot, "from", s.at.String())
	return nil
}

// status reports the committed position to the server: the LSN of the
// last committed position, or, when every message delivered is committed
// and none is held back, the WAL end the server reported meanwhile (no
// change of the publication's tables lies before it).
func (s *source) status(ctx context.Context) error {
	s.committed.Lock()
	lsn, pos := s.committed.lsn, s.committed.pos
	s.committed.Unlock()
	if pos == s.delivered && s.held == nil && !s.inTx && s.idle > lsn {
		lsn = s.idle
	}
	if lsn < s.confirmed {
		lsn = s.confirmed
	}
	if s.detached {
		lsn = 0 // a one-off run: the slot keeps its position (0 is not a position)
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn})
	if err != nil {
		return err
	}
	s.confirmed = lsn
	s.nextStatus = time.Now().Add(s.d.p.StatusInterval)
	return nil
}

func (s *source) readStream(ctx context.Context, max int) ([]*stream.Message, error) {
	d := s.d
	var out []*stream.Message
	fail := func(err error) ([]*stream.Message, error) {
		return out, d.wrap("replication stream", err) // Read disconnects
	}
	// Reads wait on the socket's deadline, not on a context per message
	// (pgconn watches each context it is given with a goroutine): the
	// deadline is the next status update, ctx's deadline, or, once some
	// rows came, a few milliseconds; ctx's cancellation cuts it short.
	nc := s.repl.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer stop()
	defer func() { _ = nc.SetReadDeadline(time.Time{}) }()
	for len(out) < max {
		now := time.Now()
		if !now.Before(s.nextStatus) {
			if err := s.status(context.WithoutCancel(ctx)); err != nil {
				return fail(err)
			}
		}
		deadline := s.nextStatus
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			if !now.Before(d) && len(out) == 0 {
				// ctx is over but its timer has not fired yet (a loaded
				// machine): wait for it rather than spin on timeouts.
				<-ctx.Done()
				return out, ctx.Err()
			}
			deadline = d
		}
		if soon := now.Add(5 * time.Millisecond); len(out) > 0 && soon.Before(deadline) {
			deadline = soon
		}
		_ = nc.SetReadDeadline(deadline)
		if ctx.Err() != nil {
			_ = nc.SetReadDeadline(time.Now())
		}
		raw, err := s.repl.ReceiveMessage(context.Background())
		if err != nil {
			if !pgconn.Timeout(err) || s.repl.IsClosed() {
				return fail(err)
			}
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			if len(out) > 0 {
				return out, nil
			}
			continue
		}
		switch m := raw.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fail(err)
				}
				if !s.inTx && s.held == nil && k.ServerWALEnd > s.idle {
					s.idle = k.ServerWALEnd
				}
				if k.ReplyRequested {
					s.nextStatus = time.Time{}
				}
				if s.stopping && s.stopLSN > 0 && !s.inTx && s.held == nil && k.ServerWALEnd >= s.stopLSN {
					s.reached = true // every transaction before the stop was sent
					return out, io.EOF
				}
				if s.stopping {
					// Answer soon: the server sends its next keepalive,
					// telling how far it read, only after an answer.
					if soon := time.Now().Add(100 * time.Millisecond); soon.Before(s.nextStatus) {
						s.nextStatus = soon
					}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fail(err)
				}
				if out, err = s.decode(out, x.WALData); err != nil {
					return fail(err)
				}
				if s.reached {
					return out, io.EOF
				}
			}
		case *pgproto3.ErrorResponse:
			return fail(pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return fail(errors.New("the server ended the replication stream"))
		}
	}
	return out, nil
}

// decode turns one pgoutput message into rows.
func (s *source) decode(out []*stream.Message, data []byte) ([]*stream.Message, error) {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return out, fmt.Errorf("decode pgoutput: %w", err)
	}
	change := func(rel uint32, op string, img, before *pglogrepl.TupleData) error {
		if s.skipTx {
			return nil // committed before the start time
		}
		s.txN++
		if s.skip.n > 0 && s.skip.lsn == s.txLSN && s.txN <= s.skip.n {
			return nil // committed before the restart
		}
		r, ok := s.relations[rel]
		if !ok {
			return fmt.Errorf("pgoutput: change of unknown relation %d", rel)
		}
		row, err := s.tuple(r, img)
		if err != nil {
			return err
		}
		if before != nil {
			b, err := s.tuple(r, before)
			if err != nil {
				return err
			}
			row["_before"] = b
		}
		if s.ranges != nil {
			half, ok := s.ranged(r.name, op, row)
			if !ok {
				return nil // the snapshot's image of the row holds it
			}
			if half != op { // the old key's half of an update: its delete
				row, op = row["_before"].(map[string]any), half
			}
		}
		row["_op"], row["_table"], row["_lsn"] = op, r.name, s.txText
		pos := position{lsn: s.txLSN, n: s.txN, rs: s.ranges}
		out = s.deliver(out, &stream.Message{Payload: row, Position: pos.String(), Handle: pos})
		return nil
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		r := &relation{RelationMessage: m, name: m.Namespace + "." + m.RelationName, types: make([]*pgtype.Type, len(m.Columns))}
		for i, c := range m.Columns {
			r.types[i], _ = s.types.TypeForOID(c.DataType)
		}
		s.relations[m.RelationID] = r
	case *pglogrepl.BeginMessage:
		if s.stopping && ((s.stopLSN > 0 && m.FinalLSN >= s.stopLSN) || (!s.stopTime.IsZero() && !m.CommitTime.Before(s.stopTime))) {
			s.reached = true
			s.log.Info("postgres_cdc reached its stop", "connector", s.d.cfg.CName, "next_commit", m.FinalLSN.String(), "commit_time", m.CommitTime)
			return out, nil
		}
		s.inTx, s.txLSN, s.txN = true, m.FinalLSN, 0
		s.txText = string(appendLSN(nil, m.FinalLSN))
		if s.ranges != nil && cdcsnap.Point(m.FinalLSN) >= s.ranges.Max() {
			s.ranges = nil // past the snapshot's ranges: every change counts
		}
		if !s.startTime.IsZero() {
			if s.skipTx = m.CommitTime.Before(s.startTime); !s.skipTx {
				s.startTime = time.Time{}
				s.log.Info("postgres_cdc starts at the first transaction committed at or after the start time", "connector", s.d.cfg.CName, "commit", m.FinalLSN.String(), "commit_time", m.CommitTime)
			}
		}
	case *pglogrepl.InsertMessage:
		err = change(m.RelationID, "insert", m.Tuple, nil)
	case *pglogrepl.UpdateMessage:
		err = change(m.RelationID, "update", m.NewTuple, m.OldTuple)
	case *pglogrepl.DeleteMessage:
		err = change(m.RelationID, "delete", m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if s.skipTx {
				break
			}
			r, ok := s.relations[id]
			if !ok {
				return out, fmt.Errorf("pgoutput: truncate of unknown relation %d", id)
			}
			s.txN++
			if s.skip.n > 0 && s.skip.lsn == s.txLSN && s.txN <= s.skip.n {
				continue
			}
			if s.ranges != nil && cdcsnap.Point(s.txLSN) < s.ranges.TableFrom(r.name) {
				continue // every part of the table was read from a snapshot after it
			}
			row := map[string]any{"_op": "truncate", "_table": r.name, "_lsn": s.txText}
			pos := position{lsn: s.txLSN, n: s.txN, rs: s.ranges}
			out = s.deliver(out, &stream.Message{Payload: row, Position: pos.String(), Handle: pos})
		}
	case *pglogrepl.CommitMessage:
		s.inTx, s.skipTx = false, false
		end := position{lsn: m.TransactionEndLSN, rs: s.ranges}
		if s.held != nil {
			s.held.Position, s.held.Handle = end.String(), end
			out = s.emit(out, s.held)
			s.held = nil
		} else if s.skip.n == 0 || s.skip.lsn != s.txLSN {
			// A transaction with no change of ours: nothing before its end
			// is left to deliver.
			if m.TransactionEndLSN > s.idle {
				s.idle = m.TransactionEndLSN
			}
		}
		if s.skip.lsn == s.txLSN {
			s.skip = position{}
		}
	}
	return out, err
}

// ranged decides, while the stream is within a resumed snapshot's ranges,
// whether a change of table's row is delivered (see Ranges.Delivered):
// not when committed before the LSN from which the row's changes count.
func (s *source) ranged(table, op string, row map[string]any) (string, bool) {
	return s.ranges.Delivered(table, op, row, cdcsnap.Point(s.txLSN), keyValue)
}

// tuple is a row image as a map of column to value; a TOASTed value the
// update did not change (and so the server did not send) is left out.
func (s *source) tuple(r *relation, td *pglogrepl.TupleData) (map[string]any, error) {
	row := make(map[string]any, len(td.Columns)+4)
	for i, col := range td.Columns {
		if i >= len(r.Columns) {
			break
		}
		c := r.Columns[i]
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[c.Name] = nil
		case pglogrepl.TupleDataTypeText:
			if t := r.types[i]; t != nil {
				v, err := t.Codec.DecodeValue(s.types, c.DataType, pgtype.TextFormatCode, col.Data)
				if err != nil {
					return nil, fmt.Errorf("column %s of %s: %w", c.Name, r.name, err)
				}
				row[c.Name] = v
			} else {
				row[c.Name] = string(col.Data)
			}
		case pglogrepl.TupleDataTypeBinary:
			row[c.Name] = append([]byte(nil), col.Data...)
		}
	}
	return row, nil
}

// relation is a table as the stream describes it, with what decoding
// its changes needs.
type relation struct {
	*pglogrepl.RelationMessage
	name  string         // schema.table, as _table holds it
	types []*pgtype.Type // each column's type (nil: unknown, its text is kept)
}
