// Package plugin runs the components configured in the `kistype: global`
// file under `plugins: {type: {name: {...}}}`: each type registers a Spec
// whose constructor decodes its own part of the file; the engine starts the
// plugins in dependency order and closes them in reverse.
//
// Plugins offer capabilities by type assertion: a LoggerProvider replaces
// the engine's logger, a TracerProvider its tracer; other plugins (shared
// connector clients) are found by connectors with Host.Plugin.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/metrics"
)

// Plugin is a configured component with a lifetime.
type Plugin interface {
	// Start starts the plugin; the plugins it depends on have started.
	Start(ctx context.Context, h Host) error
	// Close stops it within ctx's deadline; plugins that depend on it are
	// already closed.
	Close(ctx context.Context) error
}

// Spec is a plugin type: its name, the types it always starts after, and a
// constructor that decodes and validates its config without doing I/O
// (with config.PluginConfig.Decode, so lint reports errors with file:line).
type Spec struct {
	Type      string
	DependsOn []string
	New       func(name string, cfg *config.PluginConfig) (Plugin, error)
	// Summary says in one line what the plugin type does, and Config is a
	// pointer to its config struct holding the defaults: `kisflow list
	// TYPE` prints each field from its yaml name and doc tag.
	Summary string
	Config  any
}

// Describe writes the plugin type for a terminal: its summary and each
// config field with its kind, default and doc.
func (s Spec) Describe(w io.Writer) {
	fmt.Fprintf(w, "plugin %s: %s\n", s.Type, s.Summary)
	if len(s.DependsOn) > 0 {
		fmt.Fprintf(w, "  starts after: %s\n", strings.Join(s.DependsOn, ", "))
	}
	v := reflect.ValueOf(s.Config)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	fmt.Fprintln(w, "  config:")
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		def := ""
		if fv := v.Field(i); !fv.IsZero() {
			def = fmt.Sprintf(" [default %v]", fv.Interface())
		}
		fmt.Fprintf(w, "    %s (%s)%s\n        %s\n", name, kindOf(f.Type), def, f.Tag.Get("doc"))
	}
}

func kindOf(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t.Kind() == reflect.Map:
		return "mapping"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Float64:
		return "number"
	}
	return t.Kind().String()
}

// Host is what a starting plugin can use of its engine.
type Host interface {
	// Logger is the engine's logger (the log plugin's once it started).
	Logger() *slog.Logger
	// Metrics is the engine's Prometheus collectors.
	Metrics() *metrics.Metrics
	// Health is the engine's readiness checks.
	Health() *Health
	// States is the keyed state of the engine's running jobs.
	States() *States
	// Console is the operator's console (API and inspector) the admin
	// server mounts under /api/ and at /.
	Console() *Console
	// Plugin returns a plugin started before this one.
	Plugin(typ, name string) (Plugin, bool)
}

// LoggerProvider is a plugin that provides the engine's logger.
type LoggerProvider interface {
	Logger() *slog.Logger
}

// TracerProvider is a plugin that provides the engine's tracer provider.
type TracerProvider interface {
	TracerProvider() trace.TracerProvider
}

// Health holds named readiness checks; /readyz passes when all pass. It is
// safe for concurrent use.
type Health struct {
	mu     sync.Mutex
	checks map[string]func(context.Context) error
}

// Set adds or replaces the check called name.
func (h *Health) Set(name string, check func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checks == nil {
		h.checks = map[string]func(context.Context) error{}
	}
	h.checks[name] = check
}

// Remove drops the check called name.
func (h *Health) Remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.checks, name)
}

// Ready runs every check (in name order, without holding the lock) and
// returns their failures joined, each prefixed with its name.
func (h *Health) Ready(ctx context.Context) error {
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	checks := make([]func(context.Context) error, 0, len(names))
	slices.Sort(names)
	for _, n := range names {
		checks = append(checks, h.checks[n])
	}
	h.mu.Unlock()
	var errs []error
	for i, c := range checks {
		if err := c(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", names[i], err))
		}
	}
	return errors.Join(errs...)
}

