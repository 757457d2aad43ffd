package stream

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// BoundKind is the kind of a start or stop position (Bound.Kind). The
// words are those of a flow's stream block (stream.start, stream.stop).
type BoundKind string

// The kinds of start and stop positions.
const (
	// Committed (the zero kind) starts at the stream's committed
	// position, or where the source starts a new reader when there is
	// none. As a stop, it means no stop: the stream is unbounded.
	Committed BoundKind = ""
	// Earliest starts at the oldest message the source holds.
	Earliest BoundKind = "earliest"
	// Latest starts after the newest message the source holds.
	Latest BoundKind = "latest"
	// AtStart stops at what the source held when the run began: a
	// bounded read of an unbounded stream.
	AtStart BoundKind = "at_start"
	// AtPosition starts or stops at Bound.Position, in the source's own
	// form (see SeekSupport.Form).
	AtPosition BoundKind = "position"
	// AtTime starts at, or stops before, the first message at or after
	// Bound.Time.
	AtTime BoundKind = "time"
)

// Bound is a start or stop position of a stream (SourceOptions.Start,
// SourceOptions.Stop).
type Bound struct {
	Kind     BoundKind
	Position string    // for AtPosition
	Time     time.Time // for AtTime
}

// IsZero reports the zero bound: committed as a start, none as a stop.
func (b Bound) IsZero() bool { return b.Kind == Committed }

// String names the bound as a flow's stream block writes it.
func (b Bound) String() string {
	switch b.Kind {
	case Committed:
		return "committed"
	case AtPosition:
		return "{position: " + b.Position + "}"
	case AtTime:
		return "{time: " + b.Time.UTC().Format(time.RFC3339Nano) + "}"
	}
	return string(b.Kind)
}

// Seeker is an optional SourceDriver capability: a source that can start
// at another place than its committed position (SourceOptions.Start)
// and end at a stop position (SourceOptions.Stop). Seeks says which kinds
// it can do; lint refuses the others, naming what the source can do. A
// source opened with a Stop returns io.EOF once every partition of it
// reached the stop, so a run ends with exit 0; the messages at or past
// the stop are not returned (nor acknowledged).
type Seeker interface {
	Seeks() SeekSupport
}

// SeekSupport is what a Seeker can do.
type SeekSupport struct {
	// Start and Stop are the kinds of SourceOptions.Start and
	// SourceOptions.Stop the source can do (Committed is implied for
	// Start).
	Start, Stop []BoundKind
	// Form says what a position of the source looks like, for messages
	// (a file: "a byte offset"; Kafka: "PARTITION:OFFSET,...").
	Form string
	// Order, when not nil, reads a position of the source's form into
	// numbers that order it (compared element by element), or says why
	// it is not one: lint then refuses a position of another form, and a
	// stop position at or before the start position (a run that would
	// read nothing). Nil for a source whose positions are not one
	// sequence (Kafka's, per partition).
	Order func(position string) ([]uint64, error)
}

