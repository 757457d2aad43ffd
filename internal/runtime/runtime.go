// Package runtime runs a flow on a stream: it reads messages from a source,
// cuts them into micro-batches, runs the batches on several flow instances,
// writes the results to a sink, and acknowledges the source, in order, only
// once every row of a batch was written or dead-lettered.
//
// A micro-batch is an epoch: a contiguous range of the stream. With a key
// field, an epoch is split across the workers by the key's hash, so rows with
// the same key always go to the same worker, in order. Epochs commit strictly
// in the order they were read, which makes a committed position mean "every
// message up to here is done" however many workers there are; for
// exactly-once delivery the epoch's rows and its end position are written in
// one transaction of the sink.
package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
)

// Delivery guarantees.
const (
	AtLeastOnce = "at-least-once"
	AtMostOnce  = "at-most-once"
	ExactlyOnce = "exactly-once"
)

// Rejected is a row a flow could not take, as the flow reports it: it
// could not be converted to a function's input, or an expression failed on
// it. Rejections are deterministic; the other rows go on.
type Rejected struct {
	Func  string
	Layer int
	Index int // position in the layer's input; for layer 0, in the batch
	Row   any // the row as it arrived at the function (layers past the first)
	Err   error
}

// Flow runs one batch. Each worker has its own.
type Flow interface {
	Run(ctx context.Context, rows []any) (out []any, rejected []Rejected, err error)
}

// Flusher is an optional capability of a Flow whose functions keep rows
// across batches (windows). Flush runs the flow with no new input: each
// such function emits what time closed (final false: processing time
// passed, see Config.Tick) or everything it holds (final true: the source
// is exhausted), and the rest of the flow runs on those rows. Its output
// and rejections are handled as a batch's, in an epoch of their own.
type Flusher interface {
	Flush(ctx context.Context, final bool) (out []any, rejected []Rejected, err error)
}

// Policy is a function's retry policy.
type Policy struct {
	Retries int           // retries after the first attempt
	Base    time.Duration // first backoff; doubles per retry
}

// Config configures a Runner.
type Config struct {
	// Name is the flow's name, in logs and dead letters.
	Name string
	// StateKey is the key of the stream's position in the checkpoint
	// store, and of its commits in an exactly-once sink: the flow name and
	// the source's identity. "" means Name.
	StateKey     string
	BatchSize    int
	Linger       time.Duration
	Workers      int
	Key          string
	Delivery     string
	MaxInFlight  int // epochs
	DrainTimeout time.Duration
	// CheckpointInterval is how often at most the position of an
	// at-least-once stream, and the keyed state changed since, are saved
	// while batches keep coming (<= 0: DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	// PolicyFor returns the retry policy of a function ("" for the flow as
	// a whole, when the failing function is unknown).
	PolicyFor func(fname string) Policy
	// FuncOf names the function behind a flow run error.
	FuncOf func(err error) string
	// Steps, when set, are the counters of the flow's steps (see Step):
	// the runner adds each step's dead letters and retries.
	Steps  []*Step
	Logger *slog.Logger
	// Sleep waits d or until ctx is done (tests replace it).
	Sleep func(ctx context.Context, d time.Duration) error
	// RunContext, when set, derives the context a part's flow runs and
	// sink write get from its messages (trace context from headers).
	RunContext func(ctx context.Context, msgs []*stream.Message) context.Context
	// BatchDone, when set, is told how long each committed epoch took from
	// being read to being committed.
	BatchDone func(latency time.Duration)
	// Resume is the position the source was opened at ("" for none), for
	// the start-up message, and the first position an exactly-once commit
	// is fenced on (see Fence).
	Resume string
	// Fence, for exactly-once delivery from a source whose position the
	// runtime stores, fences every commit on the position this runner
	// last saw committed (Resume, then each of its own), when the sink is
	// a stream.FencedTxSink: a commit that finds another position, made by
	// another process running the same stream, ends the run with a
	// *stream.FenceError and commits nothing. Leave it unset for sources
	// whose position a broker keeps (consumer groups), which several
	// processes share by design.
	Fence bool
	// SourceName, SinkName and DeadLetterName name the source, the sink
	// and the dead-letter sink in logs and errors ("" for the default
	// dead-letter file).
	SourceName, SinkName, DeadLetterName string
	// MaxConsecutiveFailures ends the run with the failure when this many
	// messages in a row were dead-lettered by the same function with the
	// same error (a typo in an expression fails every row): 0 means
	// DefaultMaxConsecutiveFailures, or never for a source that answers
	// per request (a stream.DeadLetterNotifier, such as http), a negative
	// value never.
	MaxConsecutiveFailures int
	// FlushAtEnd runs a final Flusher.Flush after the last epoch of an
	// exhausted source, once every earlier epoch committed; its rows
	// commit as an epoch before Run returns.
	FlushAtEnd bool
	// Tick, when above zero, runs Flusher.Flush(false) after the source
	// gave nothing for that long (processing-time windows close while the
	// stream is idle).
	Tick time.Duration
	// TimeField names the field of the payload that holds a message's
	// event time (RFC 3339 or epoch milliseconds): the runner then keeps
	// the flow's watermark (see watermarks), in read order, with the
	// position. Lateness is subtracted from it; IdleTimeout (default
	// DefaultIdleTimeout) is how long a partition that delivers nothing
	// holds it back.
	TimeField             string
	Lateness, IdleTimeout time.Duration
	// Timers says the flow fires timers (a TimerFirer): after each part
	// of a batch, on its lane, and on ticks (at most TimerTick apart, also
	// while the stream is busy, on every lane), and every event-time timer
	// at the end of a bounded source.
	Timers bool
}

// TimerTick is how often at most processing-time timers are looked at
// when nothing else runs a lane (Config.Timers).
const TimerTick = 100 * time.Millisecond

// TimerFirer is an optional capability of a Flow that fires timers: it
// runs the callbacks of the timers of its run's lane that are due (the
// state.Clock in ctx says the watermark; now, the wall clock), and the
// rest of the flow on their rows. Its output and rejections are handled
// as a batch's.
type TimerFirer interface {
	FireTimers(ctx context.Context, now time.Time) (out []any, rejected []Rejected, err error)
}

// DefaultMaxConsecutiveFailures is how many messages in a row may fail the
// same way before a run stops with that failure.
const DefaultMaxConsecutiveFailures = 100

