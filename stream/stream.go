// Package stream defines what the streaming runtime needs from connectors:
// sources that deliver messages and take acknowledgements, sinks that take
// the rows a flow produced, transactional sinks for exactly-once delivery,
// and checkpoint stores for positions the runtime owns.
//
// Each is an optional capability of a connector's driver, found by type
// assertion: a driver that implements SourceDriver can feed a flow; one that
// implements Sink can receive its output.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"
)

// ErrAlreadyCommitted is returned (wrapped) by TxSink.CommitBatch when some
// of the batch's message IDs were committed meanwhile by another consumer:
// the batch must not be retried as it is, but returned to its source, whose
// redelivery is then filtered by Seen.
var ErrAlreadyCommitted = errors.New("messages already committed")

// Message is one unit a source delivers.
type Message struct {
	// Payload becomes the row handed to the flow: JSON text (string or
	// []byte), a map, or any Go value.
	Payload any
	// Key, when the source knows one, orders rows per key; otherwise the
	// runner reads the flow's key field from the payload.
	Key string
	// Position is where the stream stands after this message, for sources
	// whose position the runtime stores (file offsets). Empty otherwise. A
	// source may set it only on the last message of each Read: the runtime
	// commits the position of the last message that has one. A source that
	// sets it on every message says so with MessagePositions.
	Position string
	// ID identifies the message uniquely within its stream (an entry ID, a
	// stream sequence, topic/partition/offset), for sources whose messages
	// can be redelivered. Exactly-once sinks record the IDs they committed
	// and the runtime skips redelivered ones.
	ID string
	// Partition names the part of the stream the message came from, for
	// sources that split a stream into independently ordered partitions
	// (Kafka: "topic/N"); empty otherwise. Event time is tracked per
	// partition, and keyed state follows partitions between processes.
	Partition string
	// Headers carries metadata such as trace context.
	Headers map[string]string
	// Handle is the source's own reference (a delivery tag, an entry ID).
	Handle any
	// Failed, when a source sets it, sends the message straight to the
	// dead-letter sink with this reason instead of the flow (a broker gave
	// up redelivering it). It is acknowledged like any other.
	Failed error
}

// Source delivers messages. Read is called by one goroutine; Ack may be
// called from another, always in the order messages were read.
type Source interface {
	// Read returns up to max messages, blocking until at least one is
	// available or ctx is done. A bounded source returns io.EOF (possibly
	// with a last set of messages) when it is exhausted.
	Read(ctx context.Context, max int) ([]*Message, error)
	// Ack acknowledges messages whose processing finished: the flow ran and
	// every write succeeded, or the message went to the dead-letter sink.
	Ack(ctx context.Context, msgs []*Message) error
	// Close releases the source; unacknowledged messages are redelivered
	// by sources that can.
	Close(ctx context.Context) error
}

// Nacker is an optional Source capability: messages that could not be
// processed and were not dead-lettered (at shutdown, or at-most-once).
type Nacker interface {
	Nack(ctx context.Context, msgs []*Message, cause error) error
}

// DeadLetterNotifier is an optional Source capability: a source that answers
// a producer per message (an HTTP request) learns which of its messages went
// to the dead-letter sink, and why. The runtime calls DeadLettered once the
// dead letters are written, before it acknowledges the same messages with
// Ack; letters[i] is the record written for msgs[i]. It must not block.
type DeadLetterNotifier interface {
	DeadLettered(ctx context.Context, msgs []*Message, letters []*DeadLetter)
}

// MessagePositions is an optional Source capability: a source that sets
// Position on every message, each naming the place right after that message
// alone (a file's byte offset after its line), so that a position
// identifies its message across restarts. The runtime then gives the dead
// letters of such messages an identity (DeadLetter.LetterID) that holds
// when they are processed again.
type MessagePositions interface {
	PositionsPerMessage() bool
}

// PositionCommitter is an optional Source capability: the runtime tells
// the source each position it has durably committed (saved in the
// checkpoint store, or in an exactly-once sink's transaction), in commit
// order, after the commit. A source that acknowledges positions to its
// server (a replication slot's flush position) does so only then: Ack
// alone may come before the position is saved. It must not block.
type PositionCommitter interface {
	PositionCommitted(ctx context.Context, position string)
}