// Set is the plugins of one engine, built from a global config.
type Set struct {
	order   []config.PluginRef
	plugins map[config.PluginRef]Plugin
	started []config.PluginRef
}

// Build makes the plugins configured in g with specs, in start order. An
// unknown type, a bad config or a dependency problem is an error with the
// config's file:line.
func Build(g *config.Global, specs map[string]Spec) (*Set, error) {
	s := &Set{plugins: map[config.PluginRef]Plugin{}}
	if g == nil {
		return s, nil
	}
	var probs []config.Problem
	fail := func(cfg *config.PluginConfig, r config.PluginRef, err error) {
		var ce *config.Error
		if !errors.As(cfg.Problem(err), &ce) {
			return
		}
		for _, p := range ce.Problems {
			p.Msg = "plugin " + r.String() + ": " + p.Msg
			probs = append(probs, p)
		}
	}
	for _, r := range g.PluginRefs() {
		cfg := g.Plugin(r.Type, r.Name)
		spec, ok := specs[r.Type]
		if !ok {
			known := make([]string, 0, len(specs))
			for t := range specs {
				known = append(known, t)
			}
			slices.Sort(known)
			fail(cfg, r, fmt.Errorf("unknown plugin type %q%s (known: %s)", r.Type, config.SuggestName(r.Type, known), strings.Join(known, ", ")))
			continue
		}
		p, err := spec.New(r.Name, cfg)
		switch {
		case err != nil:
			fail(cfg, r, err)
		case p == nil:
			fail(cfg, r, errors.New("constructor returned nil"))
		default:
			s.plugins[r] = p
		}
	}
	if len(probs) > 0 {
		return nil, &config.Error{Problems: probs}
	}
	order, err := g.PluginOrder(func(typ string) []string { return specs[typ].DependsOn })
	if err != nil {
		return nil, err
	}
	s.order = order
	return s, nil
}

// Order is the start order.
func (s *Set) Order() []config.PluginRef { return slices.Clone(s.order) }

// Lookup returns a built plugin.
func (s *Set) Lookup(typ, name string) (Plugin, bool) {
	p, ok := s.plugins[config.PluginRef{Type: typ, Name: name}]
	return p, ok
}

// Start starts the plugins in order, calling started after each. On a
// failure it closes those already started and returns the error.
func (s *Set) Start(ctx context.Context, h Host, started func(config.PluginRef, Plugin)) error {
	for _, r := range s.order {
		p := s.plugins[r]
		if err := guard(func() error { return p.Start(ctx, h) }); err != nil {
			return errors.Join(fmt.Errorf("start plugin %s: %w", r, err), s.Close(ctx))
		}
		s.started = append(s.started, r)
		if started != nil {
			started(r, p)
		}
	}
	return nil
}

// Close closes the started plugins in reverse order and returns their
// errors joined.
func (s *Set) Close(ctx context.Context) error {
	var errs []error
	for i := len(s.started) - 1; i >= 0; i-- {
		r := s.started[i]
		p := s.plugins[r]
		if err := guard(func() error { return p.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("close plugin %s: %w", r, err))
		}
	}
	s.started = nil
	return errors.Join(errs...)
}

func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn()
}

// Lookup finds a started plugin by type and name; drivers that use shared
// plugins are given one (kisflow.PluginUser).
type Lookup func(typ, name string) (Plugin, bool)

// Find returns the plugin typ.name as a T, or an error naming the missing
// plugins.<typ>.<name> entry (also when it is there but of another kind).
func Find[T Plugin](lookup Lookup, typ, name string) (T, error) {
	p, ok := lookup(typ, name)
	t, is := p.(T)
	if !ok || !is {
		var zero T
		return zero, fmt.Errorf("no plugins.%s.%s in the global config", typ, name)
	}
	return t, nil
}
