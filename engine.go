package kisflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/engine"
)

// Option configures an Engine.
type Option func(*Engine)

// WithLogger sets the engine's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithCodec sets the codec that decodes JSON and map rows (default GoJSON).
func WithCodec(c Codec) Option { return func(e *Engine) { e.codec = c } }

// WithMaxJumps bounds the JumpFunc actions of one run (default 1000).
func WithMaxJumps(n int) Option { return func(e *Engine) { e.maxJumps = n } }

// Engine runs the flows of a configuration with the functions and drivers of
// a registry. It starts each connector once, on the first flow that needs it,
// and closes them all in Close. It is safe for concurrent use.
type Engine struct {
	reg      *Registry
	set      *config.Set
	log      *slog.Logger
	codec    Codec
	maxJumps int

	mu       sync.Mutex
	compiled map[string]*compiled
	conns    map[string]*connSlot
	started  []*Connector // in start order
	closed   bool
	seq      atomic.Uint64
}

type connSlot struct {
	mu   sync.Mutex
	conn *Connector // nil until started
}

// compiled is a flow's shape shared by all its instances.
type compiled struct {
	cfg      *config.Flow
	plan     *engine.Plan
	handlers []Handler
	funcs    []*config.Func
	params   []map[string]string
	conns    []*Connector
}