// Anchorer is an optional Source capability of a source opened without a
// committed position that does not read its stream from the start (a CDC
// source without a snapshot starts at the log's end as it is when it
// first runs). Anchor connects, fixes that start and returns it as a
// position ("" when the source reads from the start: nothing to fix). The
// runtime commits it before the first read, so that a run stopped before
// its first row resumes there, not at the log's end of the next run.
type Anchorer interface {
	Anchor(ctx context.Context) (string, error)
}

// Sizer is an optional Source capability for progress: how far a bounded
// source has read, and its total, in the same unit (bytes for a file).
type Sizer interface {
	Progress() (done, total int64)
}

// SourceOptions is what the runner tells a source it opens.
type SourceOptions struct {
	// Name identifies the stream (the flow name): a consumer group, a
	// durable consumer.
	Name string
	// StateKey is the key under which the runtime stores the stream's
	// position, and an exactly-once sink its commits: the flow name and
	// the source's identity (see kisflow.StateKey). "" means Name. A
	// source that keeps state for its sink (a Kafka transactional session)
	// registers it under this key.
	StateKey string
	// Resume is the last committed position, "" to start from the beginning.
	Resume string
	// Start, when not Committed, is where the source starts instead of
	// Resume (or its own committed position); Stop, when set, bounds the
	// read (see Seeker). Only a Seeker is opened with them.
	Start, Stop Bound
	// Detached asks a source that keeps its own position (a consumer
	// group) neither to read nor to move it: a one-off run (kisflow run
	// --from/--until) that leaves the committed position as it was.
	Detached bool
	// Logger is the runner's logger.
	Logger *slog.Logger
}

// SourceDriver is the connector capability of being read as a stream.
type SourceDriver interface {
	OpenSource(ctx context.Context, opts SourceOptions) (Source, error)
}

// Sink takes the rows a flow produced. Write must be safe for concurrent
// use and must not keep rows after it returns.
type Sink interface {
	Write(ctx context.Context, rows []any) error
}

// TxSink is the capability behind exactly-once delivery: the rows of one or
// more batches and the source position commit in one transaction, so a crash
// at any point neither loses nor duplicates a row.
type TxSink interface {
	// CommitBatch writes rows, records position as stream's position (when
	// not empty) and records the IDs of the messages the batch consumed,
	// atomically.
	CommitBatch(ctx context.Context, stream string, position string, ids []string, rows []any) error
	// Position returns stream's committed position ("" if none).
	Position(ctx context.Context, stream string) (string, error)
	// Seen returns which of ids were recorded by earlier commits of stream:
	// redelivered messages that must not be processed again.
	Seen(ctx context.Context, stream string, ids []string) (map[string]bool, error)
}

// FencedTxSink is an optional TxSink capability, used for streams whose
// position the runtime stores (a file, a generator, an SQL poller): a
// commit fenced on the position its committer last saw committed, so that
// of two processes running one stream from the same position only the
// first commits; the other learns it with a *FenceError.
type FencedTxSink interface {
	TxSink
	// CommitBatchAfter is CommitBatch made only while stream's committed
	// position is still from ("": none). Otherwise it commits nothing of
	// the batch and returns a *FenceError.
	CommitBatchAfter(ctx context.Context, stream, from, position string, ids []string, rows []any) error
}

// FenceError is returned by FencedTxSink.CommitBatchAfter when the
// stream's committed position is not the one expected: another process
// committed the stream. It is fatal (errors.Is(err, ErrFatal) holds).
type FenceError struct {
	Stream   string // the stream's state key
	Found    string // the position found ("": none)
	Expected string // the position the commit expected ("": none)
}

func (e *FenceError) Error() string {
	show := func(p string) string {
		if p == "" {
			return "none"
		}
		return p
	}
	return fmt.Sprintf("another process committed stream %s (position %s, expected %s): two runs on one stream; stop one",
		e.Stream, show(e.Found), show(e.Expected))
}

// Unwrap marks the error fatal: no retry mends a second writer.
func (e *FenceError) Unwrap() error { return ErrFatal }

// SerialCommitter is an optional TxSink capability: a sink whose commit
// covers everything its source read so far (a Kafka transaction commits
// every polled offset), so the runtime keeps one batch in flight.
type SerialCommitter interface {
	CommitsAllRead() bool
}

// Checkpoints stores the positions of streams whose position the runtime
// owns, for at-least-once delivery.
type Checkpoints interface {
	Position(ctx context.Context, stream string) (string, error)
	SavePosition(ctx context.Context, stream string, position string) error
}

// PositionTimer is an optional capability of Checkpoints and TxSink: when
// stream's position was committed (the zero time when unknown or none).
type PositionTimer interface {
	PositionTime(ctx context.Context, stream string) (time.Time, error)
}

