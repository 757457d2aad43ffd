package kisflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/jsonl"
	"github.com/kisflow-go/kisflow/internal/runtime"
	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/internal/statelock"
	"github.com/kisflow-go/kisflow/metrics"
	"github.com/kisflow-go/kisflow/stream"
)

// DefaultStateDir is where jobs keep checkpoints and dead letters unless
// WithStateDir says otherwise: relative to the current folder for
// Engine.Job; kisflow run DIR keeps them in DIR/.kisflow.
const DefaultStateDir = ".kisflow"

// Default retry policy of stream functions that set no retry_times: the
// retry filter's.
const (
	DefaultRetryTimes    = filter.DefaultRetryTimes
	DefaultRetryDuration = filter.DefaultRetryDuration
)

// JobOption configures a Job.
type JobOption func(*jobOptions)

type jobOptions struct {
	stateDir    string
	checkpoints stream.Checkpoints
	deadLetter  stream.Sink
	sleep       func(context.Context, time.Duration) error
	bounds      *runBounds
	source      stream.Source
}

// runBounds are a one-off run's start and stop (WithBounds).
type runBounds struct{ start, stop stream.Bound }

// WithStateDir sets the folder for the default checkpoint store
// (checkpoints.db) and dead-letter files (dead-letter/FLOW.jsonl).
//
// A job whose source position is kept in that store (at-least-once or
// at-most-once from a file, a generator, an SQL poller) holds an exclusive
// lock (locks/FLOW.lock) on the folder until it ends: a second job of the
// same flow on the same folder, in this process or another, fails to
// start, naming the holder. Jobs on different folders are not locked
// against each other. Exactly-once jobs take no lock: their sink fences
// each commit instead (see stream.FencedTxSink).
func WithStateDir(dir string) JobOption { return func(o *jobOptions) { o.stateDir = dir } }

// WithBounds makes the job a one-off run from start to stop (kisflow run
// --from/--until), in place of the stream block's start and stop, that
// leaves the flow's committed position as it was: the runtime's position
// is kept in memory only, and a source that keeps its own (a consumer
// group) reads without it and commits nothing (stream.SourceOptions
// Detached). A zero start is the committed position.
func WithBounds(start, stop stream.Bound) JobOption {
	return func(o *jobOptions) { o.bounds = &runBounds{start, stop} }
}

// WithSource makes the job a one-off run that reads src in place of the
// stream's source (kisflow run's dead-letter replay feeds the letters so):
// as with WithBounds, its positions are kept in memory only, the flow's
// committed position and keyed state are neither read nor written, and
// no state-folder lock is taken. src should be bounded (return io.EOF).
// An exactly-once flow refuses it: its positions are committed with its
// sink's transactions.
func WithSource(src stream.Source) JobOption { return func(o *jobOptions) { o.source = src } }

// WithCheckpoints replaces the default SQLite checkpoint store.
func WithCheckpoints(c stream.Checkpoints) JobOption {
	return func(o *jobOptions) { o.checkpoints = c }
}

// WithDeadLetterSink replaces the dead-letter sink of the flow's stream
// block and the default file.
func WithDeadLetterSink(s stream.Sink) JobOption { return func(o *jobOptions) { o.deadLetter = s } }

// WithRetrySleep replaces the wait between retries (for tests with a fake
// clock); it must return ctx's error when ctx is done first.
func WithRetrySleep(sleep func(ctx context.Context, d time.Duration) error) JobOption {
	return func(o *jobOptions) { o.sleep = sleep }
}

// Job runs a flow on the stream its `stream:` block names: it reads the
// source in micro-batches, runs them on Workers forks of the flow, writes
// the last layer's rows to the sink, dead-letters what fails after its
// retries, and acknowledges the source once a batch is done.
type Job struct {
	eng      *Engine
	name     string
	start    StartPosition
	runner   *runtime.Runner
	source   stream.Source
	closers  []func() error
	log      *slog.Logger
	table    *state.Table     // the job's keyed state
	windows  []*windowHandler // the flow's window functions, shared by its instances
	handlers []Handler        // the flow's functions' handlers, in its order
	steps    []*runtime.Step  // the steps' counters, shared by the instances

	mu    sync.Mutex
	state jobState
}

type jobState int

const (
	jobPrepared jobState = iota
	jobRan               // Run was called: it releases what the job holds
	jobClosed
)

// ErrJobUsed is returned by Job.Run on a job that already ran or was
// closed: a Job runs once.
var ErrJobUsed = errors.New("job already ran or was closed")

// Close releases a prepared job that is not going to run: it closes its
// source (a consumer, a listening socket, an open file) and the stores it
// opened. After Run it does nothing, since Run releases them when it
// returns. It is safe to call more than once, and from a defer after Run.
func (j *Job) Close(ctx context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.state != jobPrepared {
		return nil
	}
	j.state = jobClosed
	err := j.source.Close(ctx)
	j.close()
	return err
}

// JobStats are a job's counters; see Job.Stats.
type JobStats struct {
	Read         int64 // messages read from the source
	Committed    int64 // messages acknowledged (processed or dead-lettered)
	Out          int64 // rows written to the sink
	DeadLettered int64 // messages dead-lettered (also those whose dead letters the sink already held)
	Retries      int64 // retried runs and writes
	Batches      int64 // micro-batches committed
	InFlight     int64 // messages read and not yet committed
	MaxInFlight  int64 // the most messages in flight at once
	Skipped      int64 // redelivered messages an exactly-once sink had already committed
	SourceErrors int64 // failed source reads and acknowledgements, retried
	SinkErrors   int64 // failed sink writes and commits, retried
}