// ComparePositions compares two positions read by SeekSupport.Order:
// -1, 0 or +1.
func ComparePositions(a, b []uint64) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		switch {
		case a[i] < b[i]:
			return -1
		case a[i] > b[i]:
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// CheckBounds reports, for a source that can do start and stop, a
// position not of its form (Order) and a stop that is not after the
// start, where both are positions or both times: such a run reads
// nothing.
func (s SeekSupport) CheckBounds(start, stop Bound) (startErr, stopErr error) {
	var a, b []uint64
	if s.Order != nil && start.Kind == AtPosition {
		if a, startErr = s.Order(start.Position); startErr != nil {
			startErr = fmt.Errorf("bad position %q: %w", start.Position, startErr)
		}
	}
	if s.Order != nil && stop.Kind == AtPosition {
		if b, stopErr = s.Order(stop.Position); stopErr != nil {
			stopErr = fmt.Errorf("bad position %q: %w", stop.Position, stopErr)
		}
	}
	if startErr != nil || stopErr != nil {
		return startErr, stopErr
	}
	switch {
	case a != nil && b != nil && ComparePositions(b, a) <= 0:
		stopErr = fmt.Errorf("stop %s is not after start %s: the run would read nothing", stop, start)
	case start.Kind == AtTime && stop.Kind == AtTime && !stop.Time.After(start.Time):
		stopErr = fmt.Errorf("stop %s is not after start %s: the run would read nothing", stop, start)
	}
	return nil, stopErr
}

// CanStart reports whether the source can start at a bound of kind k.
func (s SeekSupport) CanStart(k BoundKind) bool {
	if k == Committed {
		return true
	}
	for _, x := range s.Start {
		if x == k {
			return true
		}
	}
	return false
}

// CanStop reports whether the source can stop at a bound of kind k.
func (s SeekSupport) CanStop(k BoundKind) bool {
	if k == Committed {
		return true
	}
	for _, x := range s.Stop {
		if x == k {
			return true
		}
	}
	return false
}

// Describe says in words what the source can do, for lint's messages.
func (s SeekSupport) Describe() string {
	words := func(ks []BoundKind) string {
		if len(ks) == 0 {
			return "none"
		}
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = Bound{Kind: k}.String()
			if k == AtPosition {
				out[i] = "{position: P}"
			}
			if k == AtTime {
				out[i] = "{time: T}"
			}
		}
		return strings.Join(out, ", ")
	}
	d := fmt.Sprintf("start: committed, %s; stop: %s", words(s.Start), words(s.Stop))
	if len(s.Start) == 0 {
		d = fmt.Sprintf("start: committed; stop: %s", words(s.Stop))
	}
	if s.Form != "" {
		d += "; a position is " + s.Form
	}
	return d
}

// Positioner is an optional SourceDriver capability for `kisflow
// positions`: it tells where a stream stands in the source (the head,
// and the committed position when the source keeps it itself, such as a
// broker's consumer group) and moves the position the source keeps. A
// source whose position the runtime stores (Resumable) answers Head
// only; its committed position is in the checkpoint store or the
// exactly-once sink.
type Positioner interface {
	// Positions returns the stream's committed position as the source
	// keeps it ("" when the runtime keeps it, or none yet), the source's
	// head (the position after its last message) and the lag between
	// them (-1 when it cannot be told). committed is the position the
	// runtime keeps (Resumable sources), "" otherwise.
	Positions(ctx context.Context, opts SourceOptions, committed string) (Positions, error)
	// SeekPosition returns the position the source stands at for to (a
	// Resumable source returns the position for the runtime to store);
	// a source that keeps its own position (a consumer group) moves it
	// there and returns what it set. It is called only while no run
	// holds the stream.
	SeekPosition(ctx context.Context, opts SourceOptions, to Bound) (string, error)
}

// Positions is where a stream stands in its source.
type Positions struct {
	// Committed is the committed position as the source keeps it ("" for
	// a Resumable source, whose position the runtime keeps, or none).
	Committed string
	// Where names where Committed is kept (a consumer group).
	Where string
	// Head is the position after the source's last message.
	Head string
	// Lag is how many messages (or bytes, for a file) lie between the
	// committed position and the head; -1 when unknown.
	Lag int64
	// Unit is the unit of Lag ("messages", "bytes").
	Unit string
}

// PositionMover is an optional TxSink capability for `kisflow positions
// set`: it moves a stream's committed position in the sink and forgets
// the IDs of the messages the stream consumed (the inbox), in one
// transaction fenced on the position from (as FencedTxSink), so that the
// messages read again from the new position are written again, once
// each. What the sink holds from before stays, unless truncate is set:
// then the sink's own rows are deleted in the same transaction (a sink
// that cannot says so with an error, committing nothing). A to of ""
// leaves the position as it is (the source keeps it: a consumer group).
type PositionMover interface {
	MovePosition(ctx context.Context, stream, from, to string, truncate bool) error
}
