package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/stream"
)

// OpenSource joins the consumer group of the stream named by key (created
// with the group if missing).
func (r *Redis) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if !r.key.Static() {
		return nil, fmt.Errorf("redis connector %q: a source needs a plain stream key, not the template %q", r.cfg.CName, r.cfg.Key)
	}
	group := r.group
	if group == "" {
		group = opts.Name
	}
	consumer := r.consumer
	if consumer == "" {
		consumer = defaultConsumer()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &source{r: r, key: r.cfg.Key, group: group, consumer: consumer, pendingFrom: "0",
		log:      log.With("connector", r.cfg.CName, "stream", r.cfg.Key, "group", group, "consumer", consumer),
		inflight: make(map[string]time.Time)}
	if opts.Detached {
		return r.openRange(ctx, s, opts)
	}
	if err := s.createGroup(ctx); err != nil {
		return nil, s.fail("create the group", err)
	}
	if !opts.Start.IsZero() {
		id, err := startID(opts.Start)
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: stream.start: %w", r.cfg.CName, err)
		}
		if err := r.client.XGroupSetID(ctx, s.key, group, id).Err(); err != nil {
			return nil, s.fail("set the group's start", err)
		}
	}
	if !opts.Stop.IsZero() {
		b, err := r.stopOf(ctx, opts.Stop)
		if err != nil {
			return nil, fmt.Errorf("redis connector %q: stream.stop: %w", r.cfg.CName, err)
		}
		s.bounds = b
	}
	s.reader = r.client
	if r.shared == nil {
		// Reads and claims move entries to this consumer: one whose reply
		// was lost must surface (see lostReply), not be retried unseen.
		// Acknowledgements are idempotent and keep go-redis's retries.
		o := *r.opts
		o.MaxRetries = -1
		s.reader, s.ownReader = goredis.NewUniversalClient(&o), true
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopKeepAlive, s.keptAlive = stop, make(chan struct{})
	go s.keepAlive(kctx)
	return s, nil
}

// leaveGroup deletes a consumer (ARGV[2]) of the group (ARGV[1]) of the
// stream KEYS[1] when it has no entry pending: deleting one with pending
// entries would drop them from the group.
var leaveGroup = goredis.NewScript(`
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1`)

func defaultConsumer() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// source reads a stream in a consumer group. It hands out each entry once
// while it is in flight (read and not yet acknowledged): first this
// consumer's own pending entries (left by an earlier process of the same
// consumer name), then entries of other consumers idle for claim_idle,
// then new entries.
type source struct {
	r *Redis
	// bounds is the stop (stream.stop), nil for none.
	bounds *redisBounds
	// reader runs the commands that deliver entries (XREADGROUP,
	// XAUTOCLAIM); ownReader when the source opened it.
	reader    goredis.UniversalClient
	ownReader bool
	key       string
	group     string
	consumer  string
	log       *slog.Logger

	// Read's own state (Read is called by one goroutine).

	// pendingFrom is the cursor in this consumer's pending history: the
	// next read asks for the entries after it ("" once it is all read).
	pendingFrom string
	// claimFrom is the XAUTOCLAIM cursor of the pass under way ("" between
	// passes); claimed counts what the pass took; nextClaim is when the
	// next pass starts.
	claimFrom string
	claimed   int
	nextClaim time.Time

	mu sync.Mutex
	// inflight holds the IDs handed out and not yet acknowledged, with when
	// they were handed out or last kept alive: a pending read or a claim
	// never hands them out again.
	inflight map[string]time.Time
	// acked, while a pending read or a claim is under way, collects the IDs
	// acknowledged meanwhile: the reply may still list them.
	acked map[string]struct{}
	// rescan asks for the pending history to be read again from its start
	// (entries were given back with Nack).
	rescan bool

	stopKeepAlive context.CancelFunc
	keptAlive     chan struct{} // closed when keepAlive returned
}

// fail names the connector, stream and group in err, and marks it for the
// runtime (see classify).
func (s *source) fail(op string, err error) error {
	if errors.Is(err, io.EOF) {
		// The server closed the connection; io.EOF would tell the runtime
		// the stream is exhausted, and end the job.
		err = fmt.Errorf("connection closed by the server (%v)", err)
	}
	return fmt.Errorf("redis connector %q: stream %s, group %s: %s: %w", s.r.cfg.CName, s.key, s.group, op, classify(err, false))
}

// claimInterval is the rest between XAUTOCLAIM passes that found nothing:
// a tenth of claim_idle, at most a second, so the entries of a consumer
// that died are taken over soon after they have been idle for claim_idle.
func (s *source) claimInterval() time.Duration {
	return min(max(s.r.claimIdle/10, time.Millisecond), time.Second)
}

