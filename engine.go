package kisflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/internal/engine"
	"github.com/kisflow-go/kisflow/metrics"
	"github.com/kisflow-go/kisflow/plugin"
)

// TracerName is the instrumentation name of the engine's spans.
const TracerName = "github.com/kisflow-go/kisflow"

// Option configures an Engine.
type Option func(*Engine)

// WithLogger sets the engine's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithCodec sets the codec that decodes JSON and map rows (default GoJSON).
func WithCodec(c Codec) Option { return func(e *Engine) { e.codec = c } }

// WithMaxJumps bounds the JumpFunc actions of one run (default 1000).
func WithMaxJumps(n int) Option { return func(e *Engine) { e.maxJumps = n } }

// WithClock sets the clock the built-in filters wait on (tests pass a fake).
func WithClock(c filter.Clock) Option { return func(e *Engine) { e.clock = c } }

// WithTracerProvider sends the engine's spans to tp. Without it the
// tracing plugin's provider is used, and without that no spans are made.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(e *Engine) { e.tp = tp } }

// WithFilters replaces the filters the engine puts around every function
// call and flow run, outside those listed in YAML (default: recover,
// tracing, metrics).
func WithFilters(names ...string) Option {
	return func(e *Engine) { e.defaults = names }
}

// DefaultFilters are the filters around every function call and flow run,
// outside those listed in YAML. tracing and metrics leave themselves out
// when the engine has no tracer or metrics.
var DefaultFilters = []string{"recover", "tracing", "metrics"}

// ConnectorOverride builds the driver of connector cname in place of the
// one its type's factory would build (see WithConnectorOverride). cfg is
// the connector's configuration with its variables expanded; factory is
// the registry's factory for its type, nil when the binary has none.
type ConnectorOverride func(cname string, cfg *config.Conn, factory DriverFactory) (Driver, error)

// WithConnectorOverride makes the engine build every connector it starts
// through fn instead of the registry's factory: `kisflow test` replaces
// each connector of a flow by an in-memory double this way, so that a test
// touches no service. Lint still checks the configuration against the
// registry's drivers.
func WithConnectorOverride(fn ConnectorOverride) Option { return func(e *Engine) { e.override = fn } }

// Engine runs the flows of a configuration with the functions and drivers of
// a registry. It starts each connector once, on the first flow that needs it,
// and closes them all in Close. It is safe for concurrent use.
type Engine struct {
	reg      *Registry
	set      *config.Set
	log      *slog.Logger
	red      *config.Redactor // the secrets of set, kept out of logs and errors
	codec    Codec
	maxJumps int
	clock    filter.Clock
	// driverRetry replaces driverRetryAfter when set (tests).
	driverRetry time.Duration
	tp          trace.TracerProvider
	defaults    []string
	override    ConnectorOverride

	metrics *metrics.Metrics
	health  *plugin.Health
	states  *plugin.States
	console *plugin.Console
	plugins *plugin.Set
	env     *filter.Env

	startMu sync.Mutex
	started bool // plugins started

	mu       sync.Mutex
	compiled map[string]*compiled
	conns    map[string]*connSlot
	conns1st []*Connector // started connectors, in start order
	closed   bool
	seq      atomic.Uint64

	// strictConns are the connectors started when a flow using them is
	// built: stream sources, sinks and dead letters, and the connectors of
	// YAML-only Load and Save functions. The others start lazily.
	strictConns map[string]bool
	invokers    sync.Map // Invoke's one-step flows: key -> *invokePool
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
	chains   []filter.Chain // per function
	chain    filter.Chain   // around each run
	onTimer  []TimerFunc    // per function: the callback of its timers

	retryRuns bool // the flow lists filters, which may run it again

	// must are the fields of the first function's source.must, as paths
	// (mustNames as written): source rows lacking one are rejected before
	// that function.
	must      [][]string
	mustNames []string
}

// chain builds the engine's default filters and then refs, for a flow run
// (fn nil) or a function call.
func (e *Engine) chain(refs []config.FilterRef, fl *config.Flow, fn *config.Func, params map[string]string) (filter.Chain, error) {
	all := make([]config.FilterRef, 0, len(e.defaults)+len(refs))
	for _, d := range e.defaults {
		all = append(all, config.FilterRef{Name: d})
	}
	all = append(all, refs...)
	remote := fn != nil && e.remoteConn(fn.Option.CName)
	var ch filter.Chain
	for _, ref := range all {
		f, err := e.reg.buildFilter(ref, fl, fn, params, remote, e.env)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", ref.Name, err)
		}
		if f != nil {
			ch = append(ch, f)
		}
	}
	return ch, nil
}

