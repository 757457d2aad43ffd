package redis

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/stream"
)

// Seeks says that a Redis Streams source starts at earliest, latest, an
// entry ID or a time, and stops at the stream's last entry at the run's
// start, at an ID or at a time.
func (r *Redis) Seeks() stream.SeekSupport {
	return stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition, stream.AtTime},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition, stream.AtTime},
		Form:  "an entry ID (1764527000000-0; a start reads the entries after it, a stop reads those before it)",
		Order: func(p string) ([]uint64, error) {
			id, err := parseID(p)
			if err != nil {
				return nil, err
			}
			return []uint64{id.ms, id.seq}, nil
		},
	}
}

// entryID is a stream entry ID, ordered.
type entryID struct{ ms, seq uint64 }

func parseID(s string) (entryID, error) {
	ms, seq, _ := strings.Cut(s, "-")
	a, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return entryID{}, fmt.Errorf("bad entry ID %q (want MS-SEQ, such as 1764527000000-0)", s)
	}
	var b uint64
	if seq != "" {
		if b, err = strconv.ParseUint(seq, 10, 64); err != nil {
			return entryID{}, fmt.Errorf("bad entry ID %q (want MS-SEQ, such as 1764527000000-0)", s)
		}
	}
	return entryID{a, b}, nil
}

func (a entryID) less(b entryID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

// before is the ID just before a (the last one a stop at a reads).
func (a entryID) before() entryID {
	switch {
	case a.seq > 0:
		return entryID{a.ms, a.seq - 1}
	case a.ms > 0:
		return entryID{a.ms - 1, math.MaxUint64}
	}
	return entryID{}
}

func (a entryID) String() string { return fmt.Sprintf("%d-%d", a.ms, a.seq) }

// startID is the group's last-delivered ID for a start: the group reads
// the entries after it.
func startID(b stream.Bound) (string, error) {
	switch b.Kind {
	case stream.Earliest:
		return "0", nil
	case stream.Latest:
		return "$", nil
	case stream.AtPosition:
		id, err := parseID(b.Position)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	case stream.AtTime:
		return entryID{uint64(b.Time.UnixMilli()), 0}.before().String(), nil
	}
	return "", fmt.Errorf("cannot start at %s", b)
}

// redisBounds is a Redis Streams source's stop: the last ID it reads.
//
// done says that the group has delivered every entry up to the stop; the
// run ends only once none of them is pending with another consumer of the
// group too (see settled): entries a killed run left pending are claimed
// after claim_idle, and a run that ended before would leave them unread
// below its stop.
type redisBounds struct {
	last entryID
	done atomic.Bool

	told bool // the wait for other consumers' entries was logged (only Read uses it)
}

// stopOf resolves a stop.
func (r *Redis) stopOf(ctx context.Context, b stream.Bound) (*redisBounds, error) {
	rb := &redisBounds{}
	switch b.Kind {
	case stream.AtStart:
		info, err := r.client.XInfoStream(ctx, r.cfg.Key).Result()
		if err != nil && !goredis.HasErrorPrefix(err, "ERR no such key") {
			return nil, err
		}
		if info != nil {
			if rb.last, err = parseID(info.LastGeneratedID); err != nil {
				return nil, err
			}
		}
	case stream.AtPosition:
		id, err := parseID(b.Position)
		if err != nil {
			return nil, err
		}
		rb.last = id.before()
	case stream.AtTime:
		rb.last = entryID{uint64(b.Time.UnixMilli()), 0}.before()
	default:
		return nil, fmt.Errorf("cannot stop at %s", b)
	}
	return rb, nil
}

func (b *redisBounds) reached() bool { return b != nil && b.done.Load() }

// keep drops the entries past the stop (they stay pending for this
// consumer, read again by the next run) and learns when it is reached.
func (b *redisBounds) keep(entries []goredis.XMessage) []goredis.XMessage {
	if b == nil {
		return entries
	}
	out := entries[:0]
	for _, e := range entries {
		id, err := parseID(e.ID)
		if err != nil || b.last.less(id) {
			b.done.Store(true)
			continue
		}
		if !id.less(b.last) {
			b.done.Store(true)
		}
		out = append(out, e)
	}
	return out
}

// idle ends the read when the group has delivered every entry up to the
// stop.
func (b *redisBounds) idle(ctx context.Context, s *source) error {
	groups, err := s.r.client.XInfoGroups(ctx, s.key).Result()
	if err != nil {
		return err
	}
	for _, g := range groups {
		if g.Name != s.group {
			continue
		}
		id, err := parseID(g.LastDeliveredID)
		if err == nil && !id.less(b.last) {
			b.done.Store(true)
		}
	}
	return nil
}

// settled reports whether no entry up to the stop is pending with another
// consumer of the group than s's: entries a killed run left pending (its
// own consumer name is gone) are claimed once idle for claim_idle, and
// only then read. It logs the first wait, saying so.
func (b *redisBounds) settled(ctx context.Context, s *source) (bool, error) {
	from := "-"
	for {
		pending, err := s.r.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: s.key, Group: s.group, Start: from, End: b.last.String(), Count: 100,
		}).Result()
		if err != nil {
			return false, err
		}
		for _, p := range pending {
			if p.Consumer == s.consumer {
				continue
			}
			if !b.told {
				b.told = true
				s.log.Warn(fmt.Sprintf("redis source %s: waiting at the stop %s: entry %s before it is pending with consumer %s (idle %s, a run that ended without acknowledging it); it is claimed once idle for claim_idle (%s)",
					s.key, b.last, p.ID, p.Consumer, p.Idle.Round(time.Millisecond), s.r.claimIdle))
			}
			return false, nil
		}
		if len(pending) < 100 {
			return true, nil
		}
		from = "(" + pending[len(pending)-1].ID
	}
}

