package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Errors of the built-in filters.
var (
	// ErrPanic wraps a panic the recover filter caught.
	ErrPanic = errors.New("panic")
	// ErrTimeout is returned by the timeout filter when a call outlived its
	// duration; it wraps context.DeadlineExceeded too.
	ErrTimeout = fmt.Errorf("call timed out: %w", context.DeadlineExceeded)
	// ErrBreakerOpen is returned without calling when a circuit breaker is open.
	ErrBreakerOpen = errors.New("circuit breaker open")
)

// Defaults of the built-in filters.
const (
	DefaultRetryTimes      = 3
	DefaultRetryDuration   = 100 * time.Millisecond
	MaxBackoff             = 30 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 30 * time.Second
)

// Builtins returns the factories of the built-in filters by name; Specs
// returns their params. They are:
//
//   - recover: turns a panic inside the chain into an error wrapping ErrPanic.
//   - retry: calls again after a failure, up to `times` (default the
//     function's retry_times, else 3; capped at config.MaxRetryTimes) with
//     capped exponential backoff and jitter from `duration` (default the
//     function's retry_duration in ms, else 100ms). An error marked
//     stream.ErrFatal (a configuration error) is not retried.
//   - timeout: gives each call a deadline of `duration`; a call that
//     returns after it fails with ErrTimeout.
//   - ratelimit: at most `rate` rows per second (`per: calls` counts calls),
//     with bursts of `burst`, shared by every instance of the function.
//   - breaker: one circuit breaker per connector (per function when it has
//     none): `failures` consecutive failures open it, calls then fail with
//     ErrBreakerOpen for `cooldown`, then one trial call closes or reopens it.
//     On a remote step (Spec.Remote), one breaker per provider instead
//     (ProviderBreakers): an open one leaves its provider out, and calls
//     fail with ErrBreakerOpen only when every provider's is open.
//   - logging: logs each call at `level` (default debug) and failures at warn.
//   - metrics: counts calls, rows and errors, times calls (needs Env.Metrics).
//   - tracing: one span per call (needs Env.Tracer).
//
// Durations are Go durations ("250ms"); the durations of retry, timeout
// and breaker also read a bare whole number as milliseconds ("250"), as
// KisFlow configs may, with a lint warning.
func Builtins() map[string]Factory {
	return map[string]Factory{
		"recover":   newRecover,
		"retry":     newRetry,
		"timeout":   newTimeout,
		"ratelimit": newRateLimit,
		"breaker":   newBreaker,
		"logging":   newLogging,
		"metrics":   newMetrics,
		"tracing":   newTracing,
	}
}

// The params of the built-in filters. Durations read a bare number as
// milliseconds (bare:"ms"): the filters documented them so.
type (
	noParams    struct{}
	retryParams struct {
		Times    int           `param:"times" min:"0" doc:"retries after a failed call: default the function's retry_times, else 3; capped at 10"`
		Duration time.Duration `param:"duration" min:"0s" bare:"ms" doc:"the wait before the first retry, doubling per retry up to 30s, with jitter: default the function's retry_duration, else 100ms"`
	}
	timeoutParams struct {
		Duration time.Duration `param:"duration" required:"true" min:"1ms" bare:"ms" example:"2s" doc:"the deadline of each call"`
	}
	rateLimitParams struct {
		Rate  float64 `param:"rate" required:"true" example:"1000" doc:"rows (or calls, with per: calls) per second; above 0"`
		Burst int     `param:"burst" min:"1" doc:"the most taken at once: default the rate (at least 1)"`
		Per   string  `param:"per" default:"rows" enum:"rows|calls" doc:"what rate counts"`
	}
	breakerParams struct {
		Failures int           `param:"failures" default:"5" min:"1" doc:"consecutive failures that open the breaker"`
		Cooldown time.Duration `param:"cooldown" default:"30s" min:"0s" bare:"ms" doc:"how long an open breaker fails calls fast before it lets one trial call through"`
	}
	loggingParams struct {
		Level string `param:"level" default:"debug" enum:"debug|info|warn|error" doc:"the level of the line logged per call (failures log at warn)"`
	}
)

