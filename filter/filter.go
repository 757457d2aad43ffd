// Package filter is the onion chain around every function call and every
// flow run: a Filter wraps a call and decides when, whether and how often to
// call the next one. The first filter of a Chain is the outermost.
//
// Built-in filters: recover, retry, timeout, ratelimit, breaker, logging,
// metrics and tracing (see Builtins). User filters register by name on a
// kisflow.Registry and are listed in YAML, per function under
// `option.filters` and per flow under `filters`.
package filter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/metrics"
)

// Kind tells what a Call wraps.
type Kind uint8

// The kinds of call.
const (
	FuncCall Kind = iota // one function over one layer's rows
	FlowRun              // one run of a flow over a batch
)

func (k Kind) String() string {
	if k == FlowRun {
		return "flow"
	}
	return "function"
}

// Call describes the call a chain wraps. The handler at the centre sets Out;
// filters read the rest. A Call is reused from call to call of one flow
// instance: do not keep it past the return of the filter.
type Call struct {
	Kind   Kind
	Flow   string      // flow_name
	FlowID string      // the flow instance
	Func   string      // fname; "" for a flow run
	Mode   config.Mode // fmode; "" for a flow run
	Conn   string      // the function's connector (option.cname), if any
	In     int         // input rows
	Out    int         // output rows, set by the centre when it returns
	// Attempt counts the calls of the centre for this call, from 1; the
	// retry filter raises it.
	Attempt int
}

// Handler is a call: the function or flow run at the centre, or the rest of
// the chain.
type Handler func(ctx context.Context, c *Call) error

// Filter wraps a call: it runs code before and after next, and decides
// whether and how often next runs.
type Filter func(ctx context.Context, c *Call, next Handler) error

// Chain is a list of filters; the first is the outermost.
type Chain []Filter

// Then returns h wrapped in the chain. An empty chain returns h itself.
func (ch Chain) Then(h Handler) Handler {
	for i := len(ch) - 1; i >= 0; i-- {
		f, next := ch[i], h
		h = func(ctx context.Context, c *Call) error { return f(ctx, c, next) }
	}
	return h
}

// Spec is one use of a filter: its YAML entry and what it wraps. Factories
// build a Filter from it.
type Spec struct {
	// Name is the filter's registered name.
	Name string
	// Params are the entry's params; a function's filters also see the
	// function's merged params under their own names (see Param).
	Params map[string]string
	// Kind is what the filter wraps; Func is nil for a flow's filters.
	Kind Kind
	Flow *config.Flow
	Func *config.Func
	// FuncParams are the function's merged params (nil for a flow).
	FuncParams map[string]string
	// Remote: the function's connector runs it in other processes
	// (driver.Spec.Remote), each call going to one of its providers.
	Remote bool
	// Env is the engine's shared environment.
	Env *Env
}

// Param returns the entry's param key, else the function's param
// "<filter>_<key>" (such as "timeout_duration"), else "".
func (s Spec) Param(key string) string {
	if v, ok := s.Params[key]; ok {
		return v
	}
	return s.FuncParams[s.Name+"_"+key]
}

// Effective returns the params a filter declared by d reads for this use:
// the entry's own, and for each param d declares that the entry lacks, the
// function's "<filter>_<param>" when set. The function's other params are
// left out: they are the function's, not the filter's.
func (s Spec) Effective(d *driver.Spec) map[string]string {
	out := make(map[string]string, len(s.Params))
	for k, v := range s.Params {
		out[k] = v
	}
	for _, p := range d.Params {
		if _, ok := s.Params[p.Name]; ok {
			continue
		}
		if v, ok := s.FuncParams[s.Name+"_"+p.Name]; ok {
			out[p.Name] = v
		}
	}
	return out
}

// Decode fills dst, a pointer to the params struct d was built from, with
// the params of this use (see Effective): unknown params of the entry,
// values that do not parse and missing required params are errors (a
// driver.Errors, after "filter NAME: "). A param that is absent and has no
// default leaves dst's field as it was, so a factory presets defaults known
// only at run time (such as the function's retry_times).
func (s Spec) Decode(d *driver.Spec, dst any) error {
	if err := d.DecodeParams(s.Effective(d), dst); err != nil {
		return fmt.Errorf("filter %s: %w", s.Name, err)
	}
	return nil
}

// Factory builds a filter for one use. A bad spec is an error; a nil Filter
// with a nil error leaves the filter out (a metrics filter without metrics).
type Factory func(Spec) (Filter, error)

// Clock is the time the built-in filters wait on; tests replace it.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the real time.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx is done, whichever is first.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Env is what one engine's filters share: the clock, the logger, the
// metrics, the tracer and state such as circuit breakers per connector.
// It is safe for concurrent use.
type Env struct {
	Clock   Clock
	Logger  *slog.Logger
	Metrics *metrics.Metrics // nil: the metrics filter is left out
	Tracer  trace.Tracer     // nil: the tracing filter is left out
	shared  sync.Map         // key -> value of Shared
	mu      sync.Mutex       // serialises the makers of Shared
}

// Shared returns the value stored under key, making it with mk on first use.
// Filters use it for state that outlives one flow instance, such as one
// breaker per connector or one rate limiter per function.
func (e *Env) Shared(key string, mk func() any) any {
	if v, ok := e.shared.Load(key); ok {
		return v
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.shared.Load(key); ok {
		return v
	}
	v := mk()
	e.shared.Store(key, v)
	return v
}

func (e *Env) clock() Clock {
	if e == nil || e.Clock == nil {
		return SystemClock{}
	}
	return e.Clock
}

func (e *Env) logger() *slog.Logger {
	if e == nil || e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}

type linksKey struct{}

// ContextWithLinks attaches span links that the tracing filter adds to the
// flow-run span started under ctx: the trace contexts of the other messages
// of a batch, whose first message's context is the parent.
func ContextWithLinks(ctx context.Context, links []trace.Link) context.Context {
	return context.WithValue(ctx, linksKey{}, links)
}

func linksFrom(ctx context.Context) []trace.Link {
	l, _ := ctx.Value(linksKey{}).([]trace.Link)
	return l
}