// Positions tells the consumer group's last delivered ID, the stream's
// last entry and the group's lag (entries not delivered yet, Redis 7) plus
// those delivered and not acknowledged.
func (r *Redis) Positions(ctx context.Context, opts stream.SourceOptions, _ string) (stream.Positions, error) {
	group := r.group
	if group == "" {
		group = opts.Name
	}
	p := stream.Positions{Where: "consumer group " + group, Lag: -1, Unit: "messages"}
	info, err := r.client.XInfoStream(ctx, r.cfg.Key).Result()
	if err != nil {
		return p, fmt.Errorf("redis connector %q: stream %s: %w", r.cfg.CName, r.cfg.Key, err)
	}
	p.Head = info.LastGeneratedID
	groups, err := r.client.XInfoGroups(ctx, r.cfg.Key).Result()
	if err != nil {
		return p, fmt.Errorf("redis connector %q: stream %s: %w", r.cfg.CName, r.cfg.Key, err)
	}
	for _, g := range groups {
		if g.Name == group {
			p.Committed = g.LastDeliveredID
			if g.Lag >= 0 {
				p.Lag = g.Lag + g.Pending
			}
		}
	}
	return p, nil
}

// SeekPosition sets the consumer group's last-delivered ID (XGROUP SETID),
// refused while a consumer of the group read lately (a run of the flow).
// Entries pending for a consumer stay pending: they are read again.
func (r *Redis) SeekPosition(ctx context.Context, opts stream.SourceOptions, to stream.Bound) (string, error) {
	group := r.group
	if group == "" {
		group = opts.Name
	}
	id, err := startID(to)
	if err != nil {
		return "", err
	}
	consumers, err := r.client.XInfoConsumers(ctx, r.cfg.Key, group).Result()
	if err != nil && !goredis.HasErrorPrefix(err, "NOGROUP") && !goredis.HasErrorPrefix(err, "ERR no such key") {
		return "", fmt.Errorf("redis connector %q: consumers of group %s: %w", r.cfg.CName, group, err)
	}
	busy := 3*r.block + 2*time.Second
	for _, c := range consumers {
		if c.Idle < busy {
			return "", fmt.Errorf("consumer %s of group %s read %s ago: a run of the flow holds it; stop it first, or if it has stopped, try again in %s (a consumer idle for %s is taken for stopped; one that stopped with entries pending stays in the group)", c.Name, group, c.Idle.Round(time.Millisecond), (busy - c.Idle).Round(100*time.Millisecond), busy)
		}
	}
	if err := r.client.XGroupCreateMkStream(ctx, r.cfg.Key, group, id).Err(); err != nil {
		if !goredis.HasErrorPrefix(err, "BUSYGROUP") {
			return "", fmt.Errorf("redis connector %q: group %s: %w", r.cfg.CName, group, err)
		}
		if err := r.client.XGroupSetID(ctx, r.cfg.Key, group, id).Err(); err != nil {
			return "", fmt.Errorf("redis connector %q: group %s: %w", r.cfg.CName, group, err)
		}
	}
	return "after " + id, nil
}