var (
	recoverSpec   = driver.MustSpec[noParams]("recover", "turns a panic inside the chain into an error wrapping filter.ErrPanic")
	retrySpec     = driver.MustSpec[retryParams]("retry", "calls again after a failure, with capped exponential backoff and jitter")
	timeoutSpec   = driver.MustSpec[timeoutParams]("timeout", "gives each call a deadline; a call past it fails with filter.ErrTimeout")
	rateLimitSpec = driver.MustSpec[rateLimitParams]("ratelimit", "waits for tokens: one limiter per function, shared by all its instances")
	breakerSpec   = driver.MustSpec[breakerParams]("breaker", "one circuit breaker per connector (per function without one; per provider on a remote step): fails fast while open")
	loggingSpec   = driver.MustSpec[loggingParams]("logging", "logs each call with rows in and out and its duration; failures at warn")
	metricsSpec   = driver.MustSpec[noParams]("metrics", "counts calls, rows and errors and times calls (left out without metrics)")
	tracingSpec   = driver.MustSpec[noParams]("tracing", "one span per call (left out without a tracer)")
)

// Specs returns the declarations of the built-in filters' params by name:
// lint checks filter entries against them and `kisflow list` prints them.
func Specs() map[string]*driver.Spec {
	return map[string]*driver.Spec{
		"recover": recoverSpec, "retry": retrySpec, "timeout": timeoutSpec, "ratelimit": rateLimitSpec,
		"breaker": breakerSpec, "logging": loggingSpec, "metrics": metricsSpec, "tracing": tracingSpec,
	}
}

func newRecover(s Spec) (Filter, error) {
	if err := s.Decode(recoverSpec, &noParams{}); err != nil {
		return nil, err
	}
	return Recover, nil
}

// Recover turns a panic in the rest of the chain into an error wrapping ErrPanic.
func Recover(ctx context.Context, c *Call, next Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrPanic, r, debug.Stack())
		}
	}()
	return next(ctx, c)
}

// Backoff is the wait before retry number attempt (from 1): base doubling
// per attempt, capped at MaxBackoff, with jitter in [d/2, d).
func Backoff(base time.Duration, attempt int) time.Duration {
	return CappedBackoff(base, attempt, MaxBackoff)
}

// CappedBackoff is Backoff with its own cap.
func CappedBackoff(base time.Duration, attempt int, limit time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

// RetryPolicy returns the retries and base delay the retry filter would use
// for s, and whether a requested count was above the cap.
func RetryPolicy(s Spec) (times int, base time.Duration, capped bool, err error) {
	times, base = DefaultRetryTimes, DefaultRetryDuration
	if s.Func != nil {
		if s.Func.Option.RetryTimes > 0 {
			times = s.Func.Option.RetryTimes
		}
		if s.Func.Option.RetryDuration > 0 {
			base = time.Duration(s.Func.Option.RetryDuration) * time.Millisecond
		}
	}
	p := retryParams{Times: times, Duration: base}
	if err := s.Decode(retrySpec, &p); err != nil {
		return 0, 0, false, err
	}
	if p.Times > config.MaxRetryTimes {
		return config.MaxRetryTimes, p.Duration, true, nil
	}
	return p.Times, p.Duration, false, nil
}

func newRetry(s Spec) (Filter, error) {
	times, base, capped, err := RetryPolicy(s)
	if err != nil {
		return nil, err
	}
	if capped {
		s.Env.logger().Warn("retry times above the cap; capped", "filter", s.Name, "cap", config.MaxRetryTimes)
	}
	clock := s.Env.clock()
	return func(ctx context.Context, c *Call, next Handler) error {
		var err error
		for attempt := 1; ; attempt++ {
			c.Attempt = attempt
			if err = next(ctx, c); err == nil || attempt > times || ctx.Err() != nil || stream.IsFatal(err) {
				return err
			}
			if s.Env != nil && s.Env.Metrics != nil {
				s.Env.Metrics.Retries.WithLabelValues(c.Flow, c.Func).Inc()
			}
			if serr := clock.Sleep(ctx, Backoff(base, attempt)); serr != nil {
				return err
			}
		}
	}, nil
}

func newTimeout(s Spec) (Filter, error) {
	var p timeoutParams
	if err := s.Decode(timeoutSpec, &p); err != nil {
		return nil, err
	}
	d := p.Duration
	return func(ctx context.Context, c *Call, next Handler) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		err := next(ctx, c)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%s %q after %v: %w", c.Kind, c.name(), d, ErrTimeout)
			}
		}
		return err
	}, nil
}

