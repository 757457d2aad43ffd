package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kisflow-go/kisflow/stream"
)

// positionForm says what a Kafka position looks like.
const positionForm = "PARTITION:OFFSET pairs, comma-separated (0:120,1:98), or one OFFSET for every partition; a stop position is the offset of the first record not read"

// Seeks says that a Kafka source starts at earliest, latest, offsets or a
// time, and stops at the high watermarks of the run's start, at offsets
// or at a time. A transactional source (transactional_id) cannot stop: its
// transaction commits every offset it polled, stopped or not.
func (k *Kafka) Seeks() stream.SeekSupport {
	s := stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition, stream.AtTime},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition, stream.AtTime},
		Form:  positionForm,
	}
	if k.txnID != "" {
		s.Stop = nil
	}
	return s
}

// admin is an admin client over the connector's producer (Start made it).
func (k *Kafka) admin() (*kadm.Client, error) {
	if k.producer == nil {
		return nil, fmt.Errorf("kafka connector %q is not started", k.cfg.CName)
	}
	return kadm.NewClient(k.producer), nil
}

// listed turns listed offsets of the topic into offsets by partition.
func listed(topic string) func(kadm.ListedOffsets, error) (map[int32]int64, error) {
	return func(l kadm.ListedOffsets, err error) (map[int32]int64, error) { return listedOf(topic, l, err) }
}

func listedOf(topic string, l kadm.ListedOffsets, err error) (map[int32]int64, error) {
	if err != nil {
		return nil, err
	}
	if err := l.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for p, o := range l[topic] {
		if p >= 0 {
			out[p] = o.Offset
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions (does it exist?)", topic)
	}
	return out, nil
}

// resolve returns the offset of every partition of the topic that b
// names: earliest, latest (and at_start: the end offsets now), a time (the
// first record at or after it, else the end), or a position.
func (k *Kafka) resolve(ctx context.Context, adm *kadm.Client, b stream.Bound) (map[int32]int64, error) {
	topic := k.cfg.Key
	switch b.Kind {
	case stream.Earliest:
		return listed(topic)(adm.ListStartOffsets(ctx, topic))
	case stream.Latest, stream.AtStart:
		return listed(topic)(adm.ListEndOffsets(ctx, topic))
	case stream.AtTime:
		return listed(topic)(adm.ListOffsetsAfterMilli(ctx, b.Time.UnixMilli(), topic))
	case stream.AtPosition:
		ends, err := listed(topic)(adm.ListEndOffsets(ctx, topic))
		if err != nil {
			return nil, err
		}
		return parseOffsets(b.Position, ends)
	}
	return nil, fmt.Errorf("no offsets for %s", b)
}

// parseOffsets reads PARTITION:OFFSET,... or one OFFSET for every
// partition of parts (the topic's partitions).
func parseOffsets(s string, parts map[int32]int64) (map[int32]int64, error) {
	out := map[int32]int64{}
	bad := func() (map[int32]int64, error) {
		return nil, fmt.Errorf("bad position %q: want %s", s, positionForm)
	}
	if !strings.Contains(s, ":") {
		o, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || o < 0 {
			return bad()
		}
		for p := range parts {
			out[p] = o
		}
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		ps, os, ok := strings.Cut(strings.TrimSpace(pair), ":")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || o < 0 {
			return bad()
		}
		if _, ok := parts[int32(p)]; !ok {
			return nil, fmt.Errorf("position %q: the topic has no partition %d (it has %d)", s, p, len(parts))
		}
		out[int32(p)] = o
	}
	return out, nil
}

// formatOffsets writes offsets as PARTITION:OFFSET,... in partition
// order; a partition at -1 shows as "-" (no committed offset).
func formatOffsets(m map[int32]int64) string {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
		b.WriteByte(':')
		if m[p] < 0 {
			b.WriteByte('-')
		} else {
			b.WriteString(strconv.FormatInt(m[p], 10))
		}
	}
	return b.String()
}

// bounds is what a source opened with a start or a stop keeps: the start
// offsets applied once per partition when the group assigns it, the stop
// offsets (and time), and how far each partition got.
type bounds struct {
	mu       sync.Mutex
	k        *Kafka
	adm      *kadm.Client
	start    map[int32]int64 // nil: the committed offsets
	stop     map[int32]int64 // nil: no stop
	stopTime time.Time       // zero: none
	next     map[int32]int64 // the offset of the next record of each partition
	done     map[int32]bool
	adjusted map[int32]bool
	allDone  chan struct{}
	closed   bool
}