// NewEngine checks set against reg and returns an engine. It fails when the
// configuration has errors (a *config.Error). As in KisFlow, a function
// without a body fails only when a flow naming it is built (Engine.Flow,
// Engine.Job), and a connector type without a driver is a label for its
// callbacks. Connectors are not started yet.
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
	e.red = set.Redactor()
	e.log = slog.New(e.red.Handler(e.log.Handler()))
	if e.defaults == nil {
		e.defaults = DefaultFilters
	}
	var errs []config.Problem
	for _, p := range set.Check(reg.lintOptions()...) {
		if p.Severity == config.SevError {
			errs = append(errs, p)
		}
	}
	// Building the plugins checks their configs; they are built once, here.
	ps, err := plugin.Build(globalWithImplicit(set.Global), reg.pluginSpecs())
	var perr *config.Error
	switch {
	case errors.As(err, &perr):
		errs = append(errs, perr.Problems...)
	case err != nil:
		return nil, err
	}
	if len(errs) > 0 {
		for i := range errs {
			errs[i].Msg = e.red.Redact(errs[i].Msg)
		}
		return nil, &config.Error{Problems: errs}
	}
	e.plugins = ps
	e.strictConns = reg.strictConns(set)
	e.metrics = metrics.New()
	e.health = &plugin.Health{}
	e.states = &plugin.States{}
	e.console = &plugin.Console{}
	e.env = &filter.Env{Clock: e.clock, Logger: e.log, Metrics: e.metrics}
	if e.tp != nil {
		e.env.Tracer = e.tp.Tracer(TracerName)
	}
	return e, nil
}

// Start starts the plugins of the global config in dependency order. Flow
// and Job call it; call it first to fail early, or before serving the
// metrics. A logger or tracer provider from a plugin becomes the engine's
// (a tracer provider given by WithTracerProvider is kept). Calls after the
// first success do nothing; after a failure Start tries again.
func (e *Engine) Start(ctx context.Context) error {
	e.startMu.Lock()
	defer e.startMu.Unlock()
	if e.started {
		return nil
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return ErrClosed
	}
	err := e.plugins.Start(ctx, host{e}, func(r config.PluginRef, p plugin.Plugin) {
		if lp, ok := p.(plugin.LoggerProvider); ok && lp.Logger() != nil {
			e.log = slog.New(e.red.Handler(lp.Logger().Handler()))
			e.env.Logger = e.log
		}
		if tp, ok := p.(plugin.TracerProvider); ok && e.tp == nil && tp.TracerProvider() != nil {
			e.tp = tp.TracerProvider()
			e.env.Tracer = e.tp.Tracer(TracerName)
		}
		e.log.Info("plugin started", "plugin", r.String())
	})
	if err != nil {
		return e.red.Error(err)
	}
	e.started = true
	return nil
}

// Metrics returns the engine's Prometheus collectors and their registry.
func (e *Engine) Metrics() *metrics.Metrics { return e.metrics }

// Health returns the engine's readiness checks (served on /readyz).
func (e *Engine) Health() *plugin.Health { return e.health }

// States returns the keyed state views of the engine's running jobs
// (served on /state/{flow}/{key}).
func (e *Engine) States() *plugin.States { return e.states }

// Console returns the operator's console slot of the admin server: kisflow
// run sets its API and inspector there.
func (e *Engine) Console() *plugin.Console { return e.console }

// Plugin returns a plugin of the global config, started or not.
func (e *Engine) Plugin(typ, name string) (plugin.Plugin, bool) { return e.plugins.Lookup(typ, name) }

// PluginUser is a driver that uses plugins, such as a shared client: the
// engine calls UsePlugins with the started plugins before the driver's Start.
type PluginUser interface {
	UsePlugins(lookup func(typ, name string) (plugin.Plugin, bool)) error
}

// host is what plugins see of the engine.
type host struct{ e *Engine }

func (h host) Logger() *slog.Logger                          { return h.e.log }
func (h host) Metrics() *metrics.Metrics                     { return h.e.metrics }
func (h host) Health() *plugin.Health                        { return h.e.health }
func (h host) States() *plugin.States                        { return h.e.states }
func (h host) Console() *plugin.Console                      { return h.e.console }
func (h host) Plugin(typ, name string) (plugin.Plugin, bool) { return h.e.plugins.Lookup(typ, name) }

// Config returns the engine's configuration. Do not modify it.
func (e *Engine) Config() *config.Set { return e.set }

