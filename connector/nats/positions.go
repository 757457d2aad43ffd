package nats

import (
	"context"
	"errors"
	"fmt"
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
type natsBounds struct {
	stopSeq  uint64    // the first stream sequence not read; 0: none
	stopTime time.Time // zero: none
	done     atomic.Bool
}

// stopOf resolves a stop against the stream.
func (n *NATS) stopOf(ctx context.Context, st jetstream.Stream, b stream.Bound) (*natsBounds, error) {
	nb := &natsBounds{}
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

// past reports a message at or past the stop (and marks it reached).
func (b *natsBounds) past(meta *jetstream.MsgMetadata) bool {
	if b == nil {
		return false
	}
	if (b.stopSeq > 0 && meta.Sequence.Stream >= b.stopSeq) || (!b.stopTime.IsZero() && !meta.Timestamp.Before(b.stopTime)) {
		b.done.Store(true)
		return true
	}
	return false
}

// delivered learns that the message before the stop was read.
func (b *natsBounds) delivered(meta *jetstream.MsgMetadata) {
	if b != nil && b.stopSeq > 0 && meta.Sequence.Stream+1 >= b.stopSeq {
		b.done.Store(true)
	}
}

// idle, when no message came, ends a stop by sequence whose messages were
// all delivered and acknowledged: the stream reached the stop and the
// consumer has nothing pending (the last messages before the stop may be
// of other subjects, never delivered to it).
func (b *natsBounds) idle(ctx context.Context, st jetstream.Stream, cons jetstream.Consumer) error {
	if b.stopSeq == 0 {
		return nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		return nil
	}
	sinfo, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if sinfo.State.LastSeq+1 >= b.stopSeq {
		b.done.Store(true)
	}
	return nil
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
	p.Lag = int64(info.NumPending) + int64(info.NumAckPending)
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