// newBounds resolves opts.Start and opts.Stop against the topic.
func (k *Kafka) newBounds(ctx context.Context, opts stream.SourceOptions) (*bounds, error) {
	adm, err := k.admin()
	if err != nil {
		return nil, err
	}
	b := &bounds{k: k, adm: adm, next: map[int32]int64{}, done: map[int32]bool{}, adjusted: map[int32]bool{}, allDone: make(chan struct{})}
	if !opts.Start.IsZero() {
		if b.start, err = k.resolve(ctx, adm, opts.Start); err != nil {
			return nil, fmt.Errorf("kafka connector %q: stream.start %s: %w", k.cfg.CName, opts.Start, err)
		}
	}
	if !opts.Stop.IsZero() {
		if k.txnID != "" {
			return nil, fmt.Errorf("kafka connector %q: a transactional source cannot stop at a position (its transaction commits every offset it polled)", k.cfg.CName)
		}
		if b.stop, err = k.resolve(ctx, adm, opts.Stop); err != nil {
			return nil, fmt.Errorf("kafka connector %q: stream.stop %s: %w", k.cfg.CName, opts.Stop, err)
		}
		ends, err := listed(k.cfg.Key)(adm.ListEndOffsets(ctx, k.cfg.Key))
		if err != nil {
			return nil, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
		}
		if len(b.stop) != len(ends) {
			return nil, fmt.Errorf("kafka connector %q: stream.stop %s names %d of the topic's %d partitions: name every one", k.cfg.CName, opts.Stop, len(b.stop), len(ends))
		}
		if opts.Stop.Kind == stream.AtTime {
			b.stopTime = opts.Stop.Time
			for p, o := range b.stop {
				if o >= ends[p] {
					b.stop[p] = math.MaxInt64 // no record at or after the time yet: stop at the first
				}
			}
		}
	}
	return b, nil
}

// adjust is the group's AdjustFetchOffsetsFn: a partition assigned for the
// first time starts at the start offset (when there is one); every
// assigned partition's next offset is learnt for the stop.
func (b *bounds) adjust(ctx context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	topic := b.k.cfg.Key
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, o := range offs[topic] {
		if !b.adjusted[p] {
			b.adjusted[p] = true
			if at, ok := b.start[p]; ok {
				o = kgo.NewOffset().At(at).WithEpoch(-1)
				offs[topic][p] = o
			}
		}
		at := o.EpochOffset().Offset
		if at < 0 {
			var l kadm.ListedOffsets
			var err error
			if at == -1 {
				l, err = b.adm.ListEndOffsets(ctx, topic)
			} else {
				l, err = b.adm.ListStartOffsets(ctx, topic)
			}
			m, err := listedOf(topic, l, err)
			if err != nil {
				return nil, err
			}
			at = m[p]
		}
		b.reached(p, at)
	}
	return offs, nil
}

// reached records that partition p's next record is at offset at; b.mu
// is held.
func (b *bounds) reached(p int32, at int64) {
	if at > b.next[p] {
		b.next[p] = at
	}
	if b.stop != nil && b.next[p] >= b.stop[p] {
		b.finish(p)
	}
}

// finish marks partition p as having reached its stop; b.mu is held.
func (b *bounds) finish(p int32) {
	b.done[p] = true
	if !b.closed && len(b.done) == len(b.stop) {
		b.closed = true
		close(b.allDone)
	}
}

// finished reports whether every partition reached its stop.
func (b *bounds) finished() bool {
	if b == nil || b.stop == nil {
		return false
	}
	select {
	case <-b.allDone:
		return true
	default:
		return false
	}
}

// keep drops the records at or past the stop, and learns how far each
// partition got.
func (b *bounds) keep(recs []*kgo.Record) []*kgo.Record {
	if b == nil || b.stop == nil {
		return recs
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := recs[:0]
	for _, r := range recs {
		p := r.Partition
		switch {
		case b.done[p], r.Offset >= b.stop[p]:
			b.finish(p)
		case !b.stopTime.IsZero() && !r.Timestamp.Before(b.stopTime):
			b.finish(p)
		default:
			out = append(out, r)
			b.reached(p, r.Offset+1)
		}
	}
	return out
}

// pollContext is ctx, canceled too when every partition reached its stop
// (a Read waiting for records past it returns io.EOF).
func (b *bounds) pollContext(ctx context.Context) (context.Context, func()) {
	if b == nil || b.stop == nil {
		return ctx, func() {}
	}
	pctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-b.allDone:
			cancel()
		case <-pctx.Done():
		}
	}()
	return pctx, cancel
}