// ErrDrainTimeout is returned (wrapped) by Job.Run when in-flight batches
// did not finish within the stream's drain_timeout after a stop: they were
// returned to the source, which delivers them again on the next run.
var ErrDrainTimeout = runtime.ErrNotDrained

// StartError is a connector's failed start, returned (wrapped) by
// Engine.Connector, Engine.Flow and Engine.Job. Unless Err is marked
// stream.Fatal (refused credentials, a configuration error) the service is
// likely only down, and a later call may succeed: kisflow run waits.
type StartError struct {
	Connector string // the connector's name
	Err       error  // what the driver's Start returned, with the connector named
}

func (e *StartError) Error() string { return e.Err.Error() }

// Unwrap returns the driver's error.
func (e *StartError) Unwrap() error { return e.Err }

// Job prepares the flow's stream: it starts the connectors, opens the
// source at its committed position and the sinks. Run starts it.
func (e *Engine) Job(ctx context.Context, flowName string, opts ...JobOption) (*Job, error) {
	o := jobOptions{stateDir: DefaultStateDir}
	for _, opt := range opts {
		opt(&o)
	}
	fc := e.set.Flows[flowName]
	if fc == nil {
		return nil, fmt.Errorf("flow %q: %w", flowName, ErrUnknownFlow)
	}
	st := fc.Stream
	if st == nil {
		return nil, fmt.Errorf("flow %q has no stream block (stream.source names its source)", flowName)
	}
	base, err := e.Flow(ctx, flowName)
	if err != nil {
		return nil, err
	}
	j := &Job{eng: e, name: flowName, log: e.log.With("flow", flowName)}
	fail := func(err error) (*Job, error) {
		j.close()
		return nil, e.red.Error(fmt.Errorf("flow %q: %w", flowName, err))
	}

	parts := runtime.Parts{}
	var sinkTx stream.TxSink // the sink's transactions, whatever the delivery
	delivery := st.Delivery
	if delivery == "" {
		delivery = config.AtLeastOnce
	}
	if o.source != nil && delivery == config.ExactlyOnce {
		return fail(errors.New("an exactly-once flow cannot read another source than its own (its positions are committed with its sink)"))
	}
	if st.Sink != "" {
		c, err := e.Connector(ctx, st.Sink)
		if err != nil {
			return fail(err)
		}
		sink, ok := c.Driver().(stream.Sink)
		if !ok {
			return fail(fmt.Errorf("stream sink %q: connector type %s cannot be a sink", st.Sink, c.Type()))
		}
		parts.Sink = sink
		if st.Sink != st.Source {
			sinkTx, _ = c.Driver().(stream.TxSink)
		}
		if delivery == config.ExactlyOnce {
			tx, ok := c.Driver().(stream.TxSink)
			if !ok {
				return fail(fmt.Errorf("exactly-once: sink %q (type %s) is not transactional", st.Sink, c.Type()))
			}
			parts.TxSink = tx
		}
	}
	switch {
	case o.deadLetter != nil:
		parts.DeadLetter = o.deadLetter
	case st.DeadLetter != "":
		c, err := e.Connector(ctx, st.DeadLetter)
		if err != nil {
			return fail(err)
		}
		sink, ok := c.Driver().(stream.Sink)
		if !ok {
			return fail(fmt.Errorf("dead_letter %q: connector type %s cannot be a sink", st.DeadLetter, c.Type()))
		}
		parts.DeadLetter = sink
	default:
		// Synced by the runtime before what depends on it: see runtime.Syncer.
		w, err := jsonl.Open(filepath.Join(o.stateDir, "dead-letter", flowName+".jsonl"), false)
		if err != nil {
			return fail(fmt.Errorf("dead-letter file: %w", err))
		}
		j.closers = append(j.closers, w.Close)
		parts.DeadLetter = w
	}

	sc, err := e.Connector(ctx, st.Source)
	if err != nil {
		return fail(err)
	}
	key := StateKey(flowName, e.set.Conns[st.Source], sc.Driver())
	j.start = StartPosition{Key: key, Source: st.Source}
	var positions interface {
		Position(ctx context.Context, stream string) (string, error)
	}
	if delivery == config.ExactlyOnce {
		positions = parts.TxSink
	} else {
		ck := o.checkpoints
		if ck == nil {
			store, err := checkpoint.OpenSQLite(ctx, filepath.Join(o.stateDir, "checkpoints.db"))
			if err != nil {
				return fail(err)
			}
			j.closers = append(j.closers, store.Close)
			ck = store
		}
		parts.Checkpoints = ck
		positions = ck
	}
	if err := j.loadPosition(ctx, positions); err != nil {
		return fail(err)
	}
	if (o.bounds != nil || o.source != nil) && parts.Checkpoints != nil {
		// A one-off run: its positions are not the flow's.
		parts.Checkpoints = &memCheckpoints{pos: map[string]string{}}
	}
	resume := j.start.Position
	workers := max(st.Workers, 1)
	runKey := key // where the run commits positions, inbox IDs and keyed state
	if o.bounds != nil && delivery == config.ExactlyOnce {
		// A one-off run into an exactly-once sink commits in the sink's
		// transactions, as every run does, but under a key of its own:
		// the flow's committed position, inbox and keyed state stay as
		// they are.
		if runKey, err = oneOffKey(key); err != nil {
			return fail(err)
		}
		j.start.RunKey = runKey
	}

	sd, ok := sc.Driver().(stream.SourceDriver)
	if !ok {
		return fail(fmt.Errorf("stream source %q: connector type %s cannot be a source", st.Source, sc.Type()))
	}
	if r, ok := sd.(stream.Resumable); ok {
		j.start.Resumable = r.Resumable()
	}
	if j.start.Resumable && o.checkpoints == nil && delivery != config.ExactlyOnce && o.bounds == nil && o.source == nil {
		// The position is the state folder's: one run of the flow at a
		// time on it (exactly-once runs are fenced by their sink instead).
		lock, err := statelock.Acquire(filepath.Join(o.stateDir, "locks", flowName+".lock"), "kisflow run of flow "+flowName)
		if err != nil {
			return fail(fmt.Errorf("state folder %s is in use: %w", o.stateDir, err))
		}
		j.closers = append(j.closers, lock.Release)
	}
	if j.start.Resumable && o.bounds == nil && o.source == nil && sinkTx != nil {
		if err := j.takeOver(ctx, delivery, parts, sinkTx, st.Sink, o.checkpoints, filepath.Join(o.stateDir, "checkpoints.db")); err != nil {
			return fail(outage(st.Sink, err))
		}
	}
	resume = j.start.Position
	sopts := stream.SourceOptions{Name: flowName, StateKey: key, Resume: resume, Logger: j.log}
	if o.bounds != nil {
		sopts.Start, sopts.Stop, sopts.Detached = o.bounds.start, o.bounds.stop, true
	} else {
		if sopts.Start, err = BoundOf(st.Start); err != nil {
			return fail(fmt.Errorf("stream.start: %w", err))
		}
		if sopts.Stop, err = BoundOf(st.Stop); err != nil {
			return fail(fmt.Errorf("stream.stop: %w", err))
		}
	}
	if o.source != nil {
		sopts.Start, sopts.Stop, sopts.Detached = stream.Bound{}, stream.Bound{}, true
	}
	if !sopts.Start.IsZero() || !sopts.Stop.IsZero() {
		sk, ok := sd.(stream.Seeker)
		switch {
		case !ok:
			return fail(fmt.Errorf("stream source %q (type %s) has no start or stop positions", st.Source, sc.Type()))
		case !sk.Seeks().CanStart(sopts.Start.Kind):
			return fail(fmt.Errorf("stream source %q (type %s) cannot start at %s (it can do %s)", st.Source, sc.Type(), sopts.Start, sk.Seeks().Describe()))
		case !sk.Seeks().CanStop(sopts.Stop.Kind):
			return fail(fmt.Errorf("stream source %q (type %s) cannot stop at %s (it can do %s)", st.Source, sc.Type(), sopts.Stop, sk.Seeks().Describe()))
		}
		if startErr, stopErr := sk.Seeks().CheckBounds(sopts.Start, sopts.Stop); startErr != nil || stopErr != nil {
			return fail(fmt.Errorf("stream source %q (type %s): %w", st.Source, sc.Type(), errors.Join(startErr, stopErr)))
		}
	}
	j.start.Start, j.start.Stop, j.start.Detached = sopts.Start, sopts.Stop, sopts.Detached
	src := o.source
	if src == nil {
		if src, err = sd.OpenSource(ctx, sopts); err != nil {
			return fail(outage(st.Source, fmt.Errorf("open source %q: %w", st.Source, err)))
		}
	}
	j.source = src
	parts.Source = src
	if a, ok := src.(stream.Anchorer); ok && resume == "" && o.source == nil && !sopts.Detached && sopts.Start.IsZero() {
		pos, err := j.anchor(ctx, a, parts, key)
		if err != nil {
			_ = src.Close(ctx)
			return fail(fmt.Errorf("source %q: %w", st.Source, err))
		}
		resume = pos
	}
	if err := e.loadState(ctx, &parts, runKey, workers); err != nil {
		_ = src.Close(ctx)
		return fail(err)
	}
	j.table = parts.State

	// A Job checks source.must: a row lacking a field is dead-lettered
	// (Flow.Run, the original's programming model, does not check it).
	flows := make([]*flow, workers)
	flows[0] = base.(*flow)
	for i := 1; i < workers; i++ {
		flows[i] = base.Fork().(*flow)
	}
	names := make([]string, len(flows[0].funcs))
	for i, fn := range flows[0].funcs {
		names[i] = fn.Name()
	}
	j.steps = runtime.NewSteps(names)
	for _, fl := range flows {
		fl.checkMust = true
		j.count(fl)
	}
	parts.NewFlow = func(i int) runtime.Flow {
		if i < len(flows) {
			return &jobFlow{fl: flows[i]}
		}
		fl := base.Fork().(*flow) // the commit loop's own
		fl.checkMust = true
		j.count(fl)
		return &jobFlow{fl: fl}
	}

	batchSize := st.BatchSize
	if spec, ok := e.reg.ConnectorSpec(sc.Type()); ok && batchSize <= 0 {
		batchSize = spec.BatchSize // the source type's default (0: the runtime's)
	}
	cfg := runtime.Config{
		Name: flowName, StateKey: runKey, BatchSize: batchSize, Linger: st.Linger.Std(), Workers: workers,
		Key: st.Key, Delivery: delivery, MaxInFlight: st.MaxInFlight, DrainTimeout: st.DrainTimeout.Std(),
		PolicyFor: e.policyFor(st), FuncOf: funcOf, Steps: j.steps, Logger: j.log, Sleep: o.sleep, CheckpointInterval: st.CheckpointInterval.Std(),
		SourceName: st.Source, SinkName: st.Sink, DeadLetterName: st.DeadLetter, MaxConsecutiveFailures: st.MaxConsecutiveFailures,
		Resume: resume, Fence: j.start.Resumable && runKey == key,
	}
	// Windows close at the end of a bounded source, and processing-time
	// windows also while the stream is idle; timers fire after batches, on
	// ticks and at the end.
	cfg.FlushAtEnd, cfg.Tick = base.(*flow).c.windowed()
	cfg.Timers = base.(*flow).c.hasTimers()
	cfg.TimeField, cfg.Lateness, cfg.IdleTimeout = st.TimeField, st.Lateness.Std(), st.IdleTimeout.Std()
	j.handlers = base.(*flow).c.handlers
	for _, h := range base.(*flow).c.handlers {
		if w, ok := h.(*windowHandler); ok {
			j.windows = append(j.windows, w)
		}
	}
	lat := e.metrics.BatchLatency.WithLabelValues(flowName)
	cfg.BatchDone = func(d time.Duration) { lat.Observe(d.Seconds()) }
	if e.env.Tracer != nil {
		cfg.RunContext = batchTraceContext
		if parts.Sink != nil {
			parts.Sink = &tracedSink{Sink: parts.Sink, tracer: e.env.Tracer, name: "sink " + st.Sink, flow: flowName}
		}
	}
	if j.runner, err = runtime.New(cfg, parts); err != nil {
		_ = src.Close(ctx)
		return fail(err)
	}
	return j, nil
}

