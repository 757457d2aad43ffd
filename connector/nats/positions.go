package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kisflow-go/kisflow/stream"
)

// Seeks says that a JetStream source starts at earliest, latest, a stream
// sequence or a time, and stops at the stream's last sequence at the
// run's start, at a sequence or at a time.
func (n *NATS) Seeks() stream.SeekSupport {
	return stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition, stream.AtTime},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition, stream.AtTime},
		Form:  "a stream sequence (a stop position is the first sequence not read)",
		Order: func(p string) ([]uint64, error) {
			seq, err := strconv.ParseUint(p, 10, 64)
			if err != nil || seq == 0 {
				return nil, errors.New("not a stream sequence of 1 or more")
			}
			return []uint64{seq}, nil
		},
	}
}

// startAt sets the deliver policy of cfg for a start.
func startAt(cfg *jetstream.ConsumerConfig, b stream.Bound) error {
	switch b.Kind {
	case stream.Committed, stream.Earliest:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case stream.Latest:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case stream.AtPosition:
		seq, err := strconv.ParseUint(b.Position, 10, 64)
		if err != nil || seq == 0 {
			return fmt.Errorf("bad position %q: want a stream sequence (1 or more)", b.Position)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
	case stream.AtTime:
		t := b.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		return fmt.Errorf("cannot start at %s", b)
	}
	return nil
}

// recreate deletes the durable consumer and creates it anew at start:
// JetStream cannot move a durable consumer's position otherwise.
func (n *NATS) recreate(ctx context.Context, cfg jetstream.ConsumerConfig, start stream.Bound) (jetstream.Consumer, error) {
	if err := startAt(&cfg, start); err != nil {
		return nil, err
	}
	if err := n.js.DeleteConsumer(ctx, n.streamName, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return n.js.CreateConsumer(ctx, n.streamName, cfg)
}

// natsBounds is a JetStream source's stop.
//
// A stop by sequence is reached when the consumer has every message
// before it acknowledged (its ack floor, and no message of its subject
// between the floor and the stop), never merely when this run was
// delivered the message before it or one past it: messages a killed run
// held, or a run gave back, come again later (after ack_wait), and a run
// that ended before they came would leave them unread below its stop.
// Messages delivered at or past the stop meanwhile are held, never
// acknowledged, and given back when the source closes.
type natsBounds struct {
	stopSeq  uint64    // the first stream sequence not read; 0: none
	stopTime time.Time // zero: none
	subject  string    // the consumer's filter subject ("" for none)
	ackWait  time.Duration
	done     atomic.Bool

	// Only Read and Close use the fields below.
	held      []jetstream.Msg // delivered at or past the stop
	checked   time.Time       // when settled last asked the server
	waitSince time.Time       // when settled first found messages below the stop unacknowledged
	told      bool            // the wait was logged
}

// stopOf resolves a stop against the stream.
func (n *NATS) stopOf(ctx context.Context, st jetstream.Stream, b stream.Bound) (*natsBounds, error) {
	nb := &natsBounds{ackWait: n.ackWait}
	if n.subject.Static() {
		nb.subject = n.cfg.Key
	}
	switch b.Kind {
	case stream.AtStart:
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("nats connector %q: stream %s: %w", n.cfg.CName, n.streamName, err)
		}
		nb.stopSeq = info.State.LastSeq + 1
	case stream.AtPosition:
		seq, err := strconv.ParseUint(b.Position, 10, 64)
		if err != nil || seq == 0 {
			return nil, fmt.Errorf("nats connector %q: stream.stop: bad position %q (want a stream sequence)", n.cfg.CName, b.Position)
		}
		nb.stopSeq = seq
	case stream.AtTime:
		nb.stopTime = b.Time
	default:
		return nil, fmt.Errorf("nats connector %q: cannot stop at %s", n.cfg.CName, b)
	}
	return nb, nil
}

func (b *natsBounds) reached() bool { return b != nil && b.done.Load() }

// past reports a message at or past the stop. A time stop is then
// reached (JetStream delivers in time order); a message past a sequence
// stop is held (see natsBounds).
func (b *natsBounds) past(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
	if b == nil {
		return false
	}
	if b.stopSeq > 0 && meta.Sequence.Stream >= b.stopSeq {
		b.held = append(b.held, m)
		return true
	}
	if !b.stopTime.IsZero() && !meta.Timestamp.Before(b.stopTime) {
		b.done.Store(true)
		_ = m.Nak() // the next run reads it
		return true
	}
	return false
}

// settleEvery is how often a run waiting at its stop asks the server
// whether every message before the stop is acknowledged.
const settleEvery = 200 * time.Millisecond

// settled marks a stop by sequence reached when every message of the
// consumer's subject before it is acknowledged: the consumer's ack floor
// is at the stop, or the first message of its subject after the floor is
// at or past the stop (messages of other subjects are never delivered to
// it), and the stream has reached the stop. It asks the server at most
// every settleEvery, and logs once when messages before the stop stay
// unacknowledged past ack_wait (held by a run that was killed: they come
// again after ack_wait).
func (b *natsBounds) settled(ctx context.Context, st jetstream.Stream, cons jetstream.Consumer, log *slog.Logger) error {
	if b.stopSeq == 0 || b.done.Load() || time.Since(b.checked) < settleEvery {
		return nil
	}
	b.checked = time.Now()
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	floor := info.AckFloor.Stream
	if floor+1 >= b.stopSeq {
		b.done.Store(true)
		return nil
	}
	sinfo, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if sinfo.State.LastSeq+1 < b.stopSeq {
		return nil // the stream has not reached the stop yet
	}
	var opts []jetstream.GetMsgOpt
	if b.subject != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(b.subject))
	}
	next, err := st.GetMsg(ctx, floor+1, opts...)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		b.done.Store(true)
		return nil
	case err != nil:
		return err
	case next.Sequence >= b.stopSeq:
		b.done.Store(true)
		return nil
	}
	if b.waitSince.IsZero() {
		b.waitSince = time.Now()
	}
	if !b.told && time.Since(b.waitSince) > b.ackWait {
		b.told = true
		log.Warn(fmt.Sprintf("nats source %s: waiting at the stop %d for messages before it that are not acknowledged (from sequence %d; %d delivered and unacknowledged): held by an earlier run, they come again after ack_wait (%s)",
			st.CachedInfo().Config.Name, b.stopSeq, next.Sequence, info.NumAckPending, b.ackWait))
	}
	return nil
}