func (c *Config) defaults() {
	if c.StateKey == "" {
		c.StateKey = c.Name
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Linger <= 0 {
		c.Linger = 20 * time.Millisecond
	}
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2*c.Workers + 1
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Delivery == "" {
		c.Delivery = AtLeastOnce
	}
	if c.PolicyFor == nil {
		c.PolicyFor = func(string) Policy { return Policy{Retries: 3, Base: 100 * time.Millisecond} }
	}
	if c.FuncOf == nil {
		c.FuncOf = func(error) string { return "" }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Sleep == nil {
		c.Sleep = filter.SystemClock{}.Sleep
	}
	if c.MaxConsecutiveFailures == 0 {
		c.MaxConsecutiveFailures = DefaultMaxConsecutiveFailures
	}
	if c.Timers {
		c.FlushAtEnd = true
		if c.Tick <= 0 || c.Tick > TimerTick {
			c.Tick = TimerTick
		}
	}
	if c.TimeField != "" && c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
}

// Parts are the components a Runner works with.
type Parts struct {
	Source stream.Source
	// NewFlow returns worker i's flow instance. It is also called once
	// with i = Config.Workers, for an instance of the commit loop's own,
	// when an exactly-once sink refuses rows of a batch and the source is a
	// stream.DeadLetterNotifier (see Runner.trace).
	NewFlow func(i int) Flow
	// Sink receives the output rows (nil: output is dropped).
	Sink stream.Sink
	// TxSink, for exactly-once, commits rows and position together.
	TxSink stream.TxSink
	// DeadLetter receives *stream.DeadLetter rows. Required.
	DeadLetter stream.Sink
	// Checkpoints stores positions for at-least-once and at-most-once
	// delivery of sources that set Message.Position (nil: not stored).
	Checkpoints stream.Checkpoints
	// State, when set, is the job's keyed state: each part of a batch runs
	// with a state.Txn in its context, whose changes commit with the
	// batch. For exactly-once they commit in the sink's transaction
	// (TxSink must be a stream.StateSink); otherwise in StateStore's, with
	// the position.
	State *state.Table
	// StateStore keeps keyed state for at-least-once and at-most-once
	// delivery (nil: a flow that changes state ends with an error).
	StateStore stream.StateStore
	// StateLoader is the store State was loaded from (the exactly-once
	// sink or the checkpoint store). With a source that is a
	// stream.PartitionOwner, the runner loads from it the state of each
	// partition assigned to this process, and drops that of each partition
	// revoked (see LoadState).
	StateLoader stream.StateLoader
}

// Stats are a runner's counters. Read them with Runner.Stats at any time.
type Stats struct {
	Read         int64 // messages read from the source
	Committed    int64 // messages acknowledged after processing or dead-lettering
	Out          int64 // rows written to the sink
	DeadLettered int64 // messages dead-lettered (also those whose dead letters the sink already held)
	Retries      int64 // flow runs retried
	Batches      int64 // epochs committed
	InFlight     int64 // messages read and not yet committed
	MaxInFlight  int64 // the most messages in flight at once
	Skipped      int64 // redelivered messages an exactly-once sink had already committed
	SourceErrors int64 // failed source reads and acknowledgements, retried
	SinkErrors   int64 // failed sink writes and commits, retried
}

// Runner runs one flow on one source.
type Runner struct {
	cfg   Config
	parts Parts
	keys  *keyReader
	// trace is set for a source that answers per message (a
	// stream.DeadLetterNotifier), unless delivery is at-most-once: every
	// row dead-lettered past the first function, or refused by the sink,
	// is then traced to its message, at the cost of running again, alone,
	// the messages of a batch in which that happened.
	trace  bool
	tracer *worker             // the commit loop's, for exactly-once; made on first use
	fence  stream.FencedTxSink // the sink, when commits are fenced (Config.Fence)

	warnedNoID   atomic.Bool
	ownPositions bool           // the source sets a position on every message (stream.MessagePositions)
	letters      *recentLetters // the identities of the dead letters written last (commit loop only)
	inflightMu   sync.Mutex
	inflightIDs  map[string]struct{} // exactly-once: IDs read and not yet committed or returned

	srcLink, sinkLink, dlqLink *link
	fnLinks                    sync.Map // function name -> *link: its service's outages (stream.ErrUnavailable)
	undrained, exhausted       atomic.Bool
	warnedDead                 atomic.Bool
	journalStart, journalAt    int64  // the dead-letter journal's size at start, and as last committed (-1: unknown)
	txPos                      string // the position of the last transaction this runner committed
	deadDirty                  bool   // dead letters written and not yet synced (commit loop only)
	journalID                  string
	abortOnce                  sync.Once
	abortErr                   error                   // set once, before stopRead is called
	stopRead                   context.CancelCauseFunc // ends reading: the run drains and stops
	streak                     streak                  // the commit loop's run of equal failures
	// pendingState holds state changes to write at the next save, with
	// the position they belong to (at-least-once with a stored position;
	// commit loop only): the watermark, and what a failed save left. The
	// entries changed in memory since the last save are marked in the
	// state table, and added to it when a save begins (takeUnsaved).
	pendingState map[state.ID]state.Entry
	spareState   map[state.ID]state.Entry // a saved pendingState, emptied, for reuse
	saving       chan saveDone            // the save under way (see startSave), nil if none
	stateLink    *link
	// partitioned is set when keyed state follows the partitions of a
	// stream.PartitionOwner source.
	partitioned bool
	readCtx     context.Context // the run's reading context, set before the first Read
	// marks is the flow's watermark, with Config.TimeField (read loop
	// only); savedMark the last one committed (commit loop only).
	marks     *watermarks
	savedMark []byte
	lastTick  time.Time // read loop only

	read, committed, out, dead, retries, batches, inflight, maxInflight, skipped atomic.Int64
	checkpointAt                                                                 atomic.Int64 // Unix nanoseconds (see CheckpointedAt)
}

// New returns a runner; Run starts it.
func New(cfg Config, parts Parts) (*Runner, error) {
	_, notifies := parts.Source.(stream.DeadLetterNotifier)
	if notifies && cfg.MaxConsecutiveFailures == 0 {
		// A source that answers per request (http) tells each client of
		// its own failed rows: one client's bad rows must not stop the
		// run for every other client, unless the stream says so.
		cfg.MaxConsecutiveFailures = -1
	}
	cfg.defaults()
	if parts.Source == nil || parts.NewFlow == nil || parts.DeadLetter == nil {
		return nil, errors.New("runtime: source, flow and dead-letter sink are required")
	}
	switch cfg.Delivery {
	case AtLeastOnce, AtMostOnce:
	case ExactlyOnce:
		if parts.TxSink == nil {
			return nil, errors.New("runtime: exactly-once needs a transactional sink")
		}
		if sc, ok := parts.TxSink.(stream.SerialCommitter); ok && sc.CommitsAllRead() {
			cfg.MaxInFlight = 1 // a commit covers everything read: read no further ahead
		}
	default:
		return nil, fmt.Errorf("runtime: unknown delivery %q", cfg.Delivery)
	}
	var fence stream.FencedTxSink
	if cfg.Fence && cfg.Delivery == ExactlyOnce {
		fence, _ = parts.TxSink.(stream.FencedTxSink)
	}
	mp, ok := parts.Source.(stream.MessagePositions)
	var marks *watermarks
	var savedMark []byte
	if cfg.TimeField != "" {
		marks = newWatermarks(cfg.TimeField, cfg.Lateness, cfg.IdleTimeout)
		if parts.State != nil {
			if e, ok := parts.State.Committed(watermarkID); ok && e.Raw != nil {
				if err := marks.restore(e.Raw, time.Now()); err != nil {
					return nil, fmt.Errorf("runtime: the saved watermark of flow %s cannot be read (%v): delete state entry %q of the flow to start afresh", cfg.Name, err, watermarkID.Name)
				}
				savedMark = e.Raw
			}
		}
	}
	r := &Runner{
		marks: marks, savedMark: savedMark,
		cfg: cfg, parts: parts, keys: newKeyReader(cfg.Key), inflightIDs: map[string]struct{}{},
		trace:        notifies && cfg.Delivery != AtMostOnce,
		ownPositions: ok && mp.PositionsPerMessage(),
		srcLink:      newLink("source", cfg.SourceName, cfg.Logger), sinkLink: newLink("sink", cfg.SinkName, cfg.Logger),
		dlqLink: newLink("dead-letter sink", cfg.DeadLetterName, cfg.Logger), stateLink: newLink("state store", "", cfg.Logger),
		stopRead: func(error) {}, journalAt: -1, txPos: cfg.Resume,
		fence: fence,
	}
	if po, ok := parts.Source.(stream.PartitionOwner); ok && parts.State != nil && parts.StateLoader != nil {
		r.partitioned = true
		po.OwnPartitions(partitionHandler{r})
	}
	return r, nil
}

// Stats returns the counters so far; safe for concurrent use.
func (r *Runner) Stats() Stats {
	return Stats{
		Read: r.read.Load(), Committed: r.committed.Load(), Out: r.out.Load(),
		DeadLettered: r.dead.Load(), Retries: r.retries.Load(), Batches: r.batches.Load(),
		InFlight: r.inflight.Load(), MaxInFlight: r.maxInflight.Load(), Skipped: r.skipped.Load(),
		SourceErrors: r.srcLink.errs.Load(), SinkErrors: r.sinkLink.errs.Load(),
	}
}

// Down returns why the source or the sink is unavailable (the runner is
// retrying it), or nil while both are up; safe for concurrent use.
func (r *Runner) Down() error {
	return errors.Join(r.srcLink.down(), r.sinkLink.down(), r.dlqLink.down())
}

// Connected reports whether the source and the sink are up (a runner
// without a sink reports its sink up); safe for concurrent use.
func (r *Runner) Connected() (source, sink bool) {
	return !r.srcLink.isDown.Load(), !r.sinkLink.isDown.Load()
}

// abort ends the run with err: reading stops, in-flight epochs drain, and
// Run returns err. Only the first call counts.
func (r *Runner) abort(err error) {
	r.abortOnce.Do(func() {
		r.abortErr = err
		r.stopRead(err)
	})
}

// stopOn reports whether a failed source or sink call ends the work: the
// work context ended, or err is marked fatal (a configuration error no
// retry mends), which aborts the run.
func (r *Runner) stopOn(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	if stream.IsFatal(err) {
		r.abort(err)
		return true
	}
	return false
}

// epoch is one micro-batch: a contiguous range of the stream.
type epoch struct {
	msgs    []*stream.Message // everything read, acknowledged at commit
	todo    []*stream.Message // msgs less redeliveries already committed
	work    []*stream.Message // todo less messages the source marked Failed: what runs
	parts   []*part
	pending atomic.Int32
	done    chan struct{}
	failed  atomic.Bool  // a part could not finish (shutdown): do not ack
	out     atomic.Int64 // output rows of its parts, for the failure streak
	readAt  time.Time
	clock   state.Clock // the watermark before and after it was read
	mark    []byte      // the watermark to keep with it (Config.TimeField)
	mu      sync.Mutex
	dead    []any // *stream.DeadLetter
	// deadOf[i] is the message of dead[i]; nil for a row dead-lettered
	// past the first function of a batch whose message is not known (see
	// Runner.trace).
	deadOf []*stream.Message
	// expected[i] says that the cause of dead[i] is marked
	// stream.ErrExpected (a window's late row): no failure for the streak.
	expected []bool
}

// addDead adds the dead letter of m (nil when not known), whose cause is
// cause, to the epoch, written when it commits. Safe for concurrent use.
func (ep *epoch) addDead(m *stream.Message, dl *stream.DeadLetter, cause error) {
	ep.mu.Lock()
	ep.dead = append(ep.dead, dl)
	ep.deadOf = append(ep.deadOf, m)
	ep.expected = append(ep.expected, stream.IsExpected(cause))
	ep.mu.Unlock()
}

// part is the share of an epoch one worker runs.
type part struct {
	ep      *epoch
	msgs    []*stream.Message
	control control    // a Flusher run instead of msgs
	worker  int        // the worker whose queue it goes to; -1: any worker
	out     []any      // output rows kept for a transactional commit
	segs    []seg      // the runs that made out
	txn     *state.Txn // its keyed state changes, when the job keeps state
}

// clockOf returns the clock p's runs get.
func (p *part) clockOf() state.Clock {
	c := p.ep.clock
	if p.control == runFlush {
		c.Fire = math.MaxInt64 // the end of input: every event-time timer fires
	}
	return c
}

// control is what a part with no messages runs.
type control int

const (
	runMsgs  control = iota // the part's messages
	runTick                 // Flusher.Flush(false)
	runFlush                // Flusher.Flush(true)
)

func (ep *epoch) finish() {
	if ep.pending.Add(-1) == 0 {
		close(ep.done)
	}
}

// Run reads until the source is exhausted (io.EOF) or ctx is done, then
// drains: in-flight batches finish (within the drain timeout), are
// committed, and the source is closed. It returns the first fatal error.
func (r *Runner) Run(ctx context.Context) error {
	cfg := r.cfg
	// Run owns the source: it closes it when it returns, also when it
	// cannot begin.
	if err := errors.Join(r.recoverJournal(ctx), r.loadRecentLetters()); err != nil {
		return errors.Join(err, r.parts.Source.Close(context.WithoutCancel(ctx)))
	}
	// reading ends with ctx, or earlier when the run is aborted.
	readCtx, stopRead := context.WithCancelCause(ctx)
	defer stopRead(nil)
	r.stopRead = stopRead
	// work outlives reading by the drain timeout, so in-flight batches finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopDrain := context.AfterFunc(readCtx, func() {
		t := time.AfterFunc(cfg.DrainTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopDrain()

	slots := make(chan struct{}, cfg.MaxInFlight)
	epochs := make(chan *epoch, cfg.MaxInFlight)
	// Keyed parts go to their worker's own queue, unkeyed epochs to the
	// shared one that any idle worker takes from.
	own := make([]chan *part, cfg.Workers)
	shared := make(chan *part, cfg.MaxInFlight)
	for i := range own {
		own[i] = make(chan *part, cfg.MaxInFlight)
	}

	var workers sync.WaitGroup
	for i := range cfg.Workers {
		w := &worker{r: r, flow: r.parts.NewFlow(i)}
		workers.Add(1)
		go func() {
			defer workers.Done()
			mine, any := own[i], shared
			for mine != nil || any != nil {
				var p *part
				var ok bool
				select {
				case p, ok = <-mine:
					if !ok {
						mine = nil
						continue
					}
				case p, ok = <-any:
					if !ok {
						any = nil
						continue
					}
				}
				w.process(work, p)
				p.ep.finish()
			}
		}()
	}

	commitErr := make(chan error, 1)
	go func() { commitErr <- r.commitLoop(work, epochs, slots) }()

	if cfg.Resume != "" {
		cfg.Logger.Info(fmt.Sprintf("flow %s resumes after position %s", cfg.Name, cfg.Resume))
	}
	r.readCtx = readCtx
	readErr := r.readLoop(readCtx, work, slots, epochs, own, shared)
	for _, q := range own {
		close(q)
	}
	close(shared)
	close(epochs)
	workers.Wait()
	cErr := <-commitErr

	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srcErr := r.parts.Source.Close(closeCtx)
	if errors.Is(readErr, context.Canceled) && readCtx.Err() != nil {
		readErr = nil // a requested stop, or an abort whose error follows
	}
	err := errors.Join(r.abortErr, readErr, cErr, srcErr)
	if err == nil && r.undrained.Load() {
		down := []error{r.Down()}
		r.fnLinks.Range(func(_, l any) bool {
			down = append(down, l.(*link).down())
			return true
		})
		if down := errors.Join(down...); down != nil {
			// Say what held the batches: a source, sink or dead-letter
			// sink still unavailable when the drain timed out, or a
			// function's service unavailable when the run stopped.
			return fmt.Errorf("%w: %w", ErrNotDrained, down)
		}
		return ErrNotDrained
	}
	return err
}

// ErrNotDrained is returned by Run when in-flight batches did not finish
// within the drain timeout: they were returned to the source.
var ErrNotDrained = errors.New("in-flight batches did not finish within the drain timeout; they were returned to the source")

// Exhausted reports whether the source said it was exhausted (io.EOF): a
// bounded source read to its end. Safe for concurrent use.
func (r *Runner) Exhausted() bool { return r.exhausted.Load() }

// readLoop cuts epochs until EOF or ctx is done.
func (r *Runner) readLoop(ctx, work context.Context, slots chan struct{}, epochs chan<- *epoch, own []chan *part, shared chan *part) error {
	cfg := r.cfg
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if cfg.Timers && time.Since(r.lastTick) >= cfg.Tick {
			// Timers are looked at on every lane, also while the stream
			// is busy (a lane without rows runs no part).
			r.control(runTick, epochs, own, shared) // takes the slot
			continue
		}
		msgs, eof, idle, err := r.readEpoch(ctx)
		if eof {
			r.exhausted.Store(true)
		}
		if len(msgs) == 0 {
			if idle && err == nil {
				r.control(runTick, epochs, own, shared) // takes the slot
				continue
			}
			<-slots
			if err != nil {
				return err
			}
			if eof {
				return r.flushAtEnd(ctx, slots, epochs, own, shared)
			}
			continue
		}
		if first := r.read.Load() == 0; first && cfg.Resume == "" && lastPosition(msgs) != "" {
			cfg.Logger.Info(fmt.Sprintf("no position for flow %s: reading from the beginning", cfg.Name))
		}
		ep := &epoch{msgs: msgs, done: make(chan struct{}), readAt: time.Now()}
		r.observe(ep, msgs)
		n := int64(len(msgs))
		r.read.Add(n)
		if v := r.inflight.Add(n); v > r.maxInflight.Load() {
			r.maxInflight.Store(v) // only this goroutine raises it
		}
		if cfg.Delivery == AtMostOnce {
			// Acknowledge before processing: a crash loses the epoch
			// instead of repeating it.
			if err := r.ackEarly(work, ep); err != nil {
				<-slots
				return err
			}
		}
		ep.todo = ep.msgs
		if cfg.Delivery == ExactlyOnce {
			if ep.todo, err = r.unseen(work, ep.msgs); err != nil {
				<-slots
				return err
			}
		}
		r.deadOnArrival(ep)
		r.split(ep)
		ep.pending.Store(int32(len(ep.parts)))
		if len(ep.parts) == 0 {
			close(ep.done) // every message was a redelivery of committed work
		}
		epochs <- ep
		for _, p := range ep.parts {
			r.queue(p, own, shared)
		}
		if err != nil {
			return err
		}
		if eof {
			return r.flushAtEnd(ctx, slots, epochs, own, shared)
		}
	}
}

// flushAtEnd runs the final flush of an exhausted source (Config.FlushAtEnd)
// once every epoch read before committed, so that no row reaches a window
// after it closed for good.
func (r *Runner) flushAtEnd(ctx context.Context, slots chan struct{}, epochs chan<- *epoch, own []chan *part, shared chan *part) error {
	n := r.cfg.MaxInFlight
	if !r.cfg.FlushAtEnd {
		return nil
	}
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			for range i {
				<-slots
			}
			return ctx.Err()
		}
	}
	for range n - 1 {
		<-slots
	}
	r.control(runFlush, epochs, own, shared)
	return nil
}

