package filter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/filter"
)

// fakeClock advances only when slept on, and records each sleep.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return ctx.Err()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func trace(name string, log *[]string) filter.Filter {
	return func(ctx context.Context, c *filter.Call, next filter.Handler) error {
		*log = append(*log, name+" before")
		err := next(ctx, c)
		*log = append(*log, name+" after")
		return err
	}
}

// The first filter of a chain is the outermost: it runs first and
// finishes last.
func ExampleChain() {
	var log []string
	h := filter.Chain{trace("first", &log), trace("second", &log)}.Then(func(context.Context, *filter.Call) error {
		log = append(log, "call")
		return nil
	})
	_ = h(context.Background(), &filter.Call{})
	for _, l := range log {
		fmt.Println(l)
	}
	// Output:
	// first before
	// second before
	// call
	// second after
	// first after
}

func spec(name string, params map[string]string, fn *config.Func, clock filter.Clock) filter.Spec {
	return filter.Spec{
		Name: name, Params: params, Kind: filter.FuncCall,
		Flow: config.NewFlow("f"), Func: fn, Env: &filter.Env{Clock: clock},
	}
}

func build(t *testing.T, s filter.Spec) filter.Filter {
	t.Helper()
	f, err := filter.Builtins()[s.Name](s)
	if err != nil {
		t.Fatalf("build %s: %v", s.Name, err)
	}
	return f
}