// Read returns up to limit entries. It returns an error only when ctx is
// done (its error, once ctx.Done is closed) or Redis failed: a read that
// found nothing within ctx's deadline waits for ctx and returns its error,
// never one of its own.
func (s *source) Read(ctx context.Context, limit int) ([]*stream.Message, error) {
	for attempt := 0; ; attempt++ {
		msgs, err := s.read(ctx, limit)
		if err == nil || errors.Is(err, io.EOF) || attempt == 3 || ctx.Err() != nil || stream.IsFatal(err) {
			return msgs, err
		}
		// A lost connection (Redis restarting, a network blip): try again
		// a few times, as go-redis does for other commands, before the
		// runtime hears of it.
		select {
		case <-ctx.Done():
			return nil, s.fail("read", ctx.Err())
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
	}
}

// read is one attempt of Read.
func (s *source) read(ctx context.Context, limit int) ([]*stream.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, s.fail("read", err)
		}
		s.mu.Lock()
		if s.rescan {
			s.rescan, s.pendingFrom = false, "0"
		}
		s.mu.Unlock()
		if s.pendingFrom != "" {
			msgs, err := s.readPending(ctx, limit)
			if err != nil || len(msgs) > 0 {
				return msgs, err
			}
			continue
		}
		if s.claimFrom != "" || !time.Now().Before(s.nextClaim) {
			msgs, err := s.claim(ctx, limit)
			if err != nil || len(msgs) > 0 {
				return msgs, err
			}
		}
		if s.bounds.reached() {
			// Every entry up to the stop was delivered (this consumer's
			// pending ones were read first): the run ends once none of
			// them is pending with another consumer, else it waits for
			// the claim pass that takes them.
			done, err := s.bounds.settled(ctx, s)
			if err != nil {
				return nil, s.fail("read the group's pending entries", err)
			}
			if done {
				return nil, io.EOF
			}
			wait := max(min(time.Until(s.nextClaim), 200*time.Millisecond), time.Millisecond)
			select {
			case <-ctx.Done():
				return nil, s.fail("read", ctx.Err())
			case <-time.After(wait):
			}
			continue
		}
		block := s.r.block
		if s.bounds != nil {
			block = min(block, 200*time.Millisecond)
		}
		if s.claimFrom == "" {
			block = min(block, max(time.Until(s.nextClaim), time.Millisecond)) // wake for the next claim pass
		}
		if dl, ok := ctx.Deadline(); ok {
			block = min(block, time.Until(dl))
		}
		if block < time.Millisecond {
			// Nothing came before the deadline: an empty poll. Answer
			// when ctx says it is done, so the caller sees why.
			<-ctx.Done()
			return nil, s.fail("read", ctx.Err())
		}
		entries, err := s.readGroup(ctx, ">", limit, block)
		if err != nil {
			return nil, err
		}
		if s.bounds != nil {
			entries = s.bounds.keep(entries)
			if len(entries) == 0 && !s.bounds.reached() {
				if err := s.bounds.idle(ctx, s); err != nil {
					return nil, s.fail("read the group", err)
				}
			}
		}
		if len(entries) > 0 {
			return s.handOut(entries, false), nil
		}
	}
}

// readPending reads the next part of this consumer's pending history and
// moves the cursor past it.
func (s *source) readPending(ctx context.Context, limit int) ([]*stream.Message, error) {
	s.watchAcks()
	entries, err := s.readGroup(ctx, s.pendingFrom, limit, -1)
	if err != nil {
		s.handOut(nil, true)
		return nil, err
	}
	if len(entries) < limit {
		s.pendingFrom = "" // all read: what follows is new
	} else {
		s.pendingFrom = entries[len(entries)-1].ID
	}
	// Entries past the stop stay pending, for the next run.
	return s.handOut(s.bounds.keep(entries), true), nil
}