func (c *Call) name() string {
	if c.Kind == FlowRun {
		return c.Flow
	}
	return c.Func
}

func newRateLimit(s Spec) (Filter, error) {
	var p rateLimitParams
	if err := s.Decode(rateLimitSpec, &p); err != nil {
		return nil, err
	}
	if !(p.Rate > 0) || math.IsInf(p.Rate, 0) {
		return nil, fmt.Errorf("filter %s: %w", s.Name, driver.Errors{{Param: "rate", Msg: fmt.Sprintf("%q is not a finite number above 0 (rows per second, such as 1000)", s.Effective(rateLimitSpec)["rate"])}})
	}
	r, perCall := p.Rate, p.Per == "calls"
	burst := p.Burst
	if burst == 0 {
		burst = max(1, int(r))
	}
	key := "ratelimit/" + s.Flow.FlowName
	if s.Func != nil {
		key += "/" + s.Func.FName
	}
	lim := s.Env.Shared(key, func() any { return rate.NewLimiter(rate.Limit(r), burst) }).(*rate.Limiter)
	clock := s.Env.clock()
	return func(ctx context.Context, c *Call, next Handler) error {
		n := c.In
		if perCall {
			n = 1
		}
		for n > 0 {
			k := min(n, burst)
			now := clock.Now()
			res := lim.ReserveN(now, k)
			if err := clock.Sleep(ctx, res.DelayFrom(now)); err != nil {
				res.CancelAt(clock.Now())
				return err
			}
			n -= k
		}
		return next(ctx, c)
	}, nil
}

// BreakerState is the state of a circuit breaker.
type BreakerState int

// The states of a circuit breaker.
const (
	BreakerClosed   BreakerState = iota // calls pass
	BreakerOpen                         // calls fail with ErrBreakerOpen
	BreakerHalfOpen                     // one trial call passes
)

func (s BreakerState) String() string {
	return [...]string{"closed", "open", "half-open"}[s]
}

// Breaker is a circuit breaker: Failures consecutive failures open it; after
// Cooldown one trial call is let through, whose success closes it and whose
// failure opens it again. It is safe for concurrent use.
type Breaker struct {
	Failures int
	Cooldown time.Duration
	Clock    Clock

	mu       sync.Mutex
	state    BreakerState
	fails    int
	openedAt time.Time
	probing  bool
}

// State returns the breaker's state now (an open breaker past its cooldown
// reports half-open).
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && b.Clock.Now().Sub(b.openedAt) >= b.Cooldown {
		return BreakerHalfOpen
	}
	return b.state
}

// Do runs fn unless the breaker is open, and records its outcome. Context
// errors do not count as failures.
func (b *Breaker) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := b.allow(); err != nil {
		return err
	}
	err := fn(ctx)
	b.done(err != nil && ctx.Err() == nil)
	return err
}

func (b *Breaker) allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerOpen:
		if b.Clock.Now().Sub(b.openedAt) < b.Cooldown {
			return ErrBreakerOpen
		}
		b.state, b.probing = BreakerHalfOpen, true
	case BreakerHalfOpen:
		if b.probing {
			return ErrBreakerOpen
		}
		b.probing = true
	}
	return nil
}

