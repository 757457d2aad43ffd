package driver

import "context"

// Invoker is an optional Driver capability of a connector type whose
// functions run in other processes (Spec.Remote): a function naming such a
// connector has no local body, and each of its calls is Invoke. The engine
// commits the returned rows as the function's output, rejects the rows the
// outcome names (they go to the dead-letter path as a local function's
// rejected rows do) and applies the outcome's action.
//
// An error fails the whole call: the runtime retries it, bisects the batch
// and dead-letters as it does a local function's error (stream.Permanent
// and stream.Fatal keep their meaning). An error marked
// stream.ErrUnavailable (no provider to call) is an outage instead: a
// stream waits it out, calling again with backoff, and dead-letters
// nothing for it.
type Invoker interface {
	Invoke(ctx context.Context, call *Invocation) (*Outcome, error)
}

// Invocation is one call of a remote function: a batch of rows.
type Invocation struct {
	Flow   string            // the calling flow's name
	Func   string            // the function's fname
	Mode   string            // its fmode
	Params map[string]string // its params, merged (default_params, then the flow step's)
	Rows   []any             // the batch, as the rows arrived
	// KeyField is the row field the calling stream is keyed by (its
	// stream.key), "" when none: a load balancer that keeps keys on one
	// provider hashes it.
	KeyField string
}

// Outcome is what a remote function produced for one Invocation.
type Outcome struct {
	Rows      []any      // the rows it committed
	RowErrors []RowError // the input rows it could not receive
	// The action it asked for (see kisflow.Actions).
	DataReuse, ForceEntryNext, Abort bool
	JumpFunc                         string
}

// RowError is an input row a remote function could not receive: Index is
// its position in Invocation.Rows.
type RowError struct {
	Index int
	Msg   string
}

// Error returns the row's error message.
func (e RowError) Error() string { return e.Msg }

// Breakers keeps a circuit breaker per provider of a remote step. The
// breaker filter on a function whose connector is remote (Spec.Remote)
// puts one in the context of each call (WithBreakers), so that a provider
// that keeps failing is left out while the others are still called: a
// connector's Invoke finds it with BreakersFrom, leaves out the providers
// whose breaker is Open and runs each call to a provider through Do.
type Breakers interface {
	// Open reports whether the breaker of provider id is open now: a call
	// to it would fail fast.
	Open(id string) bool
	// Do runs fn unless the breaker of provider id is open (then it
	// returns an error without calling fn), and records fn's outcome.
	Do(ctx context.Context, id string, fn func(context.Context) error) error
}

type breakersKey struct{}

// WithBreakers returns ctx carrying b.
func WithBreakers(ctx context.Context, b Breakers) context.Context {
	return context.WithValue(ctx, breakersKey{}, b)
}

// BreakersFrom returns the Breakers ctx carries, or nil.
func BreakersFrom(ctx context.Context) Breakers {
	b, _ := ctx.Value(breakersKey{}).(Breakers)
	return b
}