// readGroup runs XREADGROUP. The command is not given ctx's deadline: a
// blocking read ends by itself (block never outlasts the deadline), where
// a client-side timeout would close the connection and could come before
// ctx reports it is done, making an empty poll look like a failure.
func (s *source) readGroup(ctx context.Context, id string, count int, block time.Duration) ([]goredis.XMessage, error) {
	rctx, stop := withoutDeadline(ctx)
	defer stop()
	for recreated := false; ; recreated = true {
		res, err := s.reader.XReadGroup(rctx, &goredis.XReadGroupArgs{
			Group: s.group, Consumer: s.consumer, Streams: []string{s.key, id}, Count: int64(count), Block: block,
		}).Result()
		switch {
		case err == nil:
			if len(res) == 0 {
				return nil, nil
			}
			return res[0].Messages, nil
		case errors.Is(err, goredis.Nil):
			return nil, nil // nothing within block
		case rctx.Err() != nil:
			return nil, s.fail("read", rctx.Err())
		case goredis.HasErrorPrefix(err, "NOGROUP") && !recreated:
			if err := s.recreateGroup(ctx); err != nil {
				return nil, err
			}
			if id != ">" {
				return nil, nil // a new group holds nothing pending
			}
		default:
			s.lostReply()
			return nil, s.fail("read", err)
		}
	}
}

// lostReply is called after a read or claim failed: if Redis ran it but
// its reply was lost with the connection, entries it delivered or claimed are
// pending for this consumer, yet were never handed out. The pending
// history is read again from its start (leaving out what is in flight),
// so they are not left waiting for claim_idle.
func (s *source) lostReply() {
	s.pendingFrom = "0"
}

// withoutDeadline returns a context cancelled with ctx, but not when ctx
// only runs out of time.
func withoutDeadline(ctx context.Context) (context.Context, func()) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	return rctx, func() { stop(); cancel() }
}

// createGroup creates the consumer group (and the stream) if missing.
func (s *source) createGroup(ctx context.Context) error {
	err := s.r.client.XGroupCreateMkStream(ctx, s.key, s.group, "0").Err()
	if err != nil && !goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// recreateGroup creates the group again after Redis lost it (a restart
// without persistence, the stream deleted). Entries handed out before are
// gone from the server with it: their acknowledgements change nothing.
func (s *source) recreateGroup(ctx context.Context) error {
	if err := s.createGroup(ctx); err != nil {
		return s.fail("re-create the lost group", err)
	}
	s.log.Warn("redis consumer group was missing (Redis restarted without persistence, or the stream was deleted): re-created it with MKSTREAM; entries of the lost group are not redelivered")
	s.pendingFrom, s.claimFrom = "", ""
	return nil
}

// claim takes over entries that other consumers (or this one, in an
// earlier process) read and did not acknowledge for claim_idle: their
// consumer died. It fills up to limit entries with as many XAUTOCLAIM
// calls as that takes; a pass that took some starts the next at once, one
// that found none rests claimInterval.
func (s *source) claim(ctx context.Context, limit int) ([]*stream.Message, error) {
	if s.claimFrom == "" {
		s.claimFrom, s.claimed = "0-0", 0
	}
	rctx, stop := withoutDeadline(ctx) // as in readGroup
	defer stop()
	var out []*stream.Message
	for len(out) < limit && ctx.Err() == nil {
		s.watchAcks()
		entries, next, err := s.reader.XAutoClaim(rctx, &goredis.XAutoClaimArgs{
			Stream: s.key, Group: s.group, Consumer: s.consumer, MinIdle: s.r.claimIdle, Start: s.claimFrom, Count: int64(limit - len(out)),
		}).Result()
		if err != nil {
			s.handOut(nil, true)
			s.lostReply()
			if len(out) > 0 {
				return out, nil // the error comes back at the next call
			}
			if goredis.HasErrorPrefix(err, "NOGROUP") {
				return nil, s.recreateGroup(ctx)
			}
			if rctx.Err() != nil {
				err = rctx.Err()
			}
			return nil, s.fail("claim idle entries", err)
		}
		s.claimed += len(entries)
		// Entries past the stop stay pending (now with this consumer).
		out = append(out, s.handOut(s.bounds.keep(entries), true)...)
		s.claimFrom = next
		if next == "0-0" {
			s.claimFrom = ""
			if s.claimed == 0 {
				s.nextClaim = time.Now().Add(s.claimInterval())
			}
			break
		}
	}
	return out, nil
}

// watchAcks starts collecting acknowledgements, for handOut to tell which
// entries of a pending read or claim were acknowledged meanwhile.
func (s *source) watchAcks() {
	s.mu.Lock()
	s.acked = make(map[string]struct{})
	s.mu.Unlock()
}

// handOut makes messages of entries and records them in flight. With
// filter, entries already in flight or acknowledged since watchAcks are
// left out; it also ends the watch.
func (s *source) handOut(entries []goredis.XMessage, filter bool) []*stream.Message {
	slab := make([]stream.Message, len(entries))
	out := make([]*stream.Message, 0, len(entries))
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range entries {
		if filter {
			if _, busy := s.inflight[e.ID]; busy {
				continue
			}
			if _, done := s.acked[e.ID]; done {
				continue
			}
		}
		s.inflight[e.ID] = now
		m := &slab[i]
		switch v, ok := e.Values[s.r.field].(string); {
		case e.Values == nil:
			// Pending, but trimmed from the stream: nothing to run.
			m.Failed = fmt.Errorf("redis stream %s: entry %s was deleted from the stream before it was acknowledged", s.key, e.ID)
		case ok && len(e.Values) == 1:
			m.Payload = v
		default:
			row := make(map[string]any, len(e.Values))
			for k, v := range e.Values {
				row[k] = v
			}
			m.Payload = row
		}
		m.Handle = e.ID
		m.ID = e.ID
		out = append(out, m)
	}
	if filter {
		s.acked = nil
	}
	return out
}

// done takes msgs out of flight.
func (s *source) done(msgs []*stream.Message, acked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		id := m.Handle.(string)
		delete(s.inflight, id)
		if acked && s.acked != nil {
			s.acked[id] = struct{}{}
		}
	}
}