// rangeSource is a one-off run's reader (kisflow run --from/--until): it
// reads the stream with XRANGE from its start to its stop, without the
// consumer group, and acknowledges nothing.
type rangeSource struct {
	s      *source // for the payloads (field, key)
	cursor string  // the last ID read ("": none, read from the start)
	bounds *redisBounds
	poll   time.Duration
}

// openRange opens a one-off reader: from the group's last delivered ID
// (start committed), or the start given.
func (r *Redis) openRange(ctx context.Context, s *source, opts stream.SourceOptions) (stream.Source, error) {
	rs := &rangeSource{s: s, poll: min(r.block, 200*time.Millisecond)}
	switch opts.Start.Kind {
	case stream.Committed:
		groups, err := r.client.XInfoGroups(ctx, r.cfg.Key).Result()
		if err != nil && !goredis.HasErrorPrefix(err, "ERR no such key") {
			return nil, fmt.Errorf("redis connector %q: stream %s: %w", r.cfg.CName, r.cfg.Key, err)
		}
		for _, g := range groups {
			if g.Name == s.group {
				rs.cursor = g.LastDeliveredID
			}
		}
	case stream.Latest:
		info, err := r.client.XInfoStream(ctx, r.cfg.Key).Result()
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: stream %s: %w", r.cfg.CName, r.cfg.Key, err)
		}
		rs.cursor = info.LastGeneratedID
	default:
		id, err := startID(opts.Start)
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: --from: %w", r.cfg.CName, err)
		}
		if id != "0" {
			rs.cursor = id
		}
	}
	if !opts.Stop.IsZero() {
		b, err := r.stopOf(ctx, opts.Stop)
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: --until: %w", r.cfg.CName, err)
		}
		rs.bounds = b
	}
	return rs, nil
}

// Read returns the next entries after the cursor, up to the stop.
func (rs *rangeSource) Read(ctx context.Context, limit int) ([]*stream.Message, error) {
	for {
		if rs.bounds.reached() {
			return nil, io.EOF
		}
		from := "-"
		if rs.cursor != "" {
			from = "(" + rs.cursor
		}
		entries, err := rs.s.r.client.XRangeN(ctx, rs.s.key, from, "+", int64(limit)).Result()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("redis source %s: %w", rs.s.key, err)
		}
		if len(entries) > 0 {
			rs.cursor = entries[len(entries)-1].ID
		}
		entries = rs.bounds.keep(entries)
		if len(entries) > 0 {
			return rs.s.handOut(entries, false), nil
		}
		if rs.bounds != nil && !rs.bounds.reached() && rs.cursor != "" {
			if id, err := parseID(rs.cursor); err == nil && !id.less(rs.bounds.last) {
				rs.bounds.done.Store(true)
			}
		}
		if rs.bounds.reached() {
			return nil, io.EOF
		}
		if rs.bounds != nil && rs.bounds.last == (entryID{}) {
			return nil, io.EOF // at_start on an empty stream
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(rs.poll):
		}
	}
}

// Ack takes the entries out of flight: a one-off run commits nothing.
func (rs *rangeSource) Ack(_ context.Context, msgs []*stream.Message) error {
	rs.s.done(msgs, false)
	return nil
}

// Close does nothing: a one-off reader holds no group state.
func (rs *rangeSource) Close(context.Context) error { return nil }