// Logger returns the engine's logger.
func (e *Engine) Logger() *slog.Logger { return e.log }

// Flow returns a new instance of the named flow, starting the connectors
// its functions use if they are not started yet.
func (e *Engine) Flow(ctx context.Context, name string) (Flow, error) {
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
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
	return e.compileFlow(ctx, name, cfg)
}

// compileFlow compiles cfg and keeps it under name.
func (e *Engine) compileFlow(ctx context.Context, name string, cfg *config.Flow) (*compiled, error) {
	c := &compiled{cfg: cfg}
	flowChain, err := e.chain(cfg.Filters, cfg, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("flow %q: %w", cfg.FlowName, err)
	}
	c.chain = flowChain
	c.retryRuns = len(cfg.Filters) > 0
	names := make([]string, len(cfg.Flows))
	for i, st := range cfg.Flows {
		fc := e.set.Funcs[st.FName]
		if fc == nil {
			return nil, fmt.Errorf("flow %q: step %d: no config for function %q", cfg.FlowName, i+1, st.FName)
		}
		h, ok := e.reg.handler(st.FName)
		params := config.MergedParams(fc, st)
		// A function with no Go body gets its YAML one: a filter or calc
		// now, a Load or Save through its connector once that started.
		viaConn := !fc.ConfigOnly() && (fc.FMode == config.Load || fc.FMode == config.Save || e.remoteConn(fc.Option.CName))
		if !ok && !viaConn {
			if h, err = yamlBody(fc, params, nil, nil); err != nil {
				return nil, fmt.Errorf("flow %q: %w%s", cfg.FlowName, err, e.registeredLike(st.FName))
			}
			ok = true
		}
		if !ok && viaConn {
			// Before its connector starts: a misspelt Go registration
			// must not make the function a YAML Save that writes.
			if err := e.reg.misnamedBody(e.set, fc, params); err != nil {
				return nil, fmt.Errorf("flow %q: %w", name, err)
			}
		}
		var conn *Connector
		if fc.Option.CName != "" {
			// A connector only functions with a Go body use starts when
			// one first needs its client (as in KisFlow, where a type is
			// a label until a CaaS function uses it).
			lazy := ok && !e.strictConns[fc.Option.CName]
			var err error
			if conn, err = e.connector(ctx, fc.Option.CName, lazy); err != nil {
				return nil, fmt.Errorf("flow %q: function %q: %w", cfg.FlowName, st.FName, err)
			}
		}
		if !ok {
			var cc *config.Conn
			var drv Driver
			if conn != nil {
				cc, drv = conn.cfg, conn.Driver()
			}
			if h, err = yamlBody(fc, params, cc, drv); err != nil {
				return nil, fmt.Errorf("flow %q: %w%s", cfg.FlowName, err, e.registeredLike(st.FName))
			}
		}
		names[i] = st.FName
		c.onTimer = append(c.onTimer, e.reg.timerFunc(st.FName))
		ch, err := e.chain(fc.Option.Filters, cfg, fc, params)
		if err != nil {
			return nil, fmt.Errorf("flow %q: function %q: %w", cfg.FlowName, st.FName, err)
		}
		c.handlers = append(c.handlers, h)
		c.funcs = append(c.funcs, fc)
		c.params = append(c.params, params)
		c.conns = append(c.conns, conn)
		c.chains = append(c.chains, ch)
	}
	c.plan = engine.NewPlan(names, e.maxJumps)
	if len(c.funcs) > 0 {
		c.must = config.MustFields(c.funcs[0].Source.Must)
		for _, p := range c.must {
			c.mustNames = append(c.mustNames, strings.Join(p, "."))
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.compiled[name]; old != nil {
		return old, nil
	}
	e.compiled[name] = c
	return c, nil
}

// registeredLike names the registered Go function closest to fname (a
// misspelt or differently cased name), for the error of a function with
// no body, or returns "".
func (e *Engine) registeredLike(fname string) string {
	if s := config.SuggestName(fname, e.reg.Functions()); s != "" {
		return "; a Go function is registered under another name" + s
	}
	return ""
}

// instance makes a new flow instance of c with fresh buffers and stores.
func (e *Engine) instance(c *compiled) *flow {
	id := c.cfg.FlowName + "-" + strconv.FormatUint(e.seq.Add(1), 10)
	fl := &flow{eng: e, c: c, cfg: c.cfg, id: id, codec: e.codec,
		log: e.log.With("flow", c.cfg.FlowName, "flow_id", id)}
	steps := make([]engine.Step, len(c.handlers))
	fl.funcs = make([]*Function, len(c.handlers))
	ss := make([]*step, len(c.handlers))
	for i, h := range c.handlers {
		fc := c.funcs[i]
		fl.funcs[i] = &Function{cfg: fc, index: i, params: c.params[i], conn: c.conns[i]}
		_, win := h.(*windowHandler)
		s := &step{fl: fl, index: i, b: h.bind(fl, i), win: win}
		s.call = filter.Call{Kind: filter.FuncCall, Flow: c.cfg.FlowName, FlowID: id, Func: fc.FName, Mode: fc.FMode, Conn: fc.Option.CName}
		s.chain = c.chains[i].Then(s.centre)
		steps[i], ss[i] = s, s
	}
	fl.run = engine.NewRun(c.plan, steps)
	fl.steps = ss
	for _, s := range ss {
		s.run = fl.run
	}
	fl.call = filter.Call{Kind: filter.FlowRun, Flow: c.cfg.FlowName, FlowID: id}
	fl.chain = c.chain.Then(fl.execute)
	return fl
}

// Connector returns the started connector cname, starting it on first use:
// the driver is built from its config and started, then the ConnInit
// callbacks run. A failed start is returned and tried again on the next call.
func (e *Engine) Connector(ctx context.Context, cname string) (*Connector, error) {
	return e.connector(ctx, cname, false)
}

// connector returns connector cname; lazy leaves its driver to start when
// something first needs it (a connector used only by functions), else it
// is started now. The ConnInit callbacks run once, when the connector is
// first returned.
func (e *Engine) connector(ctx context.Context, cname string, lazy bool) (*Connector, error) {
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
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

	// The slot's lock serialises the creation of this one connector.
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if c := slot.conn; c != nil {
		if !lazy {
			if _, err := c.started(ctx); err != nil {
				return nil, err
			}
		}
		return c, nil
	}
	cfg, err := cfg.Expanded()
	if err != nil {
		return nil, err
	}
	funcs, inits := e.reg.connCallbacks(cname)
	retry := driverRetryAfter
	if e.driverRetry > 0 {
		retry = e.driverRetry
	}
	conn := &Connector{cfg: cfg, funcs: funcs, start: e.startDriver, log: e.log, retryAfter: retry}
	if !lazy {
		if _, err := conn.started(ctx); err != nil {
			return nil, err
		}
	}
	for _, init := range inits {
		if err := guard(func() error { return init(ctx, conn) }); err != nil {
			conn.mu.Lock()
			if conn.driver != nil {
				_ = guard(func() error { return conn.driver.Close(ctx) }) // the init error is the one to report
				e.mu.Lock()
				e.conns1st = slices.DeleteFunc(e.conns1st, func(c *Connector) bool { return c == conn })
				e.mu.Unlock()
			}
			conn.mu.Unlock()
			return nil, e.red.Error(fmt.Errorf("connector %q: init callback: %w", cname, err))
		}
	}
	slot.conn = conn
	return conn, nil
}

// startDriver builds and starts the driver of c (its caller holds c.mu)
// and adds c to the connectors Close closes.
func (e *Engine) startDriver(ctx context.Context, c *Connector) error {
	cname, cfg := c.cfg.CName, c.cfg
	var drv Driver = label{}
	var err error
	if e.override != nil {
		factory, _ := e.reg.driver(cfg.Type)
		if err := guard(func() error { drv, err = e.override(cname, cfg, factory); return err }); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, cfg.Type, err))
		}
		if drv == nil {
			drv = label{}
		}
	} else if factory, ok := e.reg.driver(cfg.Type); ok {
		if drv, err = callFactory(factory, e.reg.factoryConfig(e.set, cname, cfg)); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, cfg.Type, err))
		}
	} else {
		e.log.WarnContext(ctx, "connector has no driver in this binary: it is a label for its callbacks", "connector", cname, "type", cfg.Type, "known", e.reg.DriverTypes())
	}
	if pu, ok := drv.(PluginUser); ok {
		if err := guard(func() error { return pu.UsePlugins(e.plugins.Lookup) }); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, cfg.Type, err))
		}
	}
	if mu, ok := drv.(MetricsUser); ok && e.metrics != nil {
		mu.UseMetrics(e.metrics.Registry)
	}
	if lu, ok := drv.(LoggerUser); ok {
		lu.UseLogger(e.log.With("connector", cname))
	}
	if err := guard(func() error { return drv.Start(ctx) }); err != nil {
		return &StartError{Connector: cname, Err: e.red.Error(fmt.Errorf("connector %q (type %s) failed to start: %w", cname, cfg.Type, err))}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = guard(func() error { return drv.Close(ctx) })
		return ErrClosed
	}
	c.driver = drv
	e.conns1st = append(e.conns1st, c)
	e.mu.Unlock()
	e.log.InfoContext(ctx, "connector started", "connector", cname, "type", cfg.Type)
	return nil
}

