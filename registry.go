package kisflow

import (
	"fmt"
	"slices"
	"sync"
)

// Registry holds what Go code provides: function bodies by name, connector
// drivers by type, and connector callbacks. It is a value: make one with
// NewRegistry, fill it, and pass it to NewEngine. It is safe for concurrent
// use; registering while engines run affects only engines created later.
type Registry struct {
	mu        sync.RWMutex
	funcs     map[string]Handler
	drivers   map[string]DriverFactory
	connFuncs map[string]map[string]ConnFunc // cname -> fname -> callback
	connInits map[string][]ConnInit
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		funcs:     map[string]Handler{},
		drivers:   map[string]DriverFactory{},
		connFuncs: map[string]map[string]ConnFunc{},
		connInits: map[string][]ConnInit{},
	}
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

// RegisterDriver registers the driver factory of a connector type.
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
// function fname calls connector cname (KisFlow's CaaS).
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

// RegisterConnInit registers a callback run once after connector cname
// started (KisFlow's CaaSInit). Several run in registration order.
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