// detachedOffsets are where a detached source (a one-off run) starts: the
// start offsets, else the group's committed offsets, else the
// connector's start param.
func (k *Kafka) detachedOffsets(ctx context.Context, group string, b *bounds) (map[string]map[int32]kgo.Offset, error) {
	adm := b.adm
	ends, err := listed(k.cfg.Key)(adm.ListEndOffsets(ctx, k.cfg.Key))
	if err != nil {
		return nil, err
	}
	committed := map[int32]int64{}
	if b.start == nil {
		resp, err := adm.FetchOffsetsForTopics(ctx, group, k.cfg.Key)
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			return nil, err
		}
		for p := range ends {
			if o, ok := resp.Lookup(k.cfg.Key, p); ok && o.Err == nil && o.At >= 0 {
				committed[p] = o.At
			}
		}
	}
	out := map[int32]kgo.Offset{}
	for p := range ends {
		switch o, ok := b.start[p]; {
		case ok:
			out[p] = kgo.NewOffset().At(o)
		case hasCommitted(committed, p):
			out[p] = kgo.NewOffset().At(committed[p])
		default:
			out[p] = k.start
		}
	}
	return map[string]map[int32]kgo.Offset{k.cfg.Key: out}, nil
}

// Positions tells the consumer group's committed offsets, the topic's end
// offsets (the head) and the lag between them. A partition without a
// committed offset counts from where a new group starts (params.start).
func (k *Kafka) Positions(ctx context.Context, opts stream.SourceOptions, _ string) (stream.Positions, error) {
	group := k.groupOf(opts)
	p := stream.Positions{Where: "consumer group " + group, Lag: -1, Unit: "messages"}
	adm, err := k.admin()
	if err != nil {
		return p, err
	}
	ends, err := listed(k.cfg.Key)(adm.ListEndOffsets(ctx, k.cfg.Key))
	if err != nil {
		return p, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	starts, err := listed(k.cfg.Key)(adm.ListStartOffsets(ctx, k.cfg.Key))
	if err != nil {
		return p, fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	resp, err := adm.FetchOffsetsForTopics(ctx, group, k.cfg.Key)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return p, fmt.Errorf("kafka connector %q: group %s: %w", k.cfg.CName, group, err)
	}
	committed := map[int32]int64{}
	found := false
	p.Lag = 0
	for part, end := range ends {
		committed[part] = -1
		from := starts[part]
		if k.start.EpochOffset().Offset == -1 {
			from = end // a new group starts at the end
		}
		if o, ok := resp.Lookup(k.cfg.Key, part); ok && o.Err == nil && o.At >= 0 {
			committed[part], from, found = o.At, o.At, true
		}
		p.Lag += max(end-from, 0)
	}
	if found {
		p.Committed = formatOffsets(committed)
	}
	p.Head = formatOffsets(ends)
	return p, nil
}

// SeekPosition commits the consumer group's offsets at to, refused while
// the group has members (a run of the flow).
func (k *Kafka) SeekPosition(ctx context.Context, opts stream.SourceOptions, to stream.Bound) (string, error) {
	group := k.groupOf(opts)
	adm, err := k.admin()
	if err != nil {
		return "", err
	}
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return "", fmt.Errorf("kafka connector %q: describe group %s: %w", k.cfg.CName, group, err)
	}
	if g, ok := groups[group]; ok && g.Err == nil && len(g.Members) > 0 {
		return "", fmt.Errorf("consumer group %s has %d member(s) (state %s): a run of the flow holds it; stop it first", group, len(g.Members), g.State)
	}
	if to.Kind == stream.AtStart {
		return "", errors.New("at_start is a stop position")
	}
	offs, err := k.resolve(ctx, adm, to)
	if err != nil {
		return "", fmt.Errorf("kafka connector %q: %w", k.cfg.CName, err)
	}
	set := kadm.Offsets{}
	for p, o := range offs {
		set.AddOffset(k.cfg.Key, p, o, -1)
	}
	if err := adm.CommitAllOffsets(ctx, group, set); err != nil {
		return "", fmt.Errorf("kafka connector %q: commit the offsets of group %s: %w", k.cfg.CName, group, err)
	}
	return formatOffsets(offs), nil
}

// groupOf is the consumer group of a stream: params.group, else the flow.
func (k *Kafka) groupOf(opts stream.SourceOptions) string {
	if k.group != "" {
		return k.group
	}
	return opts.Name
}

func hasCommitted(m map[int32]int64, p int32) bool {
	_, ok := m[p]
	return ok
}