// control queues an epoch with no messages that runs c: on every worker
// when the flow fires timers (each lane fires its own) or runs several
// workers (each keeps the windows of its own keys, its state lane);
// otherwise on the one worker. The caller holds its slot, released when it
// commits.
func (r *Runner) control(c control, epochs chan<- *epoch, own []chan *part, shared chan *part) {
	ep := &epoch{done: make(chan struct{}), readAt: time.Now()}
	r.lastTick = ep.readAt
	r.observe(ep, nil)
	if r.cfg.Timers || len(own) > 1 {
		for w := range own {
			ep.parts = append(ep.parts, &part{ep: ep, control: c, worker: w})
		}
	} else {
		ep.parts = []*part{{ep: ep, control: c, worker: -1}}
	}
	ep.pending.Store(int32(len(ep.parts)))
	epochs <- ep
	for _, p := range ep.parts {
		r.queue(p, own, shared)
	}
}

// queue gives p to its worker, or to any worker. With one worker every
// part goes to its own queue: parts then run in read order (a tick never
// runs before the rows read before it, which timers rely on).
func (r *Runner) queue(p *part, own []chan *part, shared chan *part) {
	switch {
	case p.worker >= 0:
		own[p.worker] <- p
	case len(own) == 1:
		own[0] <- p
	default:
		shared <- p
	}
}

