package pgcdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/kisflow-go/kisflow/stream"
)

// Seeks says what a postgres_cdc source can start and stop at. A slot
// streams only from its confirmed position on (the server frees the WAL
// before it), so a start position must not lie before that; earliest is a
// new snapshot of the tables (with params.snapshot) followed by the
// changes from the slot's position.
func (d *CDC) Seeks() stream.SeekSupport {
	return stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition, stream.AtTime},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition, stream.AtTime},
		Form: "an LSN (0/16B3748): a start reads the transactions that commit at or after it, not before the slot's confirmed position; " +
			"a stop ends before the first transaction that commits at or after it; a time is a transaction's commit time; earliest is a new snapshot",
	}
}

// Positions tells, for kisflow positions, the server's WAL end (the head)
// and the lag in bytes between the committed LSN and it.
func (d *CDC) Positions(ctx context.Context, _ stream.SourceOptions, committed string) (stream.Positions, error) {
	p := stream.Positions{Lag: -1, Unit: "bytes of WAL"}
	conn, err := d.plain(ctx)
	if err != nil {
		return p, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	head, err := d.walEnd(ctx, conn)
	if err != nil {
		return p, err
	}
	p.Head = head.String()
	if c, err := parsePosition(committed); err == nil && committed != "" && !c.snapshot && c.lsn <= head {
		p.Lag = int64(head - c.lsn)
	}
	return p, nil
}

// SeekPosition returns the position for the runtime to store so that the
// next run starts at to: an LSN not before the slot's confirmed position,
// the server's WAL end (latest), or a new snapshot (earliest). It is
// refused while a run reads the slot, and for a time (the server keeps no
// index of commit times: use stream.start {time: T}).
func (d *CDC) SeekPosition(ctx context.Context, _ stream.SourceOptions, to stream.Bound) (string, error) {
	conn, err := d.plain(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	slot, err := d.slotState(ctx, conn)
	if err != nil {
		return "", err
	}
	if slot.active {
		return "", fmt.Errorf("postgres_cdc connector %q: replication slot %s is being read (server process %d): a run of the flow holds it; stop it first", d.cfg.CName, d.p.Slot, slot.pid)
	}
	switch to.Kind {
	case stream.Earliest:
		return position{snapshot: true}.String(), nil
	case stream.Latest:
		head, err := d.walEnd(ctx, conn)
		if err != nil {
			return "", err
		}
		return max(head, slot.flushed).String(), nil
	case stream.AtPosition:
		p, err := d.startPosition(to.Position)
		if err != nil {
			return "", err
		}
		if err := d.readable(p, slot, ""); err != nil {
			return "", err
		}
		return p.String(), nil
	}
	return "", fmt.Errorf("postgres_cdc connector %q cannot move a committed position to %s: the server keeps no index of commit times; use --to an LSN, --earliest or --latest (a run can start at a time: stream.start {time: T}, or run --from T)", d.cfg.CName, to)
}

// startPosition parses a start position given by a user.
func (d *CDC) startPosition(s string) (position, error) {
	p, err := parsePosition(s)
	if err != nil || s == "" {
		return p, fmt.Errorf("postgres_cdc connector %q: start position %q: want an LSN such as 0/16B3748 (err %v)", d.cfg.CName, s, err)
	}
	return p, nil
}

// stopPosition parses a stop position: an LSN at a transaction's end.
func (d *CDC) stopPosition(s string) (pglogrepl.LSN, error) {
	p, err := parsePosition(s)
	if err != nil || s == "" || p.n > 0 || p.snapshot {
		return 0, stream.Fatal(fmt.Errorf("postgres_cdc connector %q: stream.stop position %q: want an LSN such as 0/16B3748 (a transaction's end, as kisflow positions shows it)", d.cfg.CName, s))
	}
	return p.lsn, nil
}

// readable refuses a start position before the slot's confirmed position
// (other than the flow's committed one): the server no longer keeps the
// changes between, and would skip them without a word.
func (d *CDC) readable(p position, slot slotState, committed string) error {
	if !slot.exists || p.snapshot || p.lsn >= slot.flushed {
		return nil
	}
	if c, err := parsePosition(committed); err == nil && committed != "" && c.lsn == p.lsn {
		return nil
	}
	return stream.Fatal(fmt.Errorf("postgres_cdc connector %q: position %s is before replication slot %s's confirmed position %s: the server no longer keeps the changes before that; start at %s or later, or at earliest (a new snapshot of the tables)", d.cfg.CName, p, d.p.Slot, slot.flushed, slot.flushed))
}

// slotState is what the server says of the slot.
type slotState struct {
	exists, active bool
	pid            int32
	flushed        pglogrepl.LSN // confirmed_flush_lsn
}

func (d *CDC) slotState(ctx context.Context, conn *pgx.Conn) (slotState, error) {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var s slotState
	var flushed string
	var pid *int32
	err := conn.QueryRow(qctx, "SELECT coalesce(confirmed_flush_lsn::text, ''), active, active_pid FROM pg_replication_slots WHERE slot_name = $1", d.p.Slot).Scan(&flushed, &s.active, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, d.wrap("look up slot "+d.p.Slot, err)
	}
	s.exists = true
	if pid != nil {
		s.pid = *pid
	}
	if flushed != "" {
		if s.flushed, err = pglogrepl.ParseLSN(flushed); err != nil {
			return s, d.wrap("read slot "+d.p.Slot, err)
		}
	}
	return s, nil
}

// walEnd is the server's WAL flushed so far: what a replication stream
// reaches once it has read everything committed before.
func (d *CDC) walEnd(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	qctx, cancel := context.WithTimeout(ctx, d.p.Timeout)
	defer cancel()
	var s string
	if err := conn.QueryRow(qctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		return 0, d.wrap("read the WAL's end (pg_current_wal_flush_lsn)", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, d.wrap("read the WAL's end", err)
	}
	return lsn, nil
}