// anchor commits the start an Anchorer fixes (see stream.Anchorer) as
// the flow's position: in the exactly-once sink, fenced on there being
// none yet, else in the checkpoint store. A server that cannot be reached
// is an outage: it tries again, backing off up to 5s, until ctx ends.
func (j *Job) anchor(ctx context.Context, a stream.Anchorer, parts runtime.Parts, key string) (string, error) {
	var pos string
	var err error
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		pos, err = a.Anchor(ctx)
		if err == nil || stream.IsFatal(err) || ctx.Err() != nil {
			break
		}
		j.log.Warn("source unreachable to fix its start position; trying again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	if err != nil || pos == "" {
		return "", err
	}
	switch tx := parts.TxSink.(type) {
	case nil:
		if parts.Checkpoints == nil {
			return "", nil
		}
		err = parts.Checkpoints.SavePosition(ctx, key, pos)
	case stream.FencedTxSink:
		err = tx.CommitBatchAfter(ctx, key, "", pos, nil, nil)
	default:
		err = tx.CommitBatch(ctx, key, pos, nil, nil)
	}
	if err != nil {
		return "", fmt.Errorf("commit the start position %s: %w", pos, err)
	}
	j.start.Position, j.start.Anchored = pos, true
	return pos, nil
}

// loadState gives the job its keyed state, loaded from the store that
// keeps it: the exactly-once sink, or the checkpoint store. With a source
// whose partitions move between processes (stream.PartitionOwner), only
// the entries without a partition are loaded now: the runner loads each
// partition's when the source is assigned it.
func (e *Engine) loadState(ctx context.Context, parts *runtime.Parts, key string, workers int) error {
	parts.State = state.New(workers, e.codec.Marshal)
	var from stream.StateLoader
	if parts.TxSink != nil {
		from, _ = parts.TxSink.(stream.StateSink)
	} else if ss, ok := parts.Checkpoints.(stream.StateStore); ok {
		parts.StateStore, from = ss, ss
	}
	if from == nil {
		return nil
	}
	parts.State.Kept = true
	parts.StateLoader = from
	var only []string
	if _, ok := parts.Source.(stream.PartitionOwner); ok {
		only = []string{""}
	}
	if err := runtime.LoadState(ctx, from, parts.State, key, only); err != nil {
		return fmt.Errorf("load keyed state: %w", err)
	}
	return nil
}