func TestRetryWaitsCappedExponentialBackoffWithJitter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		fn        *config.Func
		params    map[string]string
		failures  int
		wantCalls int
		wantErr   bool
		base      time.Duration
	}{
		{"from retry_times and retry_duration", config.NewFunc("a", config.Calculate).WithRetry(5, 200), nil, 3, 4, false, 200 * time.Millisecond},
		{"params override", config.NewFunc("a", config.Calculate).WithRetry(5, 200), map[string]string{"times": "1", "duration": "50ms"}, 3, 2, true, 50 * time.Millisecond},
		{"above the cap", config.NewFunc("a", config.Calculate).WithRetry(80, 1000), nil, 100, config.MaxRetryTimes + 1, true, time.Second},
		{"default", config.NewFunc("a", config.Calculate), nil, 100, filter.DefaultRetryTimes + 1, true, filter.DefaultRetryDuration},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			f := build(t, spec("retry", tc.params, tc.fn, clock))
			calls := 0
			var attempts []int
			err := f(context.Background(), &filter.Call{}, func(_ context.Context, c *filter.Call) error {
				calls++
				attempts = append(attempts, c.Attempt)
				if calls <= tc.failures {
					return errors.New("boom")
				}
				return nil
			})
			if (err != nil) != tc.wantErr || calls != tc.wantCalls {
				t.Fatalf("calls %d err %v; want %d calls, error %v", calls, err, tc.wantCalls, tc.wantErr)
			}
			if attempts[len(attempts)-1] != calls {
				t.Errorf("attempts %v: the last should be %d", attempts, calls)
			}
			if len(clock.sleeps) != calls-1 {
				t.Fatalf("%d sleeps for %d calls", len(clock.sleeps), calls)
			}
			for i, d := range clock.sleeps {
				want := min(tc.base<<i, filter.MaxBackoff)
				if d < want/2 || d > want {
					t.Errorf("sleep %d = %v, want within [%v, %v]", i+1, d, want/2, want)
				}
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	f := build(t, spec("retry", map[string]string{"times": "5"}, config.NewFunc("a", config.Calculate), newFakeClock()))
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := f(ctx, &filter.Call{}, func(context.Context, *filter.Call) error {
		calls++
		cancel()
		return errors.New("boom")
	})
	if err == nil || calls != 1 {
		t.Fatalf("calls %d err %v; want one call and its error", calls, err)
	}
}

func TestBreakerOpensAndCloses(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	fn := config.NewFunc("save", config.Save).WithConn("db")
	s := spec("breaker", map[string]string{"failures": "3", "cooldown": "10s"}, fn, clock)
	f := build(t, s)
	// A second use on the same connector shares the breaker.
	s2 := s
	s2.Func = config.NewFunc("load", config.Load).WithConn("db")
	other := build(t, s2)
	b := s.Env.Shared("breaker/conn/db", nil).(*filter.Breaker)

	fail := errors.New("db down")
	calls := 0
	run := func(f filter.Filter, err error) error {
		return f(context.Background(), &filter.Call{}, func(context.Context, *filter.Call) error {
			calls++
			return err
		})
	}
	for range 3 {
		if err := run(f, fail); !errors.Is(err, fail) {
			t.Fatalf("closed breaker: got %v", err)
		}
	}
	if b.State() != filter.BreakerOpen {
		t.Fatalf("after 3 failures: %v, want open", b.State())
	}
	if err := run(f, nil); !errors.Is(err, filter.ErrBreakerOpen) || calls != 3 {
		t.Fatalf("open breaker: err %v after %d calls; want ErrBreakerOpen without a call", err, calls)
	}
	// Breakers are per connector, not per function.
	if err := run(other, nil); !errors.Is(err, filter.ErrBreakerOpen) {
		t.Fatalf("another function on the same connector: %v, want ErrBreakerOpen", err)
	}

	clock.Advance(10 * time.Second)
	if b.State() != filter.BreakerHalfOpen {
		t.Fatalf("after the cooldown: %v, want half-open", b.State())
	}
	if err := run(f, fail); !errors.Is(err, fail) || calls != 4 {
		t.Fatalf("trial call: %v (%d calls)", err, calls)
	}
	if b.State() != filter.BreakerOpen {
		t.Fatalf("failed trial: %v, want open again", b.State())
	}
	clock.Advance(10 * time.Second)
	if err := run(f, nil); err != nil {
		t.Fatalf("successful trial: %v", err)
	}
	if b.State() != filter.BreakerClosed {
		t.Fatalf("after a good trial: %v, want closed", b.State())
	}
	if err := run(f, fail); !errors.Is(err, fail) || b.State() != filter.BreakerClosed {
		t.Fatalf("one failure after closing must not open it: %v %v", err, b.State())
	}
}

func TestTimeoutEndsASlowCall(t *testing.T) {
	t.Parallel()
	f := build(t, spec("timeout", map[string]string{"duration": "20ms"}, config.NewFunc("a", config.Calculate), nil))
	err := f(context.Background(), &filter.Call{Func: "a"}, func(ctx context.Context, _ *filter.Call) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, filter.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if err := f(context.Background(), &filter.Call{}, func(context.Context, *filter.Call) error { return nil }); err != nil {
		t.Fatalf("fast call: %v", err)
	}
}

func TestRateLimitWaitsForRows(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := build(t, spec("ratelimit", map[string]string{"rate": "10"}, config.NewFunc("a", config.Calculate), clock))
	next := func(context.Context, *filter.Call) error { return nil }
	if err := f(context.Background(), &filter.Call{In: 10}, next); err != nil {
		t.Fatal(err)
	}
	if err := f(context.Background(), &filter.Call{In: 25}, next); err != nil {
		t.Fatal(err)
	}
	var total time.Duration
	for _, d := range clock.sleeps {
		total += d
	}
	// 10 rows of burst, then 25 rows at 10/s.
	if total < 2400*time.Millisecond || total > 2600*time.Millisecond {
		t.Fatalf("waited %v in all (%v), want 2.5s", total, clock.sleeps)
	}
}

func TestRecoverTurnsPanicsIntoErrors(t *testing.T) {
	t.Parallel()
	err := filter.Recover(context.Background(), &filter.Call{}, func(context.Context, *filter.Call) error { panic("oops") })
	if !errors.Is(err, filter.ErrPanic) {
		t.Fatalf("got %v", err)
	}
}

func TestBadParamsAreErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		params map[string]string
	}{
		{"timeout", map[string]string{}},
		{"timeout", map[string]string{"duration": "0"}},
		{"ratelimit", map[string]string{"rate": "fast"}},
		{"ratelimit", map[string]string{"rate": "0"}},
		{"ratelimit", map[string]string{"rate": "10", "per": "bytes"}},
		{"ratelimit", map[string]string{"rate": "10", "burst": "0"}},
		{"breaker", map[string]string{"failures": "0"}},
		{"metrics", map[string]string{"verbose": "true"}},
		{"retry", map[string]string{"times": "-1"}},
		{"breaker", map[string]string{"cooldown": "soon"}},
		{"logging", map[string]string{"level": "loud"}},
	} {
		s := spec(tc.name, tc.params, config.NewFunc("a", config.Calculate), nil)
		_, err := filter.Builtins()[tc.name](s)
		var perrs driver.Errors
		if !errors.As(err, &perrs) {
			t.Errorf("%s %v: got %v, want the param's error", tc.name, tc.params, err)
		}
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 40; attempt++ {
		want := min(100*time.Millisecond<<min(attempt-1, 30), filter.MaxBackoff)
		for range 20 {
			d := filter.Backoff(100*time.Millisecond, attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if filter.Backoff(0, 3) != 0 {
		t.Fatal("zero base must not wait")
	}
}

func TestParamsDecodeByTheirSpec(t *testing.T) {
	t.Parallel()
	fn := config.NewFunc("a", config.Calculate).WithRetry(5, 200)
	for _, tc := range []struct {
		name       string
		params     map[string]string
		funcParams map[string]string
		times      int
		base       time.Duration
	}{
		{"the function's retry options", nil, nil, 5, 200 * time.Millisecond},
		{"a Go duration", map[string]string{"duration": "1.5s"}, nil, 5, 1500 * time.Millisecond},
		{"a bare number is milliseconds", map[string]string{"duration": "1500", "times": "2"}, nil, 2, 1500 * time.Millisecond},
		{"zero needs no unit", map[string]string{"duration": "0"}, nil, 5, 0},
		{"the function's retry_<param>", nil, map[string]string{"retry_times": "1", "retry_duration": "40ms"}, 1, 40 * time.Millisecond},
		{"the entry wins over the function's param", map[string]string{"times": "4"}, map[string]string{"retry_times": "1"}, 4, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := spec("retry", tc.params, fn, nil)
			s.FuncParams = tc.funcParams
			times, base, _, err := filter.RetryPolicy(s)
			if err != nil || times != tc.times || base != tc.base {
				t.Fatalf("times %d base %v err %v; want %d, %v", times, base, err, tc.times, tc.base)
			}
		})
	}
}

func TestBareMillisecondsOnlyWhereDocumented(t *testing.T) {
	t.Parallel()
	specs := filter.Specs()
	for name, params := range map[string][]string{"retry": {"duration"}, "timeout": {"duration"}, "breaker": {"cooldown"}} {
		for _, p := range params {
			errs := specs[name].Check(map[string]string{p: "1500"})
			if len(errs) != 1 || !errs[0].Warning || errs[0].Msg != "1500 read as 1500ms; write 1500ms" {
				t.Errorf("%s %s 1500: %v, want one warning", name, p, errs)
			}
		}
	}
	// A fraction was never milliseconds: it needs a unit.
	if errs := specs["timeout"].Check(map[string]string{"duration": "1.5"}); len(errs) != 1 || errs[0].Warning {
		t.Errorf("timeout duration 1.5: %v, want an error", errs)
	}
	f := build(t, spec("timeout", map[string]string{"duration": "30"}, config.NewFunc("a", config.Calculate), nil))
	start := time.Now()
	err := f(context.Background(), &filter.Call{Func: "a"}, func(ctx context.Context, _ *filter.Call) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if took := time.Since(start); !errors.Is(err, filter.ErrTimeout) || took > 20*time.Second {
		t.Fatalf("timeout 30: %v after %v, want ErrTimeout after 30ms", err, took)
	}
	if !strings.Contains(err.Error(), "after 30ms") {
		t.Fatalf("%v: want the deadline read as 30ms", err)
	}
}

func TestUnknownEntryParamsAreErrorsButNotTheFunctionsOwn(t *testing.T) {
	t.Parallel()
	for name, params := range map[string]map[string]string{
		"retry":   {"tims": "3"},
		"breaker": {"failurs": "3"},
		"recover": {"quiet": "true"},
		"logging": {"levl": "info"},
	} {
		s := spec(name, params, config.NewFunc("a", config.Calculate), nil)
		_, err := filter.Builtins()[name](s)
		var perrs driver.Errors
		if !errors.As(err, &perrs) || len(perrs) != 1 || !perrs[0].Unknown {
			t.Errorf("%s %v: got %v, want one unknown param", name, params, err)
		}
	}
	// The function's params that are no filter's (retry_colour, tax_rate)
	// are the function's: a filter does not refuse them.
	s := spec("retry", nil, config.NewFunc("a", config.Calculate), nil)
	s.FuncParams = map[string]string{"retry_colour": "red", "tax_rate": "0.2", "retry_times": "2"}
	if times, _, _, err := filter.RetryPolicy(s); err != nil || times != 2 {
		t.Fatalf("times %d, err %v; want 2 and no error", times, err)
	}
}

// The defaults the specs print (kisflow list, README) are those the
// filters use.
func TestSpecDefaultsAreTheFiltersDefaults(t *testing.T) {
	t.Parallel()
	specs := filter.Specs()
	for name := range filter.Builtins() {
		if specs[name] == nil || specs[name].Type != name {
			t.Errorf("filter %s has no spec of its name", name)
		}
	}
	for _, tc := range []struct{ filter, param, want string }{
		{"breaker", "failures", fmt.Sprint(filter.DefaultBreakerFailures)},
		{"breaker", "cooldown", filter.DefaultBreakerCooldown.String()},
		{"ratelimit", "per", "rows"},
		{"logging", "level", "debug"},
	} {
		p, ok := specs[tc.filter].Param(tc.param)
		if !ok || p.Default != tc.want {
			t.Errorf("%s %s: default %q, want %q", tc.filter, tc.param, p.Default, tc.want)
		}
	}
}