// observe moves the flow's watermark by the event times of msgs (none for
// a control epoch: idle partitions may still move it) and gives ep its
// clock: the watermark before and after, and the one to keep with it.
func (r *Runner) observe(ep *epoch, msgs []*stream.Message) {
	if r.marks == nil {
		ep.clock = state.Clock{Watermark: NoWatermark, Fire: NoWatermark}
		return
	}
	before := r.marks.wm
	r.marks.observe(msgs, ep.readAt)
	if m := r.marks.untimed; m != nil {
		// Once: a time field that never reads leaves the flow with no
		// watermark (timers and windows wait for the end of input).
		r.marks.untimed, r.marks.reported = nil, true
		r.cfg.Logger.Warn(fmt.Sprintf("flow %s: a message's time field %q does not read as a time (RFC 3339 or epoch milliseconds); such messages do not move the watermark (logged once)", r.cfg.Name, r.cfg.TimeField), "position", m.Position)
	}
	ep.clock = state.Clock{Watermark: before, Fire: r.marks.current(ep.readAt), Set: true}
	if b, err := json.Marshal(r.marks.saved()); err == nil {
		ep.mark = b
	}
}

// readEpoch reads up to BatchSize messages: it blocks for the first, then
// keeps reading until the batch is full or Linger has passed.
//
// With Config.Tick, a read that finds nothing for that long returns no
// messages and idle true.
func (r *Runner) readEpoch(ctx context.Context) (msgs []*stream.Message, eof, idle bool, err error) {
	cfg := r.cfg
	first := ctx
	if cfg.Tick > 0 {
		var cancel context.CancelFunc
		first, cancel = context.WithTimeout(ctx, cfg.Tick)
		defer cancel()
	}
	batch, err := r.readSource(first, cfg.BatchSize)
	msgs = append(msgs, batch...)
	if first != ctx && first.Err() != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		if len(msgs) == 0 {
			return nil, false, true, nil
		}
		err = nil // the tick's deadline, not the source's failure
	}
	if err != nil {
		return msgs, errors.Is(err, io.EOF), false, filterEOF(err)
	}
	if len(msgs) >= cfg.BatchSize {
		return msgs, false, false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, cfg.Linger)
	defer cancel()
	for len(msgs) < cfg.BatchSize {
		batch, err := r.readSource(lctx, cfg.BatchSize-len(msgs))
		msgs = append(msgs, batch...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, true, false, nil
			}
			if lctx.Err() != nil && ctx.Err() == nil {
				return msgs, false, false, nil // linger over
			}
			return msgs, false, false, err
		}
	}
	return msgs, false, false, nil
}