// StartPosition is where a job starts reading; see Job.StartPosition.
type StartPosition struct {
	// Key is the state key of the job's position (see StateKey).
	Key string
	// Source is the name of the source connector.
	Source string
	// Position is the committed position the source was opened at, ""
	// for none.
	Position string
	// CommittedAt is when Position was committed; the zero time when
	// unknown (a store that keeps no time) or when there is no position.
	CommittedAt time.Time
	// Resumable reports that the source resumes from positions the
	// runtime stores (a file, a generator, an SQL poller); other sources
	// keep their own (a broker's consumer group) or have none.
	Resumable bool
	// Rekeyed reports that the position was found under the flow name
	// alone, where an earlier version kept it, and moved to Key.
	Rekeyed bool
	// TakenOver, when not "", says where Position was taken over from
	// after the flow's stream.delivery changed: "sink NAME" (where
	// exactly-once delivery kept it) or "checkpoints PATH" (at-least-once);
	// see Engine.Job.
	TakenOver string
	// Start and Stop are where the run starts instead of Position (zero:
	// at Position) and where it stops (zero: never): the stream block's
	// start and stop, or WithBounds.
	Start, Stop stream.Bound
	// Detached reports a one-off run (WithBounds) that leaves the
	// committed position as it is.
	Detached bool
	// Anchored reports that there was no committed position and the
	// source fixed where it starts (the log's end: see stream.Anchorer):
	// Position is that start, committed before the first read.
	Anchored bool
	// RunKey, for a one-off run into an exactly-once sink, is the
	// throw-away key under which the run commits its positions, inbox IDs
	// and keyed state in the sink, in place of Key; "" otherwise.
	RunKey string
}