// giveBack returns the messages held at or past the stop (NAK), so that
// the next run need not wait ack_wait for them, and reports whether there
// were any.
func (b *natsBounds) giveBack() bool {
	if b == nil || len(b.held) == 0 {
		return false
	}
	for _, m := range b.held {
		_ = m.Nak()
	}
	b.held = nil
	return true
}

// Positions tells the durable consumer's ack floor (every message up to
// it acknowledged), the stream's last sequence and the messages the
// consumer has not had acknowledged.
func (n *NATS) Positions(ctx context.Context, opts stream.SourceOptions, _ string) (stream.Positions, error) {
	durable := n.durable
	if durable == "" {
		durable = opts.Name
	}
	p := stream.Positions{Where: "durable consumer " + durable, Lag: -1, Unit: "messages"}
	st, err := n.js.Stream(ctx, n.streamName)
	if err != nil {
		return p, fmt.Errorf("nats connector %q: stream %s: %w", n.cfg.CName, n.streamName, err)
	}
	sinfo, err := st.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("nats connector %q: stream %s: %w", n.cfg.CName, n.streamName, err)
	}
	p.Head = strconv.FormatUint(sinfo.State.LastSeq, 10)
	cons, err := st.Consumer(ctx, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("nats connector %q: consumer %s: %w", n.cfg.CName, durable, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("nats connector %q: consumer %s: %w", n.cfg.CName, durable, err)
	}
	p.Committed = strconv.FormatUint(info.AckFloor.Stream, 10)
	// Messages delivered and not acknowledged plus those not delivered;
	// JetStream may count a message given back (NAK) in both, so the lag
	// is at most the messages after the ack floor.
	p.Lag = min(int64(info.NumPending)+int64(info.NumAckPending), int64(sinfo.State.LastSeq)-int64(info.AckFloor.Stream))
	return p, nil
}

// SeekPosition recreates the durable consumer at to, refused while it has
// pull requests waiting (a run of the flow).
func (n *NATS) SeekPosition(ctx context.Context, opts stream.SourceOptions, to stream.Bound) (string, error) {
	durable := n.durable
	if durable == "" {
		durable = opts.Name
	}
	if cons, err := n.js.Consumer(ctx, n.streamName, durable); err == nil {
		info, err := cons.Info(ctx)
		if err != nil {
			return "", fmt.Errorf("nats connector %q: consumer %s: %w", n.cfg.CName, durable, err)
		}
		if info.NumWaiting > 0 {
			return "", fmt.Errorf("durable consumer %s has %d pull request(s) waiting: a run of the flow holds it; stop it first (a killed run's requests expire within a minute)", durable, info.NumWaiting)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return "", fmt.Errorf("nats connector %q: consumer %s: %w", n.cfg.CName, durable, err)
	}
	if _, err := n.recreate(ctx, n.consumerConfig(durable), to); err != nil {
		return "", fmt.Errorf("nats connector %q: consumer %s: %w", n.cfg.CName, durable, err)
	}
	return to.String(), nil
}