func (b *Breaker) done(failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.state == BreakerHalfOpen && failed:
		b.state, b.openedAt, b.probing = BreakerOpen, b.Clock.Now(), false
	case b.state == BreakerHalfOpen:
		b.state, b.fails, b.probing = BreakerClosed, 0, false
	case failed:
		b.fails++
		if b.fails >= b.Failures {
			b.state, b.openedAt = BreakerOpen, b.Clock.Now()
		}
	default:
		b.fails = 0
	}
}

// ProviderBreakers is a Breaker per provider of a remote step (a
// driver.Breakers), each with the same Failures, Cooldown and Clock. It is
// safe for concurrent use.
type ProviderBreakers struct {
	Failures int
	Cooldown time.Duration
	Clock    Clock

	mu sync.Mutex
	m  map[string]*Breaker
}

// Breaker returns the breaker of provider id, made closed on first use.
func (p *ProviderBreakers) Breaker(id string) *Breaker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*Breaker{}
	}
	b := p.m[id]
	if b == nil {
		b = &Breaker{Failures: p.Failures, Cooldown: p.Cooldown, Clock: p.Clock}
		p.m[id] = b
	}
	return b
}

// Open reports whether the breaker of provider id is open (and not yet
// past its cooldown).
func (p *ProviderBreakers) Open(id string) bool { return p.Breaker(id).State() == BreakerOpen }

// Do runs fn through the breaker of provider id (Breaker.Do).
func (p *ProviderBreakers) Do(ctx context.Context, id string, fn func(context.Context) error) error {
	return p.Breaker(id).Do(ctx, fn)
}

func newBreaker(s Spec) (Filter, error) {
	p := breakerParams{Failures: DefaultBreakerFailures, Cooldown: DefaultBreakerCooldown}
	if err := s.Decode(breakerSpec, &p); err != nil {
		return nil, err
	}
	failures, cooldown := p.Failures, p.Cooldown
	if s.Remote && s.Func != nil {
		// A remote step: one breaker per provider, shared by the
		// connector's functions; the connector consults them.
		bs := s.Env.Shared("breaker/providers/"+s.Func.Option.CName, func() any {
			return &ProviderBreakers{Failures: failures, Cooldown: cooldown, Clock: s.Env.clock()}
		}).(*ProviderBreakers)
		return func(ctx context.Context, c *Call, next Handler) error {
			return next(driver.WithBreakers(ctx, bs), c)
		}, nil
	}
	key := "breaker/flow/" + s.Flow.FlowName
	switch {
	case s.Func != nil && s.Func.Option.CName != "":
		key = "breaker/conn/" + s.Func.Option.CName
	case s.Func != nil:
		key = "breaker/func/" + s.Func.FName
	}
	b := s.Env.Shared(key, func() any {
		return &Breaker{Failures: failures, Cooldown: cooldown, Clock: s.Env.clock()}
	}).(*Breaker)
	return func(ctx context.Context, c *Call, next Handler) error {
		return b.Do(ctx, func(ctx context.Context) error { return next(ctx, c) })
	}, nil
}

func newLogging(s Spec) (Filter, error) {
	var p loggingParams
	if err := s.Decode(loggingSpec, &p); err != nil {
		return nil, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(p.Level)); err != nil {
		return nil, fmt.Errorf("filter %s: level %q: %w", s.Name, p.Level, err) // the enum admits slog's words only
	}
	log := s.Env.logger()
	clock := s.Env.clock()
	return func(ctx context.Context, c *Call, next Handler) error {
		start := clock.Now()
		err := next(ctx, c)
		took := clock.Now().Sub(start)
		if err != nil {
			log.WarnContext(ctx, c.Kind.String()+" call failed", "flow", c.Flow, "func", c.Func, "rows_in", c.In, "attempt", c.Attempt, "took", took, "err", err)
			return err
		}
		log.Log(ctx, level, c.Kind.String()+" call", "flow", c.Flow, "func", c.Func, "rows_in", c.In, "rows_out", c.Out, "took", took)
		return nil
	}, nil
}