// NewEngine checks set against reg and returns an engine. It fails when the
// configuration has errors (a *config.Error), when an enabled flow names a
// function reg has no body for, or when a connector used by an enabled flow
// has a type reg has no driver for. Connectors are not started yet.
func NewEngine(reg *Registry, set *config.Set, opts ...Option) (*Engine, error) {
	if reg == nil {
		return nil, errors.New("new engine: nil registry")
	}
	if set == nil {
		set = config.NewSet()
	}
	e := &Engine{
		reg: reg, set: set, codec: GoJSON{},
		compiled: map[string]*compiled{}, conns: map[string]*connSlot{},
	}
	for _, o := range opts {
		o(e)
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	var errs []config.Problem
	for _, p := range set.Check(config.WithConnTypes(reg.DriverTypes()...)) {
		if p.Severity == config.SevError {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return nil, &config.Error{Problems: errs}
	}
	var missing []error
	for _, name := range set.FlowNames() {
		fl := set.Flows[name]
		if !fl.Enabled() {
			continue
		}
		for _, st := range fl.Flows {
			if fc := set.Funcs[st.FName]; fc != nil && fc.ConfigOnly() {
				continue
			}
			if _, ok := reg.handler(st.FName); !ok {
				missing = append(missing, fmt.Errorf("flow %q: function %q: %w (call Registry.Register)", name, st.FName, ErrUnknownFunction))
			}
		}
	}
	if len(missing) > 0 {
		return nil, errors.Join(missing...)
	}
	return e, nil
}

// Config returns the engine's configuration. Do not modify it.
func (e *Engine) Config() *config.Set { return e.set }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.log }

// Flow returns a new instance of the named flow, starting the connectors
// its functions use if they are not started yet.
func (e *Engine) Flow(ctx context.Context, name string) (Flow, error) {
	c, err := e.compile(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.instance(c), nil
}

func (e *Engine) compile(ctx context.Context, name string) (*compiled, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if c := e.compiled[name]; c != nil {
		e.mu.Unlock()
		return c, nil
	}
	e.mu.Unlock()

	cfg := e.set.Flows[name]
	if cfg == nil {
		return nil, fmt.Errorf("flow %q: %w", name, ErrUnknownFlow)
	}
	if !cfg.Enabled() {
		return nil, fmt.Errorf("flow %q: %w (status: 0)", name, ErrFlowDisabled)
	}
	c := &compiled{cfg: cfg}
	names := make([]string, len(cfg.Flows))
	for i, st := range cfg.Flows {
		fc := e.set.Funcs[st.FName]
		if fc == nil {
			return nil, fmt.Errorf("flow %q: step %d: no config for function %q", name, i+1, st.FName)
		}
		h, ok := e.reg.handler(st.FName)
		if !ok && fc.ConfigOnly() {
			eh, err := newExprHandler(fc)
			if err != nil {
				return nil, fmt.Errorf("flow %q: %w", name, err)
			}
			h, ok = eh, true
		}
		if !ok {
			return nil, fmt.Errorf("flow %q: function %q: %w", name, st.FName, ErrUnknownFunction)
		}
		var conn *Connector
		if fc.Option.CName != "" {
			var err error
			if conn, err = e.Connector(ctx, fc.Option.CName); err != nil {
				return nil, fmt.Errorf("flow %q: function %q: %w", name, st.FName, err)
			}
		}
		names[i] = st.FName
		c.handlers = append(c.handlers, h)
		c.funcs = append(c.funcs, fc)
		c.params = append(c.params, config.MergedParams(fc, st))
		c.conns = append(c.conns, conn)
	}
	c.plan = engine.NewPlan(names, e.maxJumps)

	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.compiled[name]; old != nil {
		return old, nil
	}
	e.compiled[name] = c
	return c, nil
}

// instance makes a new flow instance of c with fresh buffers and stores.
func (e *Engine) instance(c *compiled) *flow {
	id := c.cfg.FlowName + "-" + strconv.FormatUint(e.seq.Add(1), 10)
	fl := &flow{eng: e, c: c, cfg: c.cfg, id: id, codec: e.codec,
		log: e.log.With("flow", c.cfg.FlowName, "flow_id", id)}
	steps := make([]engine.Step, len(c.handlers))
	fl.funcs = make([]*Function, len(c.handlers))
	for i, h := range c.handlers {
		fl.funcs[i] = &Function{cfg: c.funcs[i], index: i, params: c.params[i], conn: c.conns[i]}
		steps[i] = step{b: h.bind(fl, i)}
	}
	fl.run = engine.NewRun(c.plan, steps)
	return fl
}

// Connector returns the started connector cname, starting it on first use:
// the driver is built from its config and started, then the ConnInit
// callbacks run. A failed start is returned and tried again on the next call.
func (e *Engine) Connector(ctx context.Context, cname string) (*Connector, error) {
	cfg := e.set.Conns[cname]
	if cfg == nil {
		return nil, fmt.Errorf("unknown connector %q", cname)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	slot := e.conns[cname]
	if slot == nil {
		slot = &connSlot{}
		e.conns[cname] = slot
	}
	e.mu.Unlock()

	// The slot's lock serialises the start of this one connector.
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.conn != nil {
		return slot.conn, nil
	}
	cfg, err := cfg.Expanded()
	if err != nil {
		return nil, err
	}
	factory, ok := e.reg.driver(cfg.Type)
	if !ok {
		return nil, fmt.Errorf("connector %q: no driver for type %q (known: %v)", cname, cfg.Type, e.reg.DriverTypes())
	}
	drv, err := callFactory(factory, cfg)
	if err != nil {
		return nil, fmt.Errorf("connector %q (type %s): %w", cname, cfg.Type, err)
	}
	if err := guard(func() error { return drv.Start(ctx) }); err != nil {
		return nil, fmt.Errorf("connector %q (type %s) failed to start: %w", cname, cfg.Type, err)
	}
	funcs, inits := e.reg.connCallbacks(cname)
	conn := &Connector{cfg: cfg, driver: drv, funcs: funcs}
	for _, init := range inits {
		if err := guard(func() error { return init(ctx, conn) }); err != nil {
			_ = guard(func() error { return drv.Close(ctx) }) // the init error is the one to report
			return nil, fmt.Errorf("connector %q: init callback: %w", cname, err)
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = guard(func() error { return drv.Close(ctx) })
		return nil, ErrClosed
	}
	e.started = append(e.started, conn)
	e.mu.Unlock()
	slot.conn = conn
	e.log.InfoContext(ctx, "connector started", "connector", cname, "type", cfg.Type)
	return conn, nil
}

// Close closes every started connector once, in reverse start order, and
// returns their errors joined. Flows of a closed engine must not run.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.started = nil
	e.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		if err := guard(func() error { return c.driver.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("close connector %q: %w", c.Name(), err))
		}
	}
	return errors.Join(errs...)
}

func callFactory(f DriverFactory, cfg *config.Conn) (d Driver, err error) {
	err = guard(func() error {
		d, err = f(cfg)
		return err
	})
	if err == nil && d == nil {
		err = errors.New("driver factory returned nil")
	}
	return d, err
}

// guard runs user code, turning a panic into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r}
		}
	}()
	return fn()
}
