package kisflow

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/plugin"
)

// Registry holds what Go code provides: function bodies by name, connector
// drivers by type, connector callbacks, filters by name and plugin types. It is a value: make one with
// NewRegistry, fill it, and pass it to NewEngine. It is safe for concurrent
// use; registering while engines run affects only engines created later.
type Registry struct {
	mu        sync.RWMutex
	funcs     map[string]Handler
	drivers   map[string]DriverFactory
	specs     map[string]*driver.Spec
	connFuncs map[string]map[string]ConnFunc // cname -> fname -> callback
	connInits map[string][]ConnInit
	filters   map[string]filter.Factory
	fspecs    map[string]*driver.Spec // filter name -> its params
	plugins   map[string]plugin.Spec
	timers    map[string]TimerFunc // fname -> the callback of its timers
}

// NewRegistry returns a registry with the built-in filters (filter.Builtins)
// and plugin types (plugin.Builtins) and nothing else.
func NewRegistry() *Registry {
	return &Registry{
		funcs:     map[string]Handler{},
		drivers:   map[string]DriverFactory{},
		specs:     map[string]*driver.Spec{},
		connFuncs: map[string]map[string]ConnFunc{},
		connInits: map[string][]ConnInit{},
		filters:   filter.Builtins(),
		fspecs:    filter.Specs(),
		plugins:   plugin.Builtins(),
	}
}

// RegisterFilter registers a filter factory under name, for YAML to list
// in a function's option.filters or a flow's filters. A name taken by a
// built-in or an earlier filter is an error. Its params are not declared:
// lint cannot check them (RegisterFilterSpec is preferred).
func (r *Registry) RegisterFilter(name string, f filter.Factory) error {
	return r.registerFilter(name, nil, f)
}

// RegisterFilterSpec registers a filter under spec.Type with the
// declaration of its params, as the built-in filters are: lint reports an
// unknown param of an entry (with the closest declared name) and a bad
// value as errors at their line, and `kisflow list NAME` prints them. The
// factory decodes them with filter.Spec.Decode(spec, &params).
func (r *Registry) RegisterFilterSpec(spec *driver.Spec, f filter.Factory) error {
	if spec == nil {
		return errors.New("register filter: nil spec")
	}
	return r.registerFilter(spec.Type, spec, f)
}

func (r *Registry) registerFilter(name string, spec *driver.Spec, f filter.Factory) error {
	if name == "" || f == nil {
		return fmt.Errorf("register filter %q: empty name or nil factory", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.filters[name]; dup {
		return fmt.Errorf("register filter %q: %w", name, ErrDuplicate)
	}
	r.filters[name] = f
	if spec != nil {
		r.fspecs[name] = spec
	}
	return nil
}

// FilterSpec returns the declaration of a filter's params: a built-in's,
// or one registered with RegisterFilterSpec.
func (r *Registry) FilterSpec(name string) (*driver.Spec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.fspecs[name]
	return s, ok
}

// RegisterPlugin registers a plugin type, configured in the global file
// under plugins.<type>.<name>.
func (r *Registry) RegisterPlugin(spec plugin.Spec) error {
	if spec.Type == "" || spec.New == nil {
		return fmt.Errorf("register plugin %q: empty type or nil constructor", spec.Type)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.plugins[spec.Type]; dup {
		return fmt.Errorf("register plugin %q: %w", spec.Type, ErrDuplicate)
	}
	r.plugins[spec.Type] = spec
	return nil
}

// Filters returns the registered filter names, sorted.
func (r *Registry) Filters() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedNames(r.filters)
}

// PluginTypes returns the registered plugin types, sorted.
func (r *Registry) PluginTypes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedNames(r.plugins)
}

func (r *Registry) filter(name string) (filter.Factory, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.filters[name]
	return f, ok
}

// PluginSpec returns the registered plugin type typ.
func (r *Registry) PluginSpec(typ string) (plugin.Spec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.plugins[typ]
	return s, ok
}

func (r *Registry) pluginSpecs() map[string]plugin.Spec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]plugin.Spec, len(r.plugins))
	for k, v := range r.plugins {
		out[k] = v
	}
	return out
}

