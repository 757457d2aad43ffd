package filter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
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
	for name, params := range map[string]map[string]string{
		"timeout":   {},
		"ratelimit": {"rate": "fast"},
		"retry":     {"times": "-1"},
		"breaker":   {"cooldown": "soon"},
		"logging":   {"level": "loud"},
	} {
		s := spec(name, params, config.NewFunc("a", config.Calculate), nil)
		if _, err := filter.Builtins()[name](s); err == nil {
			t.Errorf("%s %v: no error", name, params)
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
