package kisflow

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Driver is the implementation behind a connector: the client of one
// external system (see package driver, which a connector author imports).
type Driver = driver.Driver

// Checker is an optional Driver capability for `kisflow dry-run`: called
// after Start, Check verifies that what the connector will use exists or
// can be created (a table, a stream, a topic, a queue, a file, a listen
// address), for the uses the configuration makes of it, without reading,
// acknowledging or writing any message. Its error says what is missing in
// the user's words. A driver without it is checked by Start alone.
type Checker interface {
	Check(ctx context.Context, use config.ConnUse) error
}

// FuncChecker is an optional Driver capability for `kisflow dry-run`, of
// a connector through which functions run in other processes (the remote
// type): called after Check, CheckFuncs verifies that each function of
// fnames (those the enabled flows' steps call through it) can be called
// now, and that the processes answer, without running any function. Its
// error names what is missing.
type FuncChecker interface {
	CheckFuncs(ctx context.Context, fnames []string) error
}

// DriverFactory builds the driver of a connector from its config. It must not
// connect yet; Start does. A bad config is an error.
type DriverFactory = driver.Factory

// Caller is an optional Driver capability: a default for Connector.Call when
// no ConnFunc is registered for the connector and function.
type Caller interface {
	Call(ctx context.Context, c *Connector, f Flow, args any) (any, error)
}

// ConnFunc is a custom Save or Load callback of a connector for one function
// (KisFlow's CaaS): Connector.Call runs it for the function that calls.
type ConnFunc func(ctx context.Context, c *Connector, fn *Function, f Flow, args any) (any, error)

// ConnInit runs once per engine, when the first flow using the connector is
// built (KisFlow's CaaSInit, which ran per flow instance): after its driver
// started, or, for a connector that starts lazily (see Connector), before;
// asking it for its client then starts it.
type ConnInit func(ctx context.Context, c *Connector) error

// Connector is a named link to an external system, shared by the flows
// that use it. Its cache and metadata are safe for concurrent use.
//
// A connector that only functions use (no stream names it as a source,
// sink or dead letter, and no YAML-only Load or Save function reads or
// writes through it) starts lazily, as in KisFlow, where a connector's
// type is a label until a CaaS function uses it: its driver is built and
// started when something first needs its client (Client, Driver, or a Call
// with no registered callback). A bad param or a refused connection is
// then that call's error.
type Connector struct {
	store
	cfg   *config.Conn
	funcs map[string]ConnFunc

	mu     sync.Mutex
	driver Driver                                        // nil until started
	start  func(ctx context.Context, c *Connector) error // builds and starts the driver, sets driver
	log    *slog.Logger

	// failedAt is when Driver last failed to start the driver; Driver
	// does not try again for retryAfter.
	failedAt   time.Time
	retryAfter time.Duration
}

// driverRetryAfter is how long Driver returns nil at once after a failed
// start, before it tries again: a function calling it for each row of a
// batch while the server is down does not wait a dial timeout each time.
const driverRetryAfter = time.Second

// Name is the connector's cname.
func (c *Connector) Name() string { return c.cfg.CName }

// Type is the connector's type.
func (c *Connector) Type() string { return c.cfg.Type }

// Config is the connector's configuration. Do not modify it.
func (c *Connector) Config() *config.Conn { return c.cfg }

// Client returns the started driver, starting it first if nothing needed it
// yet (a connector used only by functions starts lazily). Its error is the
// start's: a bad param (named) or a refused connection; a later call tries
// again. It returns nil and no error for a connector whose type this
// binary has no driver for (a label).
func (c *Connector) Client(ctx context.Context) (Driver, error) {
	d, err := c.started(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := d.(label); ok {
		return nil, nil
	}
	return d, nil
}

// Driver is the started client; type-assert it to the driver's own type.
// It is nil for a connector whose type this binary has no driver for. For
// a connector used only by functions, the first call starts the driver;
// when that start fails it logs the error and returns nil (Client returns
// the error), and the calls of the next second return nil at once, without
// trying again (Client always tries).
func (c *Connector) Driver() Driver {
	c.mu.Lock()
	wait := c.driver == nil && !c.failedAt.IsZero() && time.Since(c.failedAt) < c.retryAfter
	c.mu.Unlock()
	if wait {
		return nil
	}
	d, err := c.Client(context.Background())
	if err != nil {
		c.mu.Lock()
		c.failedAt = time.Now()
		c.mu.Unlock()
		c.log.Error("connector failed to start; Driver returns nil without trying again for "+c.retryAfter.String(), "connector", c.Name(), "err", err)
		return nil
	}
	return d
}

// started returns the driver, starting it on first need.
func (c *Connector) started(ctx context.Context) (Driver, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.driver == nil {
		if err := c.start(ctx, c); err != nil {
			return nil, err
		}
	}
	return c.driver, nil
}

// Call runs the connector callback registered for the running function of f
// (Registry.RegisterConnFunc); else the driver's Caller capability; else,
// for a Save function of a driver that is a stream.Sink, it writes args (a
// row, or a []any of rows) through the sink.
func (c *Connector) Call(ctx context.Context, f Flow, args any) (any, error) {
	fn := f.Function()
	if fn == nil {
		return nil, fmt.Errorf("connector %q: Call outside a running function", c.Name())
	}
	if cf := c.funcs[fn.Name()]; cf != nil {
		return cf(ctx, c, fn, f, args)
	}
	drv, err := c.started(ctx)
	if err != nil {
		return nil, err
	}
	if caller, ok := drv.(Caller); ok {
		return caller.Call(ctx, c, f, args)
	}
	if sink, ok := drv.(stream.Sink); ok {
		if fn.Mode() != config.Save {
			return nil, fmt.Errorf("connector %q (type %s): function %q has fmode %s; this type serves Save functions only", c.Name(), c.Type(), fn.Name(), fn.Mode())
		}
		rows, isRows := args.([]any)
		if !isRows {
			rows = []any{args}
		}
		return nil, sink.Write(ctx, rows)
	}
	if _, ok := drv.(label); ok {
		return nil, fmt.Errorf("connector %q: no callback for function %q (register one with Registry.RegisterConnFunc), and this binary has no driver for type %q", c.Name(), fn.Name(), c.Type())
	}
	return nil, fmt.Errorf("connector %q: no callback for function %q (register one with Registry.RegisterConnFunc)", c.Name(), fn.Name())
}