// LintOptions returns what lint needs to know of the registry: the
// connector types, the filters (names and params), the plugin types (each
// plugin's config is decoded) and the function bodies: a function that an
// enabled flow with a stream block runs (what kisflow run runs) must have a
// Go body or a usable YAML one, and a Load or Save of an enabled flow with
// no Go body must not look like a misspelt registration (a Go function
// registered under a near name; see the param body: yaml). NewEngine
// leaves these checks to the building of a flow, as KisFlow did.
func (r *Registry) LintOptions() []config.LintOption {
	return append(r.lintOptions(), config.WithCheck(r.checkBodies), config.WithCheck(r.checkMisnamedBodies), config.WithCheck(r.checkWindows), config.WithCheck(r.checkTimers), config.WithCheck(func(s *config.Set) []config.Problem {
		_, err := plugin.Build(globalWithImplicit(s.Global), r.pluginSpecs())
		var ce *config.Error
		if errors.As(err, &ce) {
			return ce.Problems
		}
		if err != nil {
			return []config.Problem{{Msg: err.Error()}}
		}
		return nil
	}), config.WithCheck(r.checkListenClash))
}

// checkListenClash reports, at its addrs line, a connector that listens
// (a driver.Listener: the http source) on the address of the admin server
// (a metrics plugin, or prometheus_serve): of the two, the one that binds
// first would take the port and the other fail to listen, or wait for ever
// for a port never freed.
func (r *Registry) checkListenClash(s *config.Set) []config.Problem {
	plugins, err := plugin.Build(globalWithImplicit(s.Global), r.pluginSpecs())
	if err != nil {
		return nil // reported by the plugin check
	}
	type admin struct{ ref, addr string }
	var admins []admin
	for _, ref := range plugins.Order() {
		p, _ := plugins.Lookup(ref.Type, ref.Name)
		if l, ok := p.(driver.Listener); ok {
			what := "the admin server (plugin " + ref.String() + ")"
			if g := s.Global; g != nil && len(g.Plugins[plugin.TypeMetrics]) == 0 {
				what = "the admin server (prometheus_serve)"
			}
			admins = append(admins, admin{what, l.ListenAddr()})
		}
	}
	if len(admins) == 0 {
		return nil
	}
	var probs []config.Problem
	for _, name := range slices.Sorted(maps.Keys(s.Conns)) {
		c := s.Conns[name]
		l, ok := r.lintDriver(s, name).(driver.Listener)
		if !ok {
			continue
		}
		for _, a := range admins {
			if sameListenAddr(l.ListenAddr(), a.addr) {
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindConn, name, "addrs"), Severity: config.SevError,
					Msg: fmt.Sprintf("connector %q (type %s) listens on %s, the address of %s: only one of them can listen there; give one of them another port", name, c.Type, l.ListenAddr(), a.ref)})
			}
		}
	}
	return probs
}

// lintDriver builds, without starting it, the driver of connector name
// of s for a check; nil when its type has no driver in r or its config is
// refused (which checkConns reports).
func (r *Registry) lintDriver(s *config.Set, name string) Driver {
	c := s.Conns[name]
	factory, ok := r.driver(c.Type)
	if !ok {
		return nil
	}
	cfg, err := c.Expanded()
	if err != nil {
		return nil
	}
	d, err := callFactory(factory, r.factoryConfig(s, name, cfg))
	if err != nil {
		return nil
	}
	return d
}

// sameListenAddr reports whether listening on a and on b would take the
// same port: the same port (not 0) on the same host, or on every
// interface (an empty host, 0.0.0.0 or ::) for either.
func sameListenAddr(a, b string) bool {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil || pa != pb || pa == "0" {
		return false
	}
	every := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	norm := func(h string) string {
		if h == "localhost" {
			return "127.0.0.1"
		}
		return h
	}
	return every(ha) || every(hb) || norm(ha) == norm(hb)
}

// lintOptions are LintOptions without the plugin check, for NewEngine,
// which builds the plugins itself.
func (r *Registry) lintOptions() []config.LintOption {
	return []config.LintOption{
		config.WithConnTypes(r.DriverTypes()...),
		config.WithCheck(r.checkConns),
		config.WithCheck(r.checkCallbacks),
		config.WithCheck(r.checkDelivery),
		config.WithCheck(r.checkBounds),
		config.WithCheck(checkApplyTables),
		config.WithFilterCheck(r.checkFilter),
	}
}