// Rekeyer is an optional capability of Checkpoints and TxSink: it moves
// the state (position, consumed message IDs) that an earlier version
// saved under the key from to the key to, once. It moves nothing, and
// reports false, when to already has state or when from has none; stores
// that can tell also refuse when another key of the form from+"@..."
// holds state (from's state may be that one's). Safe for concurrent use:
// of processes racing to move the same key, one moves it.
type Rekeyer interface {
	Rekey(ctx context.Context, from, to string) (bool, error)
}

// Resumable is an optional SourceDriver capability: a source whose
// messages carry positions that the runtime stores and resumes from (a
// file, a generator, an SQL poller). A source without it keeps its own
// position (a broker's consumer group) or has none.
type Resumable interface {
	Resumable() bool
}

// DeadLetter is what the dead-letter sink receives for a message that could
// not be processed after its retries.
//
// LetterID identifies the dead letter: when the failing message is known by
// an ID or a position of its own (see MessagePositions), it is a hash of the
// flow, that ID or position, and the rejected row's place in the message
// ("" for the whole message), so that the same failure of a message
// processed again after a crash has the same LetterID. Otherwise it is
// random. A dead-letter connector keyed on it (an SQL upsert_key, a Redis
// dedup_key, a NATS msg_id) stores each dead letter once.
type DeadLetter struct {
	LetterID string            `json:"letter_id"`
	Flow     string            `json:"flow"`
	Func     string            `json:"func,omitempty"`
	Error    string            `json:"error"`
	Attempts int               `json:"attempts"`
	Payload  any               `json:"payload"`
	Position string            `json:"position,omitempty"`
	ID       string            `json:"id,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
	Time     time.Time         `json:"time"`
}

// ErrPermanent marks a failure that trying again cannot fix: a row that
// cannot be decoded or converted, an expression that fails on it, a row a
// sink rejects by a constraint or a column type. The runtime sends the rows
// behind such a failure to the dead-letter sink at once, without backoff,
// splitting a batch down to the rejected rows. Errors without the mark are
// taken as transient (a lost connection, a timeout) and retried.
var ErrPermanent = errors.New("permanent failure")

// ErrFatal marks an error that ends a job: a configuration error (a missing
// table that may not be created, refused credentials, an unknown stream)
// that no retry can mend. Every other source or sink error is retried with
// capped backoff for as long as it takes.
var ErrFatal = errors.New("fatal error")

// ErrExpected marks the rejection of a row the flow turns away by design,
// not because it is broken: a row a window refuses as late. The row is
// dead-lettered as any rejected row, but it does not count toward
// stream.max_consecutive_failures, so a burst of such rows (a device
// flushing an old buffer) does not stop a job.
var ErrExpected = errors.New("expected rejection")

// ErrUnavailable marks a function's failure that says nothing of its rows:
// the service the step needs is not there now (a remote step with no
// provider to call). The runtime neither retries it by the function's
// policy nor splits the batch nor dead-letters: it waits the outage out,
// running the same batch again with capped backoff and logging the outage
// when it starts, every 30 seconds while it lasts and when it ends.
var ErrUnavailable = errors.New("service unavailable")

// ErrBadPosition marks a position a user gave that the source refuses:
// not of its form, or not one its server can start at (beyond the
// server's head). kisflow positions set refuses it with the usage exit
// code.
var ErrBadPosition = errors.New("bad position")

// BadPosition marks err so that errors.Is(err, ErrBadPosition) holds; its
// text is unchanged. BadPosition(nil) is nil.
func BadPosition(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: ErrBadPosition}
}

type markedError struct {
	err  error
	mark error
}

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return []error{e.err, e.mark} }

// Permanent marks err so that errors.Is(err, ErrPermanent) holds; its text
// is unchanged. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: ErrPermanent}
}

// Fatal marks err so that errors.Is(err, ErrFatal) holds; its text is
// unchanged. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: ErrFatal}
}

// FatalPath returns err, from making a file's folder or creating the file,
// marked Fatal when no wait mends it: no such file or directory (a folder
// under /proc), permission denied, not a directory, a read-only file
// system. A sink or store that cannot be opened there then fails the run,
// as a bad config does, instead of being waited for as an outage. Other
// errors (a full disk) are returned as they are. FatalPath(nil) is nil.
func FatalPath(err error) error {
	for _, e := range []error{syscall.ENOENT, syscall.EACCES, syscall.EPERM, syscall.ENOTDIR, syscall.EROFS} {
		if errors.Is(err, e) {
			return Fatal(err)
		}
	}
	return err
}

// Expected marks err so that errors.Is(err, ErrExpected) holds; its text
// is unchanged. Expected(nil) is nil.
func Expected(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: ErrExpected}
}

// Unavailable marks err so that errors.Is(err, ErrUnavailable) holds; its
// text is unchanged. Unavailable(nil) is nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: ErrUnavailable}
}

// IsUnavailable reports whether err is marked as an outage of a service.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsExpected reports whether err is marked as an expected rejection.
func IsExpected(err error) bool { return errors.Is(err, ErrExpected) }

// IsPermanent reports whether err is marked as permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// IsFatal reports whether err is marked as fatal.
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// StateChange is one change of a job's keyed state, written when the batch
// that made it commits: the entry Field ("" for a value state) of the state
// Name for the stream key Key now holds Value (JSON), or was deleted.
// ExpiresAt is when the entry expires, in Unix milliseconds (0: never).
// Partition is the source partition (Message.Partition) of the messages of
// the stream key Key, when the source has partitions ("" otherwise, or
// when the entry's key is not the stream key of any message of its batch):
// a store keeps it with the entry and gives it back, so that the entry
// follows its partition to the process that owns it (see PartitionOwner).
type StateChange struct {
	Name, Key, Field string
	Value            []byte
	Deleted          bool
	ExpiresAt        int64
	Partition        string
}

// StateLoader is the capability of a state store to give back the keyed
// state committed for stream: fn is called once per live entry (entries
// that expired are skipped). A job loads its state with it when it starts.
type StateLoader interface {
	LoadState(ctx context.Context, stream string, fn func(StateChange) error) error
}

// PartitionStateLoader is an optional StateLoader capability: it gives
// back only the entries of stream whose Partition is one of partitions
// ("" names the entries that have none), so that a process that is
// assigned a partition loads that partition's state and no other. A
// StateLoader without it is read whole and filtered by the runtime.
type PartitionStateLoader interface {
	LoadPartitionState(ctx context.Context, stream string, partitions []string, fn func(StateChange) error) error
}

// PartitionOwner is an optional Source capability of a source whose stream
// is split into partitions that the processes of a group share and move
// between them (a Kafka consumer group). The runtime then keeps in memory
// only the keyed state of the partitions this process owns: it loads a
// partition's state from the store when the partition is assigned and
// drops it when the partition is revoked, so that state follows
// partitions from process to process.
type PartitionOwner interface {
	// OwnPartitions registers h, before the first Read. From then on the
	// source calls h.Assigned with partitions (Message.Partition) before
	// Read returns the first message of them since they were assigned to
	// this process, and h.Revoked with partitions it gave up once every
	// message it read from them was acknowledged or returned (Nack), or
	// when they were lost without that chance.
	OwnPartitions(h PartitionHandler)
}

// PartitionHandler is told which partitions a PartitionOwner source owns.
type PartitionHandler interface {
	// Assigned loads the state of partitions. It returns when it is loaded,
	// or with the error that prevented it (the source then holds the
	// messages of those partitions and calls Assigned again before it
	// returns them). It is called from the goroutine that calls Read.
	Assigned(ctx context.Context, partitions []string) error
	// Revoked drops the state of partitions from memory. It may be
	// called from any goroutine.
	Revoked(partitions []string)
}

// StateSink is an optional TxSink capability: keyed state changes commit in
// the sink's transaction, with the batch's rows, its position and its
// message IDs. Without it, an exactly-once flow cannot keep keyed state.
type StateSink interface {
	StateLoader
	// CommitState is CommitBatch with the batch's state changes.
	CommitState(ctx context.Context, stream string, position string, ids []string, rows []any, state []StateChange) error
	// CommitStateAfter is CommitState fenced on the position from, as
	// FencedTxSink.CommitBatchAfter is.
	CommitStateAfter(ctx context.Context, stream, from, position string, ids []string, rows []any, state []StateChange) error
}

// StateStore is an optional Checkpoints capability: keyed state changes
// are saved with the position in one transaction of the store, for
// at-least-once and at-most-once delivery.
type StateStore interface {
	StateLoader
	// SaveState saves changes and, when position is not empty, stream's
	// position, atomically.
	SaveState(ctx context.Context, stream string, position string, changes []StateChange) error
}