// Ack acknowledges entries with XACK. An entry whose acknowledgement
// failed stays in flight (the runtime tries again, or gives it back with
// Nack).
func (s *source) Ack(ctx context.Context, msgs []*stream.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Handle.(string)
	}
	if err := s.r.client.XAck(ctx, s.key, s.group, ids...).Err(); err != nil {
		return s.fail("ack", err)
	}
	s.done(msgs, true)
	return nil
}

// Nack gives msgs back: they stay pending for this consumer, and the next
// Read reads the pending history again from its start to deliver them.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, _ error) error {
	s.done(msgs, false)
	s.mu.Lock()
	s.rescan = true
	s.mu.Unlock()
	return nil
}

// Lag is the number of stream entries the group has not acknowledged: those
// not delivered yet (XINFO GROUPS "lag"; Redis 7) plus its pending entries.
// Redis cannot tell the first after entries were deleted from the middle of
// the stream: then Lag reports an error.
func (s *source) Lag(ctx context.Context) (int64, error) {
	groups, err := s.r.client.XInfoGroups(ctx, s.key).Result()
	if err != nil {
		return 0, s.fail("group lag", err)
	}
	for _, g := range groups {
		if g.Name != s.group {
			continue
		}
		if g.Lag < 0 {
			return 0, s.fail("group lag", errors.New("lag unknown to the server"))
		}
		return g.Lag + g.Pending, nil
	}
	return 0, s.fail("group lag", errors.New("group not found"))
}

// keepAlive runs until Close. Every third of claim_idle it resets the idle
// time of the entries in flight for longer than that (XCLAIM to this same
// consumer, JUSTID, which does not count a delivery), so other consumers
// do not claim entries this one is still working on: batches waiting for
// a slow sink are not taken over and run twice. An entry another consumer
// claimed meanwhile has been idle for less and is left to it.
func (s *source) keepAlive(ctx context.Context) {
	defer close(s.keptAlive)
	every := max(s.r.claimIdle/3, time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		var ids []string
		s.mu.Lock()
		for id, at := range s.inflight {
			if now.Sub(at) >= every {
				ids = append(ids, id)
				s.inflight[id] = now
			}
		}
		s.mu.Unlock()
		for len(ids) > 0 {
			chunk := ids[:min(len(ids), 1000)]
			ids = ids[len(chunk):]
			err := s.r.client.XClaimJustID(ctx, &goredis.XClaimArgs{
				Stream: s.key, Group: s.group, Consumer: s.consumer, MinIdle: every, Messages: chunk,
			}).Err()
			if err != nil && ctx.Err() == nil {
				// Reads report a lost server; here it only means other
				// consumers may claim these entries after claim_idle.
				s.log.Debug("redis source: keeping entries in flight failed", "entries", len(chunk), "error", err)
			}
		}
	}
}

// Close stops keeping entries alive and leaves the entries this consumer
// did not acknowledge pending: the same consumer re-reads them on restart;
// others claim them after claim_idle.
func (s *source) Close(ctx context.Context) error {
	s.stopKeepAlive()
	<-s.keptAlive
	// A consumer with nothing pending leaves the group, so that kisflow
	// positions set need not take it for a run that holds the group.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := leaveGroup.Run(dctx, s.r.client, []string{s.key}, s.group, s.consumer).Err(); err != nil {
		s.log.Debug("redis consumer did not leave the group", "err", err)
	}
	cancel()
	if s.ownReader {
		return s.reader.Close()
	}
	return nil
}