// checkFilter lints one filter entry: an unknown name; with a spec, each
// param problem at its line (an unknown param of the entry or a bad value
// is an error, a bare number of milliseconds a warning); then what the
// factory refuses beyond the spec; and a retry count above the cap.
func (r *Registry) checkFilter(u config.FilterUse) []config.Problem {
	ref := u.Ref
	if _, ok := r.filter(ref.Name); !ok {
		return []config.Problem{{Msg: fmt.Sprintf("unknown filter%s (known: %s)", config.SuggestName(ref.Name, r.Filters()), strings.Join(r.Filters(), ", "))}}
	}
	use := filter.Spec{Name: ref.Name, Params: ref.Params, Kind: filter.FlowRun, Flow: u.Flow, Func: u.Func, Env: &filter.Env{}}
	if u.Func != nil {
		use.Kind, use.FuncParams = filter.FuncCall, u.FuncParams()
	}
	// A param the entry lacks may come from the function's params (the
	// flow step's override its default_params), "<filter>_<param>": its
	// problems are reported at that line.
	problem := func(pe *driver.ParamError) config.Problem {
		p := config.Problem{Severity: config.SevError, Msg: pe.Error()}
		if pe.Warning {
			p.Severity = config.SevWarning
		}
		if _, own := ref.Params[pe.Param]; own {
			p.Pos = u.ParamPos(pe.Param)
		} else if key := ref.Name + "_" + pe.Param; u.Func != nil && use.FuncParams[key] != "" {
			var whose string
			p.Pos, whose = u.FuncParamPos(key)
			p.Msg = fmt.Sprintf("param %s (%s %s): %s", pe.Param, whose, key, pe.Msg)
		}
		return p
	}
	var probs []config.Problem
	if spec, ok := r.FilterSpec(ref.Name); ok {
		failed := false
		for _, pe := range spec.Check(use.Effective(spec)) {
			probs = append(probs, problem(pe))
			failed = failed || !pe.Warning
		}
		if failed {
			return probs // the factory would refuse the same params
		}
	}
	f, _ := r.filter(ref.Name)
	if err := guard(func() error { _, err := f(use); return err }); err != nil {
		var perrs driver.Errors
		if !errors.As(err, &perrs) {
			return append(probs, config.Problem{Severity: config.SevError, Msg: err.Error()})
		}
		for _, pe := range perrs {
			probs = append(probs, problem(pe))
		}
		return probs
	}
	if ref.Name == "retry" {
		// A retry_times above the cap is warned of at option.retry_times.
		_, own := ref.Params["times"]
		_, fromFunc := use.FuncParams["retry_times"]
		if _, _, capped, _ := filter.RetryPolicy(use); capped && (own || fromFunc) {
			probs = append(probs, problem(&driver.ParamError{Param: "times", Warning: true, Msg: fmt.Sprintf("above the cap; %d is used", config.MaxRetryTimes)}))
		}
	}
	return probs
}

// buildFilter builds one use of a filter; fn is nil for a flow's filter;
// remote: fn's connector runs it in other processes.
func (r *Registry) buildFilter(ref config.FilterRef, fl *config.Flow, fn *config.Func, fnParams map[string]string, remote bool, env *filter.Env) (filter.Filter, error) {
	f, ok := r.filter(ref.Name)
	if !ok {
		return nil, fmt.Errorf("unknown filter (known: %v)", r.Filters())
	}
	spec := filter.Spec{Name: ref.Name, Params: ref.Params, Kind: filter.FlowRun, Flow: fl, Func: fn, FuncParams: fnParams, Remote: remote, Env: env}
	if fn != nil {
		spec.Kind = filter.FuncCall
		if fnParams == nil {
			spec.FuncParams = fn.Option.DefaultParams
		}
	}
	var flt filter.Filter
	err := guard(func() (err error) {
		flt, err = f(spec)
		return err
	})
	return flt, err
}