// readSource reads from the source, retrying a failure with capped backoff and
// jitter until ctx is done: a source that lost its connection is weather,
// not the end of the run. Only an error marked stream.ErrFatal (a
// configuration error) is returned.
func (r *Runner) readSource(ctx context.Context, max int) ([]*stream.Message, error) {
	for attempt := 1; ; attempt++ {
		msgs, err := r.parts.Source.Read(ctx, max)
		if err == nil || errors.Is(err, io.EOF) {
			r.srcLink.ok()
			return msgs, err
		}
		if ctx.Err() != nil {
			return msgs, err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// A deadline of the source's own (a blocking read that timed
			// out), not an outage: as a read that found nothing.
			return msgs, nil
		}
		if stream.IsFatal(err) {
			return msgs, fmt.Errorf("%s: %w", r.srcLink.label(), err)
		}
		r.srcLink.fail(err)
		if len(msgs) > 0 {
			return msgs, nil // process what came; the next read tries again
		}
		if err := r.cfg.Sleep(ctx, linkWait(attempt)); err != nil {
			return nil, err
		}
	}
}

func filterEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// split assigns an epoch's messages to parts: with a key (the flow's key
// field, or keys the source sets such as Kafka partitions) across the
// workers by the key's hash; otherwise whole, to any worker.
func (r *Runner) split(ep *epoch) {
	cfg := r.cfg
	if len(ep.work) == 0 {
		return
	}
	keyed := cfg.Key != "" || slices.ContainsFunc(ep.work, func(m *stream.Message) bool { return m.Key != "" })
	if !keyed {
		ep.parts = []*part{{ep: ep, msgs: ep.work, worker: -1}}
		return
	}
	if cfg.Workers == 1 {
		ep.parts = []*part{{ep: ep, msgs: ep.work}}
		return
	}
	byWorker := make([][]*stream.Message, cfg.Workers)
	for _, m := range ep.work {
		w := partitionOf(r.keys.of(m), cfg.Workers)
		byWorker[w] = append(byWorker[w], m)
	}
	for w, ms := range byWorker {
		if len(ms) > 0 {
			ep.parts = append(ep.parts, &part{ep: ep, msgs: ms, worker: w})
		}
	}
}