func newMetrics(s Spec) (Filter, error) {
	if err := s.Decode(metricsSpec, &noParams{}); err != nil {
		return nil, err
	}
	if s.Env == nil || s.Env.Metrics == nil {
		return nil, nil
	}
	m := s.Env.Metrics
	if s.Kind == FlowRun {
		sched := m.FlowSchedules.WithLabelValues(s.Flow.FlowName)
		dur := m.FlowDuration.WithLabelValues(s.Flow.FlowName)
		data := m.FlowData.WithLabelValues(s.Flow.FlowName)
		return func(ctx context.Context, c *Call, next Handler) error {
			start := time.Now()
			sched.Inc()
			data.Add(float64(c.In))
			m.DataTotal.Add(float64(c.In))
			err := next(ctx, c)
			dur.Observe(time.Since(start).Seconds())
			return err
		}, nil
	}
	fn, mode := s.Func.FName, string(s.Func.FMode)
	sched := m.FuncSchedules.WithLabelValues(fn, mode)
	dur := m.FuncDuration.WithLabelValues(fn, mode)
	in := m.FuncRowsIn.WithLabelValues(s.Flow.FlowName, fn)
	out := m.FuncRowsOut.WithLabelValues(s.Flow.FlowName, fn)
	errs := m.FuncErrors.WithLabelValues(s.Flow.FlowName, fn)
	return func(ctx context.Context, c *Call, next Handler) error {
		start := time.Now()
		sched.Inc()
		in.Add(float64(c.In))
		err := next(ctx, c)
		dur.Observe(time.Since(start).Seconds())
		if err != nil {
			errs.Inc()
		} else {
			out.Add(float64(c.Out))
		}
		return err
	}, nil
}

// Span attribute keys of the tracing filter.
const (
	AttrFlow    = attribute.Key("kisflow.flow")
	AttrFlowID  = attribute.Key("kisflow.flow_id")
	AttrFunc    = attribute.Key("kisflow.func")
	AttrMode    = attribute.Key("kisflow.func_mode")
	AttrRowsIn  = attribute.Key("kisflow.rows_in")
	AttrRowsOut = attribute.Key("kisflow.rows_out")
)

func newTracing(s Spec) (Filter, error) {
	if err := s.Decode(tracingSpec, &noParams{}); err != nil {
		return nil, err
	}
	if s.Env == nil || s.Env.Tracer == nil {
		return nil, nil
	}
	tr := s.Env.Tracer
	var name string
	var attrs []attribute.KeyValue
	if s.Kind == FlowRun {
		name = "flow " + s.Flow.FlowName
		attrs = []attribute.KeyValue{AttrFlow.String(s.Flow.FlowName)}
	} else {
		name = "func " + s.Func.FName
		attrs = []attribute.KeyValue{AttrFlow.String(s.Flow.FlowName), AttrFunc.String(s.Func.FName), AttrMode.String(string(s.Func.FMode))}
	}
	return func(ctx context.Context, c *Call, next Handler) error {
		opts := []trace.SpanStartOption{trace.WithAttributes(attrs...),
			trace.WithAttributes(AttrFlowID.String(c.FlowID), AttrRowsIn.Int(c.In))}
		if c.Kind == FlowRun {
			if links := linksFrom(ctx); len(links) > 0 {
				opts = append(opts, trace.WithLinks(links...))
			}
		}
		ctx, span := tr.Start(ctx, name, opts...)
		defer span.End()
		err := next(ctx, c)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			return err
		}
		span.SetAttributes(AttrRowsOut.Int(c.Out))
		return nil
	}, nil
}
