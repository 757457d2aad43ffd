package kisflow

import (
	"context"
	"fmt"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Driver is the implementation behind a connector: the client of one
// external system (see package driver, which a connector author imports).
type Driver = driver.Driver

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

// ConnInit runs once after a connector's driver started (KisFlow's CaaSInit).
type ConnInit func(ctx context.Context, c *Connector) error

// Connector is a started, named link to an external system, shared by the
// flows that use it. Its cache and metadata are safe for concurrent use.
type Connector struct {
	store
	cfg    *config.Conn
	driver Driver
	funcs  map[string]ConnFunc
}

// Name is the connector's cname.
func (c *Connector) Name() string { return c.cfg.CName }

// Type is the connector's type.
func (c *Connector) Type() string { return c.cfg.Type }

// Config is the connector's configuration. Do not modify it.
func (c *Connector) Config() *config.Conn { return c.cfg }

// Driver is the started client; type-assert it to the driver's own type.
// It is nil for a connector whose type this binary has no driver for.
func (c *Connector) Driver() Driver {
	if _, ok := c.driver.(label); ok {
		return nil
	}
	return c.driver
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
	if caller, ok := c.driver.(Caller); ok {
		return caller.Call(ctx, c, f, args)
	}
	if sink, ok := c.driver.(stream.Sink); ok {
		if fn.Mode() != config.Save {
			return nil, fmt.Errorf("connector %q (type %s): function %q has fmode %s; this type serves Save functions only", c.Name(), c.Type(), fn.Name(), fn.Mode())
		}
		rows, isRows := args.([]any)
		if !isRows {
			rows = []any{args}
		}
		return nil, sink.Write(ctx, rows)
	}
	if _, ok := c.driver.(label); ok {
		return nil, fmt.Errorf("connector %q: no callback for function %q (register one with Registry.RegisterConnFunc), and this binary has no driver for type %q", c.Name(), fn.Name(), c.Type())
	}
	return nil, fmt.Errorf("connector %q: no callback for function %q (register one with Registry.RegisterConnFunc)", c.Name(), fn.Name())
}