// CheckConnector starts the connector cname as Connector does and, when
// its driver is a Checker, checks it for use. It reads, acknowledges and
// writes no message. The connector stays started until Close.
func (e *Engine) CheckConnector(ctx context.Context, cname string, use config.ConnUse) error {
	c, err := e.Connector(ctx, cname)
	if err != nil {
		return err
	}
	if ch, ok := c.Driver().(Checker); ok {
		if err := guard(func() error { return ch.Check(ctx, use) }); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, c.Type(), err))
		}
	}
	if fch, ok := c.Driver().(FuncChecker); ok {
		if err := guard(func() error { return fch.CheckFuncs(ctx, e.funcsThrough(cname)) }); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, c.Type(), err))
		}
	}
	if use.Load {
		if err := e.checkLookups(ctx, c); err != nil {
			return e.red.Error(fmt.Errorf("connector %q (type %s): %w", cname, c.Type(), err))
		}
	}
	return nil
}

// funcsThrough returns, sorted, the functions that the steps of enabled
// flows run through connector cname: those with neither a Go body nor a
// YAML one of their own (a filter, a calc, a window).
func (e *Engine) funcsThrough(cname string) []string {
	var out []string
	for _, fname := range e.set.FlowNames() {
		fl := e.set.Flows[fname]
		if !fl.Enabled() {
			continue
		}
		for _, st := range fl.Flows {
			fc := e.set.Funcs[st.FName]
			if fc == nil || fc.Option.CName != cname || fc.ConfigOnly() || fc.Window != nil && fc.FMode == config.Calculate || slices.Contains(out, fc.FName) {
				continue
			}
			if _, ok := e.reg.handler(st.FName); !ok {
				out = append(out, fc.FName)
			}
		}
	}
	slices.Sort(out)
	return out
}