// DefaultCheckpointInterval is how often at most the position of an
// at-least-once or at-most-once stream, with the keyed state changed since,
// is saved while epochs keep coming (Config.CheckpointInterval); the last
// position is always saved when the stream stops or goes idle. A position
// that lags only means more redelivery after a crash; the state changes of
// a key between two saves are written once. A save runs beside the commit
// loop; one that takes long (one that writes many keyed state entries)
// spaces the next one out to saveSpacing times its duration, so that
// saving takes a bounded share of the machine.
const DefaultCheckpointInterval = 200 * time.Millisecond

// checkpointInterval is c.CheckpointInterval or its default.
func (c *Config) checkpointInterval() time.Duration {
	if c.CheckpointInterval > 0 {
		return c.CheckpointInterval
	}
	return DefaultCheckpointInterval
}

// saveSpacing: see DefaultCheckpointInterval.
const saveSpacing = 4

// maxGroupRows bounds the rows of epochs committed together.
const maxGroupRows = 50000

// unseen drops messages whose IDs the transactional sink already
// committed: a broker redelivered them after a crash between the commit
// and the acknowledgement.
func (r *Runner) unseen(ctx context.Context, msgs []*stream.Message) ([]*stream.Message, error) {
	var ids []string
	for _, m := range msgs {
		if m.ID != "" {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		// A source whose position the runtime commits may set it on the
		// last message of a read only; a batch with neither cannot be
		// recognised when it is delivered again.
		if lastPosition(msgs) == "" && r.warnedNoID.CompareAndSwap(false, true) {
			r.cfg.Logger.Warn("exactly-once: the source's messages carry neither an ID nor a position, so a redelivery after a crash cannot be recognised; delivery is at-least-once")
		}
		return msgs, nil
	}
	// A redelivery of a message still in flight here (processing took
	// longer than the broker's acknowledgement deadline) is not processed
	// twice; it is acknowledged with its epoch. Nor is a second copy within
	// this read (a broker redelivers a message that still waits in the
	// client's buffer): only its first copy is processed. The IDs are
	// reserved before the sink is asked: an epoch releases its IDs only
	// after its commit, so an ID found free here is either committed (and
	// the sink says so) or new. Asked first, the sink could answer "not
	// seen" just before the epoch holding the ID committed and released
	// it, and the message would be processed twice.
	drop := make([]bool, len(msgs))
	dropped := 0
	var mine []string
	r.inflightMu.Lock()
	for i, m := range msgs {
		if m.ID == "" {
			continue
		}
		// busy also holds for a copy met earlier in this read.
		if _, busy := r.inflightIDs[m.ID]; busy {
			drop[i] = true
			dropped++
			continue
		}
		r.inflightIDs[m.ID] = struct{}{}
		mine = append(mine, m.ID)
	}
	r.inflightMu.Unlock()
	var seen map[string]bool
	if len(mine) > 0 {
		if err := r.retryForever(ctx, r.sinkLink, func() (err error) {
			seen, err = r.parts.TxSink.Seen(ctx, r.cfg.StateKey, mine)
			return err
		}); err != nil {
			r.inflightMu.Lock()
			for _, id := range mine {
				delete(r.inflightIDs, id)
			}
			r.inflightMu.Unlock()
			return nil, err
		}
	}
	if len(seen) > 0 {
		r.inflightMu.Lock()
		for id, ok := range seen {
			if ok {
				delete(r.inflightIDs, id) // committed before: acknowledged, not processed
			}
		}
		r.inflightMu.Unlock()
		for i, m := range msgs {
			if !drop[i] && m.ID != "" && seen[m.ID] {
				drop[i] = true
				dropped++
			}
		}
	}
	if dropped == 0 {
		return msgs, nil
	}
	todo := make([]*stream.Message, 0, len(msgs)-dropped)
	for i, m := range msgs {
		if !drop[i] {
			todo = append(todo, m)
		}
	}
	r.skipped.Add(int64(len(msgs) - len(todo)))
	return todo, nil
}

// deadOnArrival sends messages a source marked Failed to the dead letters
// of their epoch; the rest is the epoch's work.
func (r *Runner) deadOnArrival(ep *epoch) {
	ep.work = ep.todo
	if !slices.ContainsFunc(ep.todo, func(m *stream.Message) bool { return m.Failed != nil }) {
		return
	}
	ep.work = nil
	for _, m := range ep.todo {
		if m.Failed == nil {
			ep.work = append(ep.work, m)
			continue
		}
		ep.addDead(m, r.deadLetter("", m, "", m.Failed, 0), m.Failed)
	}
}

// commitLoop commits epochs in read order. Epochs that are already done
// when the oldest one finishes commit together: one transaction for
// exactly-once, one acknowledgement call otherwise.
func (r *Runner) commitLoop(work context.Context, epochs <-chan *epoch, slots <-chan struct{}) error {
	var firstErr error
	var next *epoch
	open := true
	var lastSave time.Time
	var took time.Duration // the last save's
	every := r.cfg.checkpointInterval()
	savedPos, pendingPos := "", ""
	// A save runs beside the loop (see startSave), one at a time: the
	// loop goes on committing batches in memory while the store writes.
	finish := func(res saveDone) {
		r.saving = nil
		r.savedState(work, res.pos, res.state, res.err)
		if res.err != nil && firstErr == nil {
			firstErr = res.err
		}
		savedPos, lastSave, took = res.pos, res.began, time.Since(res.began)
		every = max(r.cfg.checkpointInterval(), saveSpacing*took)
	}
	save := func() {
		if r.saving != nil {
			finish(<-r.saving)
			if pendingPos == savedPos && !r.unsavedState() {
				return
			}
		}
		if err := r.startSave(work, pendingPos); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			savedPos, lastSave = pendingPos, time.Now()
		}
	}
	broken := false // an epoch failed: no later epoch may commit
	for {
		ep := next
		next = nil
		if ep == nil {
			if !open {
				break
			}
			var ok bool
			var due <-chan time.Time
			var timer *time.Timer
			if pendingPos != savedPos && r.saving == nil {
				// A save put off (see saveSpacing) is made when due if
				// nothing comes meanwhile.
				timer = time.NewTimer(max(every-time.Since(lastSave), 0))
				due = timer.C
			}
			var res saveDone
			var saved, fire bool
			select {
			case ep, ok = <-epochs:
			case res = <-r.saving: // nil (blocks) when no save runs
				saved = true
			case <-due:
				fire = true
			}
			if timer != nil {
				timer.Stop()
			}
			switch {
			case saved:
				finish(res)
				continue
			case fire:
				save()
				continue
			}
			if !ok {
				break
			}
		}
		<-ep.done // workers finish every part, also on a cancelled work context
		group := []*epoch{ep}
		rows := len(ep.msgs)
	gather:
		for open && rows < maxGroupRows {
			select {
			case nxt, ok := <-epochs:
				if !ok {
					open = false
					break gather
				}
				select {
				case <-nxt.done:
					group = append(group, nxt)
					rows += len(nxt.msgs)
				default:
					next = nxt
					break gather
				}
			default:
				break gather
			}
		}
		pos, err := r.commit(work, group, &broken)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if pos != "" {
			pendingPos = pos
		}
		// Going idle, the position is saved at once, unless the last save
		// took long: then when saveSpacing allows, or when due (above).
		since := time.Since(lastSave)
		idle := next == nil && len(epochs) == 0 && since >= saveSpacing*took
		if r.saving != nil {
			select {
			case res := <-r.saving:
				finish(res)
			default:
			}
		}
		if r.saving == nil && pendingPos != savedPos && (idle || since >= every) {
			save()
		}
		for _, e := range group {
			r.release(e)
			r.inflight.Add(-int64(len(e.msgs)))
			<-slots
		}
	}
	if r.saving != nil {
		finish(<-r.saving)
	}
	if err := r.syncDeadLetters(work); err != nil && firstErr == nil {
		firstErr = err
	}
	if pendingPos != savedPos || r.unsavedState() {
		if err := r.storeCommitted(work, pendingPos); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// commit commits a group of consecutive done epochs and returns the
// position to save (at-least-once) or "". Once an epoch fails (it could not
// finish before shutdown), *broken is set and every later epoch is
// returned to the source instead: a position must never pass a message
// that was not processed.
func (r *Runner) commit(work context.Context, group []*epoch, broken *bool) (string, error) {
	cfg := r.cfg
	var ok []*epoch
	for _, ep := range group {
		switch {
		case *broken:
			r.nack(work, ep, errors.New("an earlier batch was not processed"))
		case ep.failed.Load():
			*broken = true
			r.undrained.Store(true)
			r.nack(work, ep, errors.New("not processed before shutdown"))
		case r.parts.State != nil && r.parts.State.Stale(ep.txns()):
			// It may have read state changes of a batch returned to the
			// source: it is returned too, and runs again on what is
			// committed.
			if lastPosition(ep.msgs) != "" {
				*broken = true
			}
			r.nack(work, ep, errors.New("its keyed state read changes of a batch that was not committed"))
		default:
			ok = append(ok, ep)
		}
	}
	if len(ok) == 0 {
		return "", nil
	}
	var dead, rows []any
	var segs []seg
	var msgs []*stream.Message
	var ids []string
	var txns []*state.Txn
	for _, ep := range ok {
		dead = append(dead, ep.dead...)
		msgs = append(msgs, ep.msgs...)
		txns = append(txns, ep.txns()...)
		if cfg.Delivery == ExactlyOnce {
			for _, p := range ep.parts {
				rows = append(rows, p.out...)
				segs = append(segs, p.segs...)
			}
			for _, m := range ep.todo {
				if m.ID != "" {
					ids = append(ids, m.ID)
				}
			}
		}
	}
	fail := func(err error) (string, error) {
		// A source whose position the runtime stores must not move past
		// these messages; a source that acknowledges message by message
		// redelivers just them.
		if lastPosition(msgs) != "" {
			*broken = true
		}
		if work.Err() != nil {
			// The drain timed out while the group waited for a service
			// (the dead-letter sink, the sink): it was not committed.
			r.undrained.Store(true)
		}
		if r.partitioned && errors.Is(err, stream.ErrAlreadyCommitted) {
			// Another process committed some of these messages, and the
			// state with them: memory is behind the store for their
			// partitions. Loaded again before the batches are returned, so
			// that a batch that read the old state is returned too (stale).
			r.reloadPartitions(work, msgs)
		}
		for _, ep := range ok {
			r.nack(work, ep, err)
		}
		return "", nil
	}
	mark, moved := r.markOf(ok)
	changed := state.Changed(txns)
	if len(msgs) == 0 && len(dead) == 0 && !changed && !moved && slices.IndexFunc(ok, func(ep *epoch) bool { return ep.out.Load() > 0 }) < 0 {
		return "", nil // ticks that closed no window and fired no timer: nothing to commit
	}
	if err := r.writeDead(work, dead); err != nil {
		return fail(err)
	}
	pos := lastPosition(msgs)
	var changes []stream.StateChange
	if changed || moved {
		var err error
		if changed {
			err = r.canKeepState()
		}
		if err == nil && !r.keepsStateWithPosition(pos) {
			changes, err = r.parts.State.Changes(txns)
			if moved {
				changes = append(changes, stream.StateChange{Name: watermarkID.Name, Value: mark})
			}
		}
		if err != nil {
			r.abort(err)
			return fail(err)
		}
	}
	// Dead letters reach the disk before the transaction or the
	// acknowledgement that depends on them; a stored position syncs them
	// when it is saved.
	if cfg.Delivery == ExactlyOnce || pos == "" {
		if err := r.syncDeadLetters(work); err != nil {
			return fail(err)
		}
	}
	var refusedOf []*stream.Message
	var refused []*stream.DeadLetter
	var unsaved bool // the state changes wait for the next save: see keepState
	if cfg.Delivery == ExactlyOnce {
		var err error
		if refusedOf, refused, err = r.commitTx(work, pos, ids, rows, segs, changes); err != nil {
			return fail(err)
		}
	} else if changed || moved {
		var err error
		if unsaved, err = r.keepState(work, pos, changes, mark); err != nil {
			return fail(err)
		}
	}
	if moved {
		r.savedMark = mark
	}
	switch {
	case unsaved:
		r.parts.State.ApplyUnsaved(txns)
	case len(txns) > 0:
		r.parts.State.Apply(txns)
	}
	if len(dead) > 0 || len(refused) > 0 {
		r.notifyDead(work, ok, refusedOf, refused)
	}
	if cfg.Delivery != AtMostOnce && len(msgs) > 0 {
		if err := r.retryForever(work, r.srcLink, func() error { return r.parts.Source.Ack(work, msgs) }); err != nil {
			if work.Err() != nil {
				return fail(err) // the drain timed out: redelivered
			}
			return "", fmt.Errorf("acknowledge: %w", err)
		}
		if pos == "" {
			r.checkpointed() // the broker keeps the position
		}
	}
	for _, ep := range ok {
		if err := r.streak.observe(ep, cfg.MaxConsecutiveFailures); err != nil {
			r.abort(err)
			break
		}
	}
	r.committed.Add(int64(len(msgs)))
	r.batches.Add(int64(len(ok)))
	if cfg.BatchDone != nil {
		for _, ep := range ok {
			cfg.BatchDone(time.Since(ep.readAt))
		}
	}
	if cfg.Delivery == ExactlyOnce || cfg.Delivery == AtMostOnce {
		return "", nil // saved in the transaction, or when read
	}
	return pos, nil
}

// notifyDead tells a source that wants to know which messages of a
// committed group were dead-lettered, before they are acknowledged: those
// of the epochs' dead letters, and msgs, whose rows the exactly-once sink
// refused with letters.
func (r *Runner) notifyDead(ctx context.Context, group []*epoch, msgs []*stream.Message, letters []*stream.DeadLetter) {
	n, ok := r.parts.Source.(stream.DeadLetterNotifier)
	if !ok {
		return
	}
	for _, ep := range group {
		for i, m := range ep.deadOf {
			if m != nil {
				msgs = append(msgs, m)
				letters = append(letters, ep.dead[i].(*stream.DeadLetter))
			}
		}
	}
	if len(msgs) > 0 {
		n.DeadLettered(ctx, msgs, letters)
	}
}

// release forgets an epoch's in-flight IDs once it is committed or
// returned to the source.
func (r *Runner) release(ep *epoch) {
	if r.cfg.Delivery != ExactlyOnce {
		return
	}
	r.inflightMu.Lock()
	for _, m := range ep.todo {
		if m.ID != "" {
			delete(r.inflightIDs, m.ID)
		}
	}
	r.inflightMu.Unlock()
}

func (r *Runner) storePosition(ctx context.Context, pos string) error {
	if r.parts.Checkpoints == nil || pos == "" {
		return nil
	}
	if err := r.parts.Checkpoints.SavePosition(context.WithoutCancel(ctx), r.cfg.StateKey, pos); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return nil
}

// ackEarly acknowledges an epoch when it is read, for at-most-once
// delivery, and saves its position.
func (r *Runner) ackEarly(ctx context.Context, ep *epoch) error {
	if err := r.retryForever(ctx, r.srcLink, func() error { return r.parts.Source.Ack(ctx, ep.msgs) }); err != nil {
		return fmt.Errorf("acknowledge: %w", err)
	}
	pos := lastPosition(ep.msgs)
	if err := r.storePosition(ctx, pos); err != nil {
		return err
	}
	if r.parts.Checkpoints != nil {
		r.positionCommitted(ctx, pos)
	}
	return nil
}

func (r *Runner) nack(ctx context.Context, ep *epoch, cause error) {
	if r.parts.State != nil {
		r.parts.State.Drop(ep.txns())
	}
	r.cfg.Logger.Warn("batch not committed; it will be redelivered", "messages", len(ep.msgs), "cause", cause)
	if n, ok := r.parts.Source.(stream.Nacker); ok {
		_ = n.Nack(context.WithoutCancel(ctx), ep.msgs, cause)
	}
}

// stopping reports whether reading stopped (a stop was asked for, or the
// run aborted): in-flight batches drain.
func (r *Runner) stopping() bool {
	return r.readCtx != nil && r.readCtx.Err() != nil
}

// sleepUnlessStopping waits d, or until ctx is done or reading stops; it
// returns an error unless it waited d.
func (r *Runner) sleepUnlessStopping(ctx context.Context, d time.Duration) error {
	if r.readCtx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(r.readCtx, cancel)()
	}
	return r.cfg.Sleep(ctx, d)
}

// funcLink is the link of function fn's service.
func (r *Runner) funcLink(fn string) *link {
	if l, ok := r.fnLinks.Load(fn); ok {
		return l.(*link)
	}
	l, _ := r.fnLinks.LoadOrStore(fn, newLink("function", fn, r.cfg.Logger))
	return l.(*link)
}

// retryForever retries a call to the source or a sink (an
// acknowledgement, a dead-letter write, a transaction) with capped backoff
// and jitter until it succeeds or ctx is done: a row is never dropped
// because a service is down. l logs the outage once. An error marked
// stream.ErrFatal aborts the run instead.
func (r *Runner) retryForever(ctx context.Context, l *link, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			l.ok()
			return nil
		}
		if errors.Is(err, stream.ErrAlreadyCommitted) || r.stopOn(ctx, err) {
			return err
		}
		l.fail(err)
		if err := r.cfg.Sleep(ctx, linkWait(attempt)); err != nil {
			return err
		}
	}
}

func lastPosition(msgs []*stream.Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if p := msgs[i].Position; p != "" {
			return p
		}
	}
	return ""
}

// partitionOf maps a message to a worker by its key; keyed state relies
// on the same mapping.
func partitionOf(key string, n int) int { return state.Partition(key, n) }

// WithDefaults returns c with every unset field given the value a Runner
// uses for it.
func (c Config) WithDefaults() Config {
	c.defaults()
	return c
}

// markOf returns the watermark to keep with a committed group (its last
// epoch's) and whether it differs from the one kept: only when a store
// keeps the job's state.
func (r *Runner) markOf(group []*epoch) ([]byte, bool) {
	if r.marks == nil || r.parts.State == nil || !r.parts.State.Kept {
		return nil, false
	}
	for i := len(group) - 1; i >= 0; i-- {
		if m := group[i].mark; m != nil {
			return m, !bytes.Equal(m, r.savedMark)
		}
	}
	return nil, false
}