// Register registers the body of the function called name. fn is a Handler
// (Func, FuncValues, FuncRows, FuncNoRows) or a Go func of the KisFlow form
//
//	func(ctx context.Context, f kisflow.Flow, rows []*T) error
//
// where rows may also be []T or []any, or be left out. A plain func is
// analysed once, here; a bad signature or a duplicate name is an error.
func (r *Registry) Register(name string, fn any) error {
	if name == "" {
		return fmt.Errorf("register function: empty name")
	}
	h, err := handlerOf(fn)
	if err != nil {
		return fmt.Errorf("register function %q: %w", name, err)
	}
	if err := checkSerializer(h); err != nil {
		return fmt.Errorf("register function %q: %w", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.funcs[name]; dup {
		return fmt.Errorf("register function %q: %w", name, ErrDuplicate)
	}
	r.funcs[name] = h
	return nil
}

// MustRegister is Register that panics on error, for registrations in main
// or init whose failure is a programming mistake.
func (r *Registry) MustRegister(name string, fn any) {
	if err := r.Register(name, fn); err != nil {
		panic(err)
	}
}

// RegisterConnector registers a connector type: its spec (its params,
// checked by lint and printed by `kisflow list`) and its driver factory.
func (r *Registry) RegisterConnector(spec *driver.Spec, f driver.Factory) error {
	if spec == nil {
		return errors.New("register connector: nil spec")
	}
	if err := r.RegisterDriver(spec.Type, f); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.specs[spec.Type] = spec
	return nil
}

// ConnectorSpec returns the spec of a connector type registered with
// RegisterConnector.
func (r *Registry) ConnectorSpec(typ string) (*driver.Spec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.specs[typ]
	return s, ok
}

// RegisterDriver registers the driver factory of a connector type without
// a spec: its params are not checked by lint (RegisterConnector is
// preferred).
func (r *Registry) RegisterDriver(typ string, f DriverFactory) error {
	if typ == "" || f == nil {
		return fmt.Errorf("register driver %q: empty type or nil factory", typ)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.drivers[typ]; dup {
		return fmt.Errorf("register driver %q: %w", typ, ErrDuplicate)
	}
	r.drivers[typ] = f
	return nil
}

// RegisterConnFunc registers the callback that Connector.Call runs when the
// function fname calls connector cname (KisFlow's CaaS). A cname or fname
// the configuration lacks (or a function using another connector) fails
// NewEngine, with the near name.
func (r *Registry) RegisterConnFunc(cname, fname string, fn ConnFunc) error {
	if cname == "" || fname == "" || fn == nil {
		return fmt.Errorf("register connector callback %q/%q: empty name or nil callback", cname, fname)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.connFuncs[cname]
	if m == nil {
		m = map[string]ConnFunc{}
		r.connFuncs[cname] = m
	}
	if _, dup := m[fname]; dup {
		return fmt.Errorf("register connector callback %q/%q: %w", cname, fname, ErrDuplicate)
	}
	m[fname] = fn
	return nil
}

// RegisterConnInit registers a callback run once, when the first flow using
// connector cname is built (KisFlow's CaaSInit; see ConnInit). Several run
// in registration order. A cname the configuration lacks fails NewEngine.
func (r *Registry) RegisterConnInit(cname string, fn ConnInit) error {
	if cname == "" || fn == nil {
		return fmt.Errorf("register connector init %q: empty name or nil callback", cname)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connInits[cname] = append(r.connInits[cname], fn)
	return nil
}

// Functions returns the registered function names, sorted.
func (r *Registry) Functions() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedNames(r.funcs)
}

// DriverTypes returns the registered connector types, sorted.
func (r *Registry) DriverTypes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return sortedNames(r.drivers)
}

func (r *Registry) handler(name string) (Handler, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.funcs[name]
	return h, ok
}

func (r *Registry) driver(typ string) (DriverFactory, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.drivers[typ]
	return f, ok
}

func (r *Registry) connCallbacks(cname string) (map[string]ConnFunc, []ConnInit) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	funcs := make(map[string]ConnFunc, len(r.connFuncs[cname]))
	for k, v := range r.connFuncs[cname] {
		funcs[k] = v
	}
	return funcs, slices.Clone(r.connInits[cname])
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// globalWithImplicit returns g with the admin server that KisFlow's
// prometheus_enable and prometheus_listen ask for (on prometheus_serve)
// added as the plugin metrics.prometheus, unless a metrics plugin is
// configured.
func globalWithImplicit(g *config.Global) *config.Global {
	if g == nil || !g.PrometheusEnable || !g.PrometheusListen || len(g.Plugins[plugin.TypeMetrics]) > 0 {
		return g
	}
	// As in KisFlow, a listener that cannot bind is logged and the flows run.
	pc, err := config.NewPluginConfig(map[string]string{"listen": g.PrometheusServe, "on_bind_error": "log"})
	if err != nil {
		return g // a map of strings always encodes
	}
	out := *g
	out.Plugins = make(map[string]map[string]*config.PluginConfig, len(g.Plugins)+1)
	for k, v := range g.Plugins {
		out.Plugins[k] = v
	}
	out.Plugins[plugin.TypeMetrics] = map[string]*config.PluginConfig{"prometheus": pc}
	return &out
}

// checkConns builds the driver of every connector whose type reg knows,
// without starting it, so that what a driver refuses in its config (a bad
// mode, a bad duration, several addresses it cannot use) is a lint error
// with the connector's position, not a failure at run time.
func (r *Registry) checkConns(s *config.Set) []config.Problem {
	var probs []config.Problem
	streams := streamConns(s)
	strict := r.lintStrictConns(s)
	byGo := map[string]bool{}   // connectors of functions with a Go body in r
	byFunc := map[string]bool{} // connectors of any function
	// Remote connectors: always used by the steps naming them (a remote
	// function has no body to run instead), so their problems are errors.
	remote := map[string]bool{}
	for name, c := range s.Conns {
		if spec, ok := r.ConnectorSpec(c.Type); ok && spec.Remote {
			remote[name] = true
		}
	}
	for name, fc := range s.Funcs {
		if fc.Option.CName == "" {
			continue
		}
		byFunc[fc.Option.CName] = true
		if _, ok := r.handler(name); ok {
			byGo[fc.Option.CName] = true
		}
	}
	// lazy softens a problem of a connector only functions that have, or
	// may have, a Go body use: it starts when one first needs its client,
	// and fails then.
	lazy := func(name string, p config.Problem) config.Problem {
		if !byFunc[name] || strict[name] || p.Severity != config.SevError || remote[name] {
			return p
		}
		p.Severity = config.SevWarning
		if byGo[name] {
			p.Msg += "; the connector is used only by functions with a Go body: it starts, and this fails, when one first needs its client (Connector.Client, Driver or Call)"
		} else {
			p.Msg += "; the connector is used only by functions of flows run from Go code, which may have a Go body (this registry has none, lint cannot know): it starts, and this fails, " +
				"when one first needs its client, or when a flow running it as a YAML-only Load or Save is built (give such a function the param body: yaml to make this an error)"
		}
		return p
	}
	for _, name := range slices.Sorted(maps.Keys(s.Conns)) {
		c := s.Conns[name]
		factory, ok := r.driver(c.Type)
		if !ok {
			continue
		}
		cfg, err := c.Expanded()
		if err != nil {
			continue // an unset ${VAR}: reported by the config's own check
		}
		if spec, ok := r.ConnectorSpec(c.Type); ok {
			// Each param problem at its line; then the factory, without the
			// bad params, for what it checks beyond them (a key template).
			var bad []string
			for _, pe := range spec.Check(cfg.Params) {
				sev := config.SevWarning
				msg := pe.Error()
				switch {
				case pe.Unknown && remote[name]:
					sev = config.SevError
				case pe.Unknown && !streams[name]:
					// A param of the connector's own callbacks (KisFlow's
					// CaaS), unless it looks like a misspelt declared one.
					if !strings.Contains(msg, "did you mean") {
						bad = append(bad, pe.Param)
						continue
					}
					msg += "; left to this connector's own callbacks, which may read it (KisFlow's CaaS)"
				case !pe.Warning:
					sev = config.SevError
				}
				if pe.Unknown || !pe.Warning {
					bad = append(bad, pe.Param)
				}
				probs = append(probs, lazy(name, config.Problem{Pos: s.Pos(config.KindConn, name, "params."+pe.Param), Severity: sev,
					Msg: c.Redactor().Redact(fmt.Sprintf("connector %q (type %s): %s", name, c.Type, msg))}))
			}
			cfg = withoutParams(cfg, bad)
		}
		if _, err := callFactory(factory, cfg); err != nil {
			var perr driver.Errors
			if errors.As(err, &perr) {
				continue // a missing required param, reported above
			}
			probs = append(probs, lazy(name, config.Problem{Pos: s.Pos(config.KindConn, name, connErrField(c, err.Error())), Severity: config.SevError,
				Msg: c.Redactor().Redact(fmt.Sprintf("connector %q: %v", name, err))}))
		}
	}
	return probs
}

// checkCallbacks reports connector callbacks (RegisterConnFunc,
// RegisterConnInit) that can never run: registered for a connector the
// configuration does not have, for a function it does not have, or for a
// function that uses another connector. A misspelt name would otherwise
// leave Connector.Call to its default (a write), silently.
func (r *Registry) checkCallbacks(s *config.Set) []config.Problem {
	r.mu.RLock()
	defer r.mu.RUnlock()
	conns := slices.Sorted(maps.Keys(s.Conns))
	funcs := slices.Sorted(maps.Keys(s.Funcs))
	var probs []config.Problem
	unknownConn := func(cname, what string) {
		probs = append(probs, config.Problem{Severity: config.SevError,
			Msg: fmt.Sprintf("%s registered for connector %q, which the configuration does not have%s: fix the name given to the Registry", what, cname, config.SuggestName(cname, conns))})
	}
	for _, cname := range slices.Sorted(maps.Keys(r.connInits)) {
		if s.Conns[cname] == nil {
			unknownConn(cname, "a connector init callback (RegisterConnInit)")
		}
	}
	for _, cname := range slices.Sorted(maps.Keys(r.connFuncs)) {
		if s.Conns[cname] == nil {
			unknownConn(cname, "a connector callback (RegisterConnFunc)")
			continue
		}
		for _, fname := range slices.Sorted(maps.Keys(r.connFuncs[cname])) {
			switch fc := s.Funcs[fname]; {
			case fc == nil:
				probs = append(probs, config.Problem{Severity: config.SevError,
					Msg: fmt.Sprintf("a connector callback (RegisterConnFunc) of connector %q is registered for function %q, which the configuration does not have%s: fix the name given to the Registry", cname, fname, config.SuggestName(fname, funcs))})
			case fc.Option.CName != cname:
				probs = append(probs, config.Problem{Pos: s.Pos(config.KindFunc, fname, "option.cname"), Severity: config.SevError,
					Msg: fmt.Sprintf("a connector callback (RegisterConnFunc) of connector %q is registered for function %q, whose option.cname is %q: it would never run", cname, fname, fc.Option.CName)})
			}
		}
	}
	return probs
}

// connErrField guesses the field of connector c that the factory's error
// msg is about, for its line: the key (a template), the addrs, else ""
// (the document).
func connErrField(c *config.Conn, msg string) string {
	switch {
	case c.Key != "" && (strings.Contains(msg, "template") || strings.Contains(msg, fmt.Sprintf("%q", c.Key))):
		return "key"
	case c.Addrs != "" && (strings.Contains(msg, "addrs") || strings.Contains(msg, c.Addrs)):
		return "addrs"
	}
	return ""
}

// streamConns are the connectors some flow's stream block names (source,
// sink or dead_letter). Their params are the driver's alone; an unknown one
// is an error. A connector only functions use may carry params of its
// own callbacks (KisFlow's CaaS).
// checkDelivery warns of exactly-once delivery from a source whose
// messages carry neither an ID nor a position (driver.Spec.Unidentified):
// a redelivery, or a client's resend, cannot be recognised, so delivery is
// at-least-once.
func (r *Registry) checkDelivery(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range slices.Sorted(maps.Keys(s.Flows)) {
		st := s.Flows[name].Stream
		if st == nil || st.Delivery != config.ExactlyOnce || s.Conns[st.Source] == nil {
			continue
		}
		typ := s.Conns[st.Source].Type
		if spec, ok := r.ConnectorSpec(typ); ok && spec.Unidentified {
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.delivery"), Severity: config.SevWarning,
				Msg: fmt.Sprintf("flow %q: exactly-once from source %q (type %s) is at-least-once: its messages carry neither an ID nor a position, so a redelivery or a client's resend cannot be recognised and may be written twice", name, st.Source, typ)})
		}
	}
	return probs
}

func streamConns(s *config.Set) map[string]bool {
	out := map[string]bool{}
	for _, fl := range s.Flows {
		if st := fl.Stream; st != nil {
			out[st.Source], out[st.Sink], out[st.DeadLetter] = true, true, true
		}
	}
	return out
}

// strictConns are the connectors of s that start when a flow using them is
// built, and whose param problems are errors: those a stream names (see
// streamConns) and those of Load and Save functions with no Go body in r
// (their YAML body needs the driver). A connector only functions with a Go
// body use starts lazily (see Connector) and its param problems are
// warnings until then.
func (r *Registry) strictConns(s *config.Set) map[string]bool {
	out := streamConns(s)
	for name, fc := range s.Funcs {
		if fc.Option.CName == "" || fc.ConfigOnly() || (fc.FMode != config.Load && fc.FMode != config.Save) {
			continue
		}
		if _, ok := r.handler(name); !ok {
			out[fc.Option.CName] = true
		}
	}
	return out
}

// lintStrictConns are the connectors whose param problems lint reports as
// errors. With Go functions in r (a program's registry), they are
// strictConns. A registry with none (the stock binary's) cannot know the
// bodies of the flows a Go program runs: then they are those a stream
// names (see streamConns), and those of Load and Save functions that are
// surely YAML-only: run by an enabled flow with a stream block (kisflow run
// runs it, with r's bodies), or asking for their YAML body (see
// asksYAMLBody). The connectors of the other functions start lazily, as
// the original's did, and lint warns of their problems.
func (r *Registry) lintStrictConns(s *config.Set) map[string]bool {
	if len(r.Functions()) > 0 {
		return r.strictConns(s)
	}
	out := streamConns(s)
	streamed := map[string]bool{} // functions run by an enabled stream flow
	for _, fl := range s.Flows {
		if fl.Enabled() && fl.Stream != nil {
			for _, st := range fl.Flows {
				streamed[st.FName] = true
			}
		}
	}
	for name, fc := range s.Funcs {
		if fc.Option.CName == "" || fc.ConfigOnly() || (fc.FMode != config.Load && fc.FMode != config.Save) {
			continue
		}
		if _, ok := r.handler(name); ok {
			continue
		}
		if streamed[name] || r.asksYAMLBody(s, fc) {
			out[fc.Option.CName] = true
		}
	}
	return out
}

// asksYAMLBody reports whether Load or Save function fc asks, in its
// default_params or the params of a flow step running it, for its YAML
// body: the param body, or, for a Load, a param its YAML Load reads
// (load_query, load_key, on_missing...).
func (r *Registry) asksYAMLBody(s *config.Set, fc *config.Func) bool {
	var drv Driver
	if fc.FMode == config.Load {
		drv = r.unstartedDriver(s, fc.Option.CName)
	}
	known := yamlParams(fc, drv)
	has := func(params map[string]string) bool {
		for _, p := range known {
			if _, ok := params[p]; ok {
				return true
			}
		}
		return false
	}
	if has(fc.Option.DefaultParams) {
		return true
	}
	for _, fl := range s.Flows {
		for _, st := range fl.Flows {
			if st.FName == fc.FName && has(st.Params) {
				return true
			}
		}
	}
	return false
}

// unstartedDriver builds, without starting it, the driver of connector
// cname as lint does, less the params its spec finds fault with (what
// the driver's capabilities say does not depend on them); nil when the
// connector, its type's driver or its config is missing or bad.
func (r *Registry) unstartedDriver(s *config.Set, cname string) Driver {
	c := s.Conns[cname]
	if c == nil {
		return nil
	}
	cfg, err := c.Expanded()
	if err != nil {
		return nil
	}
	factory, ok := r.driver(cfg.Type)
	if !ok {
		return nil
	}
	cfg = r.factoryConfig(s, cname, cfg)
	if spec, ok := r.ConnectorSpec(cfg.Type); ok {
		var bad []string
		for _, pe := range spec.Check(cfg.Params) {
			bad = append(bad, pe.Param)
		}
		cfg = withoutParams(cfg, bad)
	}
	drv, err := callFactory(factory, cfg)
	if err != nil {
		return nil
	}
	return drv
}

// factoryConfig is what the factory of connector cname gets: cfg, less the
// params its spec does not declare when no stream uses the connector (they
// belong to its callbacks, which read the connector's own config).
func (r *Registry) factoryConfig(s *config.Set, cname string, cfg *config.Conn) *config.Conn {
	spec, ok := r.ConnectorSpec(cfg.Type)
	if !ok || streamConns(s)[cname] {
		return cfg
	}
	var unknown []string
	for k := range cfg.Params {
		if _, ok := spec.Param(k); !ok {
			unknown = append(unknown, k)
		}
	}
	return withoutParams(cfg, unknown)
}

// withoutParams is cfg less the params named, a copy; cfg itself when
// there are none.
func withoutParams(cfg *config.Conn, names []string) *config.Conn {
	if len(names) == 0 {
		return cfg
	}
	cc := *cfg
	cc.Params = maps.Clone(cfg.Params)
	for _, k := range names {
		delete(cc.Params, k)
	}
	return &cc
}