// LookupChecker is an optional capability of a Lookup: CheckLookup checks,
// without a key, what a Fetch needs of the service (a SQL load_query's
// table and key column), so that dry-run finds it before a run does.
type LookupChecker interface {
	CheckLookup(ctx context.Context) error
}

// checkLookups checks the YAML body of every Load function with no Go body
// that an enabled flow with a stream block (a flow kisflow run runs) runs
// through connector c (see LookupChecker). A flow without one is run from
// Go code, whose bodies are not known here.
func (e *Engine) checkLookups(ctx context.Context, c *Connector) error {
	for _, fname := range e.set.FlowNames() {
		fl := e.set.Flows[fname]
		if !fl.Enabled() || fl.Stream == nil {
			continue
		}
		for _, st := range fl.Flows {
			fc := e.set.Funcs[st.FName]
			if fc == nil || fc.FMode != config.Load || fc.ConfigOnly() || fc.Option.CName != c.Name() {
				continue
			}
			if _, ok := e.reg.handler(st.FName); ok {
				continue
			}
			h, err := yamlBody(fc, config.MergedParams(fc, st), c.cfg, c.Driver())
			if err != nil {
				return fmt.Errorf("flow %q: %w", fname, err)
			}
			lh, ok := h.(*loadHandler)
			if !ok {
				continue
			}
			if lc, ok := lh.lookup.(LookupChecker); ok {
				if err := guard(func() error { return lc.CheckLookup(ctx) }); err != nil {
					return fmt.Errorf("function %q (flow %q): %w", fc.FName, fname, err)
				}
			}
		}
	}
	return nil
}

// Close closes every started connector once, in reverse start order, then
// the plugins in reverse start order, and returns their errors joined. Flows of a closed engine must not run.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.conns1st
	e.conns1st = nil
	e.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		if err := guard(func() error { return c.driver.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("close connector %q: %w", c.Name(), err))
		}
	}
	e.startMu.Lock()
	errs = append(errs, e.plugins.Close(ctx))
	e.startMu.Unlock()
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

// label is the driver of a connector whose type this binary has no driver
// for. As in KisFlow, such a connector is a name, a config and the
// callbacks registered for it; Connector.Driver returns nil.
type label struct{}

func (label) Start(context.Context) error { return nil }
func (label) Close(context.Context) error { return nil }