// loadPosition moves a position kept under the flow name alone to the
// job's state key (once), then reads it and its commit time.
func (j *Job) loadPosition(ctx context.Context, store interface {
	Position(ctx context.Context, stream string) (string, error)
}) error {
	key := j.start.Key
	if rk, ok := store.(stream.Rekeyer); ok && key != j.name {
		moved, err := rk.Rekey(ctx, j.name, key)
		if err != nil {
			return err
		}
		if moved {
			j.start.Rekeyed = true
			j.log.InfoContext(ctx, fmt.Sprintf("flow %s: state saved under the flow name by an earlier version moved to %s", j.name, key))
		}
	}
	pos, err := store.Position(ctx, key)
	if err != nil {
		return err
	}
	j.start.Position = pos
	if pt, ok := store.(stream.PositionTimer); ok && pos != "" {
		if j.start.CommittedAt, err = pt.PositionTime(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// outage returns err as a *StartError of connector conn when it is an
// outage of its service (a network error, or marked stream.Unavailable,
// and not stream.Fatal): the service went down after its connector
// started, the same weather as a connector that is not up yet, so the
// start is tried again. Other errors are returned as they are.
func outage(conn string, err error) error {
	var ne net.Error
	if (errors.As(err, &ne) || stream.IsUnavailable(err)) && !stream.IsFatal(err) {
		return &StartError{Connector: conn, Err: err}
	}
	return err
}

// takeOver takes over the position that the flow's other delivery keeps
// (tx, the sink's, when it runs at-least-once; the checkpoint store's, ck
// or the file at ckPath, when it runs exactly-once) when the store of its
// own delivery holds none, or an older one (both with commit times): so a
// change of stream.delivery resumes where the last run stopped instead of
// reading everything again. The keyed state (windows included) comes with
// it, in the same transaction of the store (see stateToTakeOver). Into an
// exactly-once sink the position is committed fenced on the one found
// there, with the sink's record of consumed messages forgotten after when
// it can (as kisflow positions set does); the other store's copy stays,
// older than the new one from the next commit on. A failure names kisflow
// positions set, to move the position by hand.
func (j *Job) takeOver(ctx context.Context, delivery string, parts runtime.Parts, tx stream.TxSink, sinkName string, ck stream.Checkpoints, ckPath string) error {
	key, here := j.start.Key, j.start.Position
	var other interface { // where the other delivery keeps it
		Position(ctx context.Context, stream string) (string, error)
	} = tx
	from, was := "sink "+sinkName, "exactly-once"
	if delivery == config.ExactlyOnce {
		from, was = "checkpoints "+ckPath, "at-least-once"
		if ck == nil {
			if _, err := os.Stat(ckPath); err != nil {
				return nil // no at-least-once run kept a position there
			}
			store, err := checkpoint.OpenSQLite(ctx, ckPath)
			if err != nil {
				return err
			}
			defer store.Close()
			ck = store
		}
		other = ck
	}
	pos, err := other.Position(ctx, key)
	if err != nil || pos == "" {
		return err
	}
	at := PositionTime(ctx, other, key)
	if !TakesOver(here, j.start.CommittedAt, pos, at) {
		return nil // the store of this delivery holds the newer one
	}
	fail := func(err error) error {
		return fmt.Errorf("stream.delivery changed: cannot take over position %s, which %s delivery kept in %s: %w; "+
			"set it with kisflow positions set DIR %s --to %s (keyed state and open windows are not moved), or change stream.delivery back", pos, was, from, err, j.name, pos)
	}
	changes, err := j.stateToTakeOver(ctx, other, parts, key)
	if err != nil {
		return fail(err)
	}
	switch t := parts.TxSink.(type) {
	case nil:
		if ss, ok := parts.Checkpoints.(stream.StateStore); ok && len(changes) > 0 {
			err = ss.SaveState(ctx, key, pos, changes)
		} else {
			err = parts.Checkpoints.SavePosition(ctx, key, pos)
		}
	default:
		if ss, ok := t.(stream.StateSink); ok && len(changes) > 0 {
			// The state with the position, fenced; the record of consumed
			// messages is forgotten after.
			if err = ss.CommitStateAfter(ctx, key, here, pos, nil, nil, changes); err != nil {
				break
			}
			here = pos
		}
		switch t := t.(type) {
		case stream.PositionMover:
			err = t.MovePosition(ctx, key, here, pos, false)
		case stream.FencedTxSink:
			err = t.CommitBatchAfter(ctx, key, here, pos, nil, nil)
		default:
			err = t.CommitBatch(ctx, key, pos, nil, nil)
		}
	}
	if err != nil {
		return fail(err)
	}
	j.start.Position, j.start.CommittedAt, j.start.TakenOver = pos, at, from
	j.log.InfoContext(ctx, fmt.Sprintf("flow %s: position %s taken over from %s, where %s delivery kept it", j.name, pos, from, was))
	return nil
}

// stateToTakeOver returns the changes that make the keyed state (windows
// included) of key in the store of the job's delivery (parts) that of
// other, the store of its other delivery: other's entries, and the
// deletion of those only the job's store holds. It fails when other holds
// state that the job's store cannot hold.
func (j *Job) stateToTakeOver(ctx context.Context, other any, parts runtime.Parts, key string) ([]stream.StateChange, error) {
	var to stream.StateLoader
	if parts.TxSink != nil {
		to, _ = parts.TxSink.(stream.StateSink)
	} else {
		to, _ = parts.Checkpoints.(stream.StateStore)
	}
	var changes []stream.StateChange
	type entry struct{ name, key, field string }
	has := map[entry]bool{}
	if from, ok := other.(stream.StateLoader); ok {
		err := from.LoadState(ctx, key, func(c stream.StateChange) error {
			changes = append(changes, c)
			has[entry{c.Name, c.Key, c.Field}] = true
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read its keyed state: %w", err)
		}
	}
	if to == nil {
		if len(changes) > 0 {
			return nil, fmt.Errorf("it has keyed state (%d entries, open windows included) that the store of the new delivery cannot hold", len(changes))
		}
		return nil, nil
	}
	err := to.LoadState(ctx, key, func(c stream.StateChange) error {
		if !has[entry{c.Name, c.Key, c.Field}] {
			changes = append(changes, stream.StateChange{Name: c.Name, Key: c.Key, Field: c.Field, Deleted: true, Partition: c.Partition})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the keyed state it replaces: %w", err)
	}
	return changes, nil
}

// TakesOver reports whether a job takes over the position there,
// committed at thereAt where the flow's other stream.delivery keeps it,
// in place of here, committed at hereAt where its delivery keeps it: when
// here is "", or when there is a later commit than here (both times
// known), of a position other than here.
func TakesOver(here string, hereAt time.Time, there string, thereAt time.Time) bool {
	switch {
	case there == "" || there == here:
		return false
	case here == "":
		return true
	}
	return !hereAt.IsZero() && !thereAt.IsZero() && thereAt.After(hereAt)
}

// PositionTime returns when store committed the position of key, the zero
// time when it cannot tell (it is no stream.PositionTimer, or fails).
func PositionTime(ctx context.Context, store any, key string) time.Time {
	if pt, ok := store.(stream.PositionTimer); ok {
		if at, err := pt.PositionTime(ctx, key); err == nil {
			return at
		}
	}
	return time.Time{}
}

// StartPosition returns where the job starts: the committed position it
// resumes at, if any, and when it was committed.
func (j *Job) StartPosition() StartPosition { return j.start }

// maxStateKey bounds a state key (an SQL store's column holds 255
// characters); a longer one keeps its start and a hash of the whole.
const maxStateKey = 200

// StateKey returns the key under which the job of flow keeps its position
// (in the checkpoint store, or in an exactly-once sink with the IDs of the
// messages it consumed): FLOW@TYPE:WHERE, where WHERE identifies the
// source connector source. When its driver d is a driver.Identifier with
// an identity, WHERE is that identity (a file: dir=DEV:INODE/NAME, its
// folder's device and inode and its name, which a move of the folder
// keeps). Otherwise (d nil, or no identity) WHERE is made from the config:
// its addresses (with passwords and tokens replaced by xxxxx, so that
// changing a password keeps the position), the params dsn, database,
// stream, db and group, its path (params.path) made absolute, and its key
// (table, stream, topic, queue, subject); a source with none of these (a
// generator) is identified by its folder and name. Two flows of the same
// name read from different sources keep separate positions, and a flow
// keeps its position across processes that read the same source. A key
// longer than 200 bytes keeps its first 180 and a hash of the whole.
func StateKey(flow string, source *config.Conn, d driver.Driver) string {
	if source == nil {
		return flow
	}
	if id, ok := d.(driver.Identifier); ok {
		if where := id.Identity(); where != "" {
			return limitKey(flow + "@" + source.Type + ":" + config.Redact(where))
		}
	}
	var parts []string
	if a := source.AddrList(); len(a) > 0 {
		parts = append(parts, strings.Join(a, ","))
	}
	for _, p := range []string{"dsn", "database", "stream", "db", "group"} {
		if v := source.Params[p]; v != "" {
			parts = append(parts, p+"="+v)
		}
	}
	if p := source.Params["path"]; p != "" {
		parts = append(parts, absPath(source.Path(p)))
	}
	if source.Key != "" {
		parts = append(parts, source.Key)
	}
	if len(parts) == 0 {
		dir := source.Dir
		if dir == "" {
			dir = "."
		}
		parts = append(parts, absPath(dir), source.CName)
	}
	return limitKey(flow + "@" + source.Type + ":" + config.Redact(strings.Join(parts, "/")))
}

// oneOffKey returns a key of its own for a one-off run of the stream
// whose state key is key (see StartPosition.RunKey).
func oneOffKey(key string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("one-off run key: %w", err)
	}
	return limitKey(key + "#once-" + hex.EncodeToString(b[:])), nil
}

// limitKey cuts a state key longer than maxStateKey to its first 180
// bytes and a hash of the whole.
func limitKey(key string) string {
	if len(key) > maxStateKey {
		sum := sha256.Sum256([]byte(key))
		key = strings.ToValidUTF8(key[:180], "") + "~" + hex.EncodeToString(sum[:])[:12]
	}
	return key
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// policyFor returns the retry policy lookup of a stream: a function's own
// retry_times (capped) and retry_duration when set, else the stream's.
func (e *Engine) policyFor(st *config.Stream) func(string) runtime.Policy {
	def := runtime.Policy{Retries: DefaultRetryTimes, Base: DefaultRetryDuration}
	if st.RetryTimes != nil {
		def.Retries = min(max(*st.RetryTimes, 0), config.MaxRetryTimes)
	}
	if st.RetryDuration > 0 {
		def.Base = time.Duration(st.RetryDuration) * time.Millisecond
	}
	return func(fname string) runtime.Policy {
		p := def
		if fc := e.set.Funcs[fname]; fc != nil {
			if fc.Option.RetryTimes > 0 {
				p.Retries = min(fc.Option.RetryTimes, config.MaxRetryTimes)
			}
			if fc.Option.RetryDuration > 0 {
				p.Base = time.Duration(fc.Option.RetryDuration) * time.Millisecond
			}
		}
		return p
	}
}

func funcOf(err error) string {
	var fe *FuncError
	if errors.As(err, &fe) {
		return fe.Func
	}
	return ""
}

// Run processes the stream until a bounded source is exhausted, or until
// ctx is cancelled (SIGINT, SIGTERM); then it drains: in-flight batches
// finish within the stream's drain_timeout and are acknowledged, positions
// are committed and the source is closed. The engine's connectors stay
// open; close them with Engine.Close.
func (j *Job) Run(ctx context.Context) error {
	j.mu.Lock()
	if j.state != jobPrepared {
		j.mu.Unlock()
		return fmt.Errorf("flow %q: %w", j.name, ErrJobUsed)
	}
	j.state = jobRan
	j.mu.Unlock()
	defer j.close()
	untrack := j.eng.metrics.TrackStream(j.name, j.streamStats)
	defer untrack()
	check := "flow " + j.name
	j.eng.health.Set(check, func(context.Context) error {
		if ctx.Err() != nil {
			return errors.New("draining")
		}
		return j.runner.Down() // not ready while the source or sink is unavailable
	})
	defer j.eng.health.Remove(check)
	// The admin server's GET /state/{flow}/{key}: committed state only.
	defer j.eng.states.Set(j.name, j.table.View)()
	j.log.InfoContext(ctx, "job starts")
	err := j.runner.Run(ctx)
	s := j.Stats()
	j.log.InfoContext(ctx, "job ends", "read", s.Read, "committed", s.Committed, "out", s.Out, "dead_lettered", s.DeadLettered, "retries", s.Retries)
	if n := j.OpenWindows(); n > 0 {
		if j.WindowsKept() {
			j.log.InfoContext(ctx, "open windows are kept for the next run", "windows", n)
		} else {
			j.log.Warn("open windows were not emitted: windows are not kept across runs yet; their rows are lost", "windows", n)
		}
	}
	return j.eng.red.Error(err)
}

// WindowsKept reports whether the job keeps the state of its window
// functions with its commits, so that a run that resumes goes on with the
// windows this one left open: with a store that keeps state (an
// exactly-once SQL sink, or the checkpoint store), with any number of
// workers (each keeps its own windows).
func (j *Job) WindowsKept() bool {
	return len(j.windows) > 0 && j.table.Kept
}

// OpenWindows returns how many windows (one per window and group) the
// flow's window functions hold open, not yet emitted. After Run it is what
// the stop (a signal, an error) left unemitted: a bounded source read to
// its end closes every window, but a stop before that does not; the next
// run resumes them only when WindowsKept.
func (j *Job) OpenWindows() int {
	n := 0
	for _, w := range j.windows {
		n += w.open()
	}
	return n
}

// streamStats is what the metrics read at scrape time.
func (j *Job) streamStats() metrics.StreamStats {
	s := j.runner.Stats()
	out := metrics.StreamStats{Committed: s.Committed, DeadLettered: s.DeadLettered, Retries: s.Retries, InFlight: s.InFlight, Lag: -1,
		SourceErrors: s.SourceErrors, SinkErrors: s.SinkErrors}
	out.SourceConnected, out.SinkConnected = j.runner.Connected()
	if l, ok := j.source.(stream.Lagger); ok {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if n, err := l.Lag(ctx); err == nil {
			out.Lag = n
		}
	}
	return out
}

// batchTraceContext continues the trace of a batch's first message that
// carries one, and links the traces of the others (up to 128).
func batchTraceContext(ctx context.Context, msgs []*stream.Message) context.Context {
	var parent trace.SpanContext
	var links []trace.Link
	for _, m := range msgs {
		if len(m.Headers) == 0 {
			continue
		}
		sc := trace.SpanContextFromContext(stream.ExtractTrace(context.Background(), m.Headers))
		switch {
		case !sc.IsValid():
		case !parent.IsValid():
			parent = sc
		case sc.TraceID() != parent.TraceID() && len(links) < 128:
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if !parent.IsValid() {
		return ctx
	}
	ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	if len(links) > 0 {
		ctx = filter.ContextWithLinks(ctx, links)
	}
	return ctx
}

// tracedSink writes in a span of its own, which sinks that carry headers
// propagate downstream.
type tracedSink struct {
	stream.Sink
	tracer     trace.Tracer
	name, flow string
}

func (t *tracedSink) Write(ctx context.Context, rows []any) error {
	ctx, span := t.tracer.Start(ctx, t.name, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(filter.AttrFlow.String(t.flow), filter.AttrRowsOut.Int(len(rows))))
	defer span.End()
	err := t.Sink.Write(ctx, rows)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// Stats returns the job's counters so far; safe for concurrent use.
func (j *Job) Stats() JobStats { return JobStats(j.runner.Stats()) }

// count makes the steps of fl count on the job's counters.
func (j *Job) count(fl *flow) {
	for i, s := range fl.steps {
		s.count = j.steps[i]
	}
}

// StepStats are the counters of one step (one function) of a job, summed
// over its workers; see Job.StepStats.
type StepStats struct {
	Func    string `json:"func"`
	Calls   int64  `json:"calls"`   // calls of the function (one per batch, worker and layer)
	In      int64  `json:"in"`      // rows the function was called with
	Out     int64  `json:"out"`     // rows the function committed
	Errors  int64  `json:"errors"`  // calls that returned an error
	Retries int64  `json:"retries"` // calls retried by its retry filter, and batch runs retried for its errors
	Dead    int64  `json:"dead"`    // messages and rows dead-lettered for it (its errors and rejections)
	Busy    int64  `json:"busy"`    // batches inside the function now (at most one per worker): where batches queue, the step that holds them back
	BusyNs  int64  `json:"busy_ns"` // time spent in the function, summed over workers, in nanoseconds
	Windows int    `json:"windows"` // windows the function holds open (a window function; 0 for others)
}

// StepStats returns the counters of each step of the flow, in the order
// of its functions; safe for concurrent use. They count once per call of
// a function, not per row.
func (j *Job) StepStats() []StepStats {
	rs := j.runner.StepStats()
	out := make([]StepStats, len(rs))
	for i, s := range rs {
		out[i] = StepStats{Func: s.Func, Calls: s.Calls, In: s.In, Out: s.Out, Errors: s.Errors,
			Retries: s.Retries, Dead: s.Dead, Busy: s.Busy, BusyNs: s.BusyNs}
		if w, ok := j.handlers[i].(*windowHandler); ok {
			out[i].Windows = w.open()
		}
	}
	return out
}

// CheckpointedAt returns when the job last made its progress durable: a
// position committed (in the checkpoint store, or in an exactly-once
// sink's transaction) or, for a source whose position its broker keeps,
// messages acknowledged; ok is false before the first.
func (j *Job) CheckpointedAt() (time.Time, bool) { return j.runner.CheckpointedAt() }

// StateEntries returns how many committed keyed-state entries the job
// holds in memory (expired ones not yet swept included; the windows'
// state is counted by StepStats).
func (j *Job) StateEntries() int {
	if j.table == nil {
		return 0
	}
	return j.table.Len()
}

// Lag returns how many messages the source holds beyond what the job has
// read, when the source can tell (a Kafka topic, a NATS stream); ok is
// false otherwise. It asks the source, within a second.
func (j *Job) Lag() (n int64, ok bool) {
	l, isLagger := j.source.(stream.Lagger)
	if !isLagger {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := l.Lag(ctx)
	return n, err == nil
}

// Exhausted reports whether the source said it has nothing more: a bounded
// source (a file) read to its end. A bounded job stopped before that was
// cut short.
func (j *Job) Exhausted() bool { return j.runner.Exhausted() }

// Progress reports how far a bounded source has read and its total, when
// the source knows (a file: bytes).
func (j *Job) Progress() (done, total int64, ok bool) {
	if s, isSizer := j.source.(stream.Sizer); isSizer {
		done, total = s.Progress()
		return done, total, true
	}
	return 0, 0, false
}

func (j *Job) close() {
	for i := len(j.closers) - 1; i >= 0; i-- {
		if err := j.closers[i](); err != nil {
			j.log.Error("close", "err", err)
		}
	}
	j.closers = nil
}

// jobFlow adapts a flow instance to the runtime.
type jobFlow struct {
	fl *flow
}

func (j *jobFlow) Run(ctx context.Context, rows []any) ([]any, []runtime.Rejected, error) {
	j.enter(ctx)
	defer j.leave()
	j.fl.run.CommitBatch(rows)
	return j.result(j.fl.runOnce(ctx))
}

// Flush runs the flow's windows with no new rows (see runtime.Flusher).
func (j *jobFlow) Flush(ctx context.Context, final bool) ([]any, []runtime.Rejected, error) {
	j.enter(ctx)
	defer j.leave()
	return j.result(j.fl.flush(ctx, final))
}

// enter gives the flow the keyed state and the clock of the run ctx is
// for; leave takes them back.
func (j *jobFlow) enter(ctx context.Context) {
	j.fl.state = state.FromContext(ctx)
	c, ok := state.ClockFrom(ctx)
	if !ok {
		c = state.Clock{Watermark: math.MinInt64, Fire: math.MinInt64}
	}
	j.fl.clock = c
}

func (j *jobFlow) leave() { j.fl.state, j.fl.clock = nil, state.Clock{} }

func (j *jobFlow) result(res Result, err error) ([]any, []runtime.Rejected, error) {
	if _, ok := err.(*RejectedError); ok {
		err = nil // the runtime dead-letters them
	}
	var rej []runtime.Rejected
	for _, re := range res.Rejected {
		rej = append(rej, runtime.Rejected{Func: re.Func, Layer: re.Layer, Index: re.Index, Row: re.Row, Err: re.Err})
	}
	return res.Rows, rej, err
}

// StreamDefaults returns st with every field it leaves unset given the
// value a Job uses for it: batch_size (the runtime's; a source type may
// have its own, see driver.Spec.BatchSize), linger, workers, delivery,
// max_in_flight, retry_times, retry_duration, drain_timeout,
// checkpoint_interval, max_consecutive_failures, and idle_timeout when it
// declares time_field.
func StreamDefaults(st config.Stream) config.Stream {
	cfg := runtime.Config{
		BatchSize: st.BatchSize, Linger: st.Linger.Std(), Workers: st.Workers, Delivery: st.Delivery,
		MaxInFlight: st.MaxInFlight, DrainTimeout: st.DrainTimeout.Std(), MaxConsecutiveFailures: st.MaxConsecutiveFailures,
		CheckpointInterval: st.CheckpointInterval.Std(),
	}.WithDefaults()
	st.BatchSize, st.Linger, st.Workers, st.Delivery = cfg.BatchSize, config.Duration(cfg.Linger), cfg.Workers, cfg.Delivery
	st.MaxInFlight, st.DrainTimeout, st.MaxConsecutiveFailures = cfg.MaxInFlight, config.Duration(cfg.DrainTimeout), cfg.MaxConsecutiveFailures
	st.CheckpointInterval = config.Duration(cfg.CheckpointInterval)
	if st.RetryTimes == nil {
		n := DefaultRetryTimes
		st.RetryTimes = &n
	}
	if st.RetryDuration <= 0 {
		st.RetryDuration = int(DefaultRetryDuration / time.Millisecond)
	}
	if st.TimeField != "" && st.IdleTimeout <= 0 {
		st.IdleTimeout = config.Duration(runtime.DefaultIdleTimeout)
	}
	return st
}

// memCheckpoints keeps a one-off run's positions in memory (WithBounds).
type memCheckpoints struct {
	mu  sync.Mutex
	pos map[string]string
}

func (m *memCheckpoints) Position(_ context.Context, stream string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[stream], nil
}

func (m *memCheckpoints) SavePosition(_ context.Context, stream, position string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[stream] = position
	return nil
}
