package kisflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/internal/suggest"
	"github.com/kisflow-go/kisflow/stream"
)

// Loader is an optional Driver capability: it gives a Load function that
// has no Go body a body written in YAML (a query or key template in its
// params). LoadLookup is called with the function's params (default_params
// merged with the flow step's) when lint checks a configuration, on a
// driver built but not started, and when a flow using the function is
// built, on the started driver. Its error tells a YAML user what the params
// lack, as "give it a load_query ...".
type Loader interface {
	LoadLookup(params map[string]string) (Lookup, error)
	// LoadParams lists the function params LoadLookup reads; lint warns
	// of the others.
	LoadParams() []string
}

// Lookup finds the stored records of a batch of rows, for a Load function
// written in YAML. The engine calls Key for each row of a run, then Fetch
// once with the distinct keys not in its cache.
type Lookup interface {
	// Key returns a row's lookup key. An error is the row's own (it lacks
	// the field the template names): the row is dead-lettered.
	Key(row map[string]any) (any, error)
	// Fetch returns, for each key, the fields stored for it, or nil when
	// nothing is. Errors are classified as a sink's are (stream.Permanent,
	// stream.Fatal, else retried).
	Fetch(ctx context.Context, keys []any) ([]map[string]any, error)
}

// What a YAML Load does with a row whose key has no record (on_missing).
const (
	missingPass       = "pass"
	missingDrop       = "drop"
	missingDeadLetter = "dead_letter"
)

// defaultCacheSize is the most keys the cache of a YAML Load keeps.
const defaultCacheSize = 100_000

// noBodyError is a function that a flow runs and that has no body: no Go
// function registered under its name, and no usable YAML form.
type noBodyError struct{ msg string }

func (e *noBodyError) Error() string { return e.msg }
func (e *noBodyError) Unwrap() error { return ErrUnknownFunction }

func noBody(fc *config.Func, why string) error {
	return &noBodyError{msg: fmt.Sprintf("function %q (fmode %s) has no body: %s, or register a Go function named %q in your binary (kisflow.Registry.Register)", fc.FName, fc.FMode, why, fc.FName)}
}

// yamlBody returns the body of a function with no Go body: its filter or
// calc, or a Load or Save through its connector. conn is the connector's
// configuration and drv its driver (nil when the type has no driver);
// lint passes a driver that is not started. The error says, in YAML words,
// how to give the function a body.
func yamlBody(fc *config.Func, params map[string]string, conn *config.Conn, drv Driver) (Handler, error) {
	if fc.ConfigOnly() {
		return newExprHandler(fc)
	}
	if fc.Window != nil && fc.FMode == config.Calculate {
		return newWindowHandler(fc)
	}
	if inv, ok := drv.(driver.Invoker); ok && conn != nil {
		return remoteHandler{inv: inv, fc: fc, params: params}, nil
	}
	switch fc.FMode {
	case config.Verify:
		return nil, noBody(fc, "give it a filter in YAML (filter: an expression over the row's fields)")
	case config.Calculate:
		return nil, noBody(fc, "give it a calc in YAML (calc: {field: expression})")
	case config.Load, config.Save:
	default:
		return nil, noBody(fc, fmt.Sprintf("an %s function has no YAML form", fc.FMode))
	}
	if b := params[bodyParam]; b != "" && b != bodyYAML {
		return nil, fmt.Errorf("function %q (fmode %s): %w", fc.FName, fc.FMode, &driver.ParamError{Param: bodyParam, Msg: fmt.Sprintf("%q is not %s (the only value: the function's body is its YAML %s through its connector)", b, bodyYAML, fc.FMode)})
	}
	if conn == nil {
		return nil, noBody(fc, "give it a connector (option.cname)")
	}
	if drv == nil {
		return nil, noBody(fc, fmt.Sprintf("connector %q has type %q, which this binary has no driver for", conn.CName, conn.Type))
	}
	if fc.FMode == config.Save {
		sink, ok := drv.(stream.Sink)
		if !ok {
			return nil, noBody(fc, fmt.Sprintf("connector %q (type %s) cannot write rows", conn.CName, conn.Type))
		}
		return saveHandler{sink: sink}, nil
	}
	ld, ok := drv.(Loader)
	if !ok {
		return nil, noBody(fc, fmt.Sprintf("connector %q (type %s) has no YAML load (types postgres, mysql and sqlite take a load_query, redis a key template)", conn.CName, conn.Type))
	}
	lk, err := ld.LoadLookup(params)
	if err != nil {
		var pe *driver.ParamError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("function %q (fmode %s): %w", fc.FName, fc.FMode, pe)
		}
		return nil, noBody(fc, err.Error())
	}
	h := &loadHandler{name: fc.FName, lookup: lk, missing: missingPass}
	param := func(name string) string {
		if v := params[name]; v != "" {
			return v
		}
		return conn.Params[name]
	}
	bad := func(name, format string, args ...any) error {
		return fmt.Errorf("function %q (fmode %s): %w", fc.FName, fc.FMode, &driver.ParamError{Param: name, Msg: fmt.Sprintf(format, args...)})
	}
	switch m := param("on_missing"); m {
	case "", missingPass:
	case missingDrop, missingDeadLetter:
		h.missing = m
	default:
		known := []string{missingPass, missingDrop, missingDeadLetter}
		return nil, bad("on_missing", "%q is not one of %s%s", m, strings.Join(known, ", "), config.SuggestName(m, known))
	}
	if s := param("cache_ttl"); s != "" {
		ttl, err := driver.ParseDuration(s)
		if err != nil || ttl < 0 {
			return nil, bad("cache_ttl", "%q is not a duration (want one such as 30s)", s)
		}
		size := defaultCacheSize
		if s := param("cache_size"); s != "" {
			if size, err = strconv.Atoi(s); err != nil || size < 1 {
				return nil, bad("cache_size", "%q is not a whole number of at least 1", s)
			}
		}
		if ttl > 0 {
			h.cache = &lookupCache{ttl: ttl, size: size, m: map[string]cached{}}
		}
	}
	return h, nil
}

// saveHandler is a Save function written in YAML: it writes its rows
// through its connector's sink and passes them on unchanged.
type saveHandler struct{ sink stream.Sink }

func (h saveHandler) signature() string { return "YAML save through the connector" }

func (h saveHandler) bind(fl *flow, _ int) binding { return saveBinding{h: h, fl: fl} }

type saveBinding struct {
	h  saveHandler
	fl *flow
}

func (b saveBinding) call(ctx context.Context, in []any) error {
	if len(in) == 0 {
		return nil
	}
	if err := b.h.sink.Write(ctx, in); err != nil {
		return err
	}
	b.fl.run.CommitBatch(in)
	return nil
}

// loadHandler is a Load function written in YAML: it looks up the records
// of a run's rows through its connector in one Fetch, and merges each
// row's record into it.
type loadHandler struct {
	name    string
	lookup  Lookup
	missing string
	cache   *lookupCache // nil without cache_ttl; shared by every instance
}

func (h *loadHandler) signature() string { return "YAML load through the connector" }

func (h *loadHandler) bind(fl *flow, layer int) binding {
	return &loadBinding{h: h, fl: fl, layer: layer, rows: rowReader{fl: fl}, want: map[string]int{}, found: map[string]map[string]any{}}
}

type loadBinding struct {
	h     *loadHandler
	fl    *flow
	layer int
	rows  rowReader
	// Scratch, kept from call to call.
	maps  []map[string]any
	keyOf []string
	keys  []any
	want  map[string]int            // key text -> index in keys
	found map[string]map[string]any // key text -> record (nil: none)
}

func (b *loadBinding) call(ctx context.Context, in []any) error {
	h := b.h
	defer func() {
		clear(b.maps)
		clear(b.keys)
		clear(b.want)
		clear(b.found)
		b.maps, b.keyOf, b.keys = b.maps[:0], b.keyOf[:0], b.keys[:0]
	}()
	now := time.Now()
	for i, row := range in {
		m, err := b.rows.fields(row, true)
		var k any
		if err == nil {
			k, err = h.lookup.Key(m)
		}
		if err != nil {
			b.fl.reject(b.layer, i, row, err)
			b.maps, b.keyOf = append(b.maps, nil), append(b.keyOf, "")
			continue
		}
		kt := fields.KeyText(k)
		b.maps, b.keyOf = append(b.maps, m), append(b.keyOf, kt)
		if _, ok := b.found[kt]; ok {
			continue
		}
		if _, ok := b.want[kt]; ok {
			continue
		}
		if rec, hit := h.cache.get(kt, now); hit {
			b.found[kt] = rec
			continue
		}
		b.want[kt] = len(b.keys)
		b.keys = append(b.keys, k)
	}
	if len(b.keys) > 0 {
		recs, err := h.lookup.Fetch(ctx, b.keys)
		if err != nil {
			return err
		}
		if len(recs) != len(b.keys) {
			return fmt.Errorf("load: %d records for %d keys", len(recs), len(b.keys))
		}
		for kt, i := range b.want {
			if recs[i] != nil {
				integers(recs[i])
			}
			b.found[kt] = recs[i]
			h.cache.put(kt, recs[i], now)
		}
		if b.fl.log.Enabled(ctx, slog.LevelDebug) {
			b.fl.log.DebugContext(ctx, "load fetch", "func", h.name, "rows", len(in), "keys", len(b.keys))
		}
	}
	for i, m := range b.maps {
		if m == nil {
			continue
		}
		rec := b.found[b.keyOf[i]]
		if rec == nil {
			switch h.missing {
			case missingDrop:
				continue
			case missingDeadLetter:
				b.fl.reject(b.layer, i, in[i], fmt.Errorf("no record for key %s (on_missing: dead_letter)", b.keyOf[i]))
				continue
			}
		}
		for k, v := range rec {
			m[k] = v
		}
		b.fl.run.Commit(m)
	}
	return nil
}

// lookupCache keeps the records of a YAML Load's keys (nil for a key with
// none) for ttl, at most size keys. It is safe for concurrent use; a nil
// cache keeps nothing.
type lookupCache struct {
	mu   sync.Mutex
	ttl  time.Duration
	size int
	m    map[string]cached
}

type cached struct {
	rec   map[string]any
	until time.Time
}

func (c *lookupCache) get(key string, now time.Time) (map[string]any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.After(e.until) {
		return nil, false
	}
	return e.rec, true
}

func (c *lookupCache) put(key string, rec map[string]any, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.size {
		// Full: drop what expired, then, if still full, any entries (a
		// cache this size holds the hot keys of many batches anyway).
		for k, e := range c.m {
			if now.After(e.until) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.size {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cached{rec: rec, until: now.Add(c.ttl)}
}

// checkBodies lints the functions that enabled flows with a stream block
// run: each needs a Go body in r or a YAML one (see yamlBody). Drivers are
// built, not started, to check a YAML Load's params.
func (r *Registry) checkBodies(s *config.Set) []config.Problem {
	var probs []config.Problem
	seen := map[string]bool{}
	red := s.Redactor()
	for _, fname := range s.FlowNames() {
		fl := s.Flows[fname]
		if !fl.Enabled() || fl.Stream == nil {
			continue
		}
		for si, st := range fl.Flows {
			fc := s.Funcs[st.FName]
			if fc == nil || fc.Window != nil {
				continue // unknown functions and window blocks have their own checks
			}
			if _, ok := r.handler(st.FName); ok {
				continue
			}
			if fc.ConfigOnly() {
				// Bad expressions have their own check; the params of an
				// expression are read by its filters alone.
				for _, p := range r.unreadExprParams(fc, config.MergedParams(fc, st)) {
					pos := paramPos(s, fl, si, fc, nil, p)
					if key := fmt.Sprint(pos, p); !seen[key] {
						seen[key] = true
						probs = append(probs, config.Problem{Pos: pos, Severity: config.SevWarning,
							Msg: fmt.Sprintf("function %q: param %q is read by nothing: its expression reads no params, its filters read <filter>_<param>%s", fc.FName, p, config.SuggestName(p, r.filterParams(nil)))})
					}
				}
				continue
			}
			conn := s.Conns[fc.Option.CName]
			if !fc.FMode.Valid() || (fc.Option.CName != "" && conn == nil) {
				continue // a bad fmode or an unknown connector has its own check
			}
			var drv Driver
			if conn != nil {
				cfg, err := conn.Expanded()
				if err != nil {
					continue // an unset ${VAR}: reported by the config's own check
				}
				if factory, ok := r.driver(cfg.Type); ok {
					// As the engine builds it: without the params of the
					// connector's own callbacks (a misspelt cache_tll is
					// checkConns' warning, and must not hide this check).
					if drv, err = callFactory(factory, r.factoryConfig(s, conn.CName, cfg)); err != nil {
						continue // reported by checkConns
					}
				}
				conn = cfg
			}
			params := config.MergedParams(fc, st)
			_, err := yamlBody(fc, params, conn, drv)
			if err == nil {
				for _, p := range unreadParams(fc, params, drv) {
					pos := paramPos(s, fl, si, fc, nil, p)
					if key := fmt.Sprint(pos, p); !seen[key] {
						seen[key] = true
						probs = append(probs, config.Problem{Pos: pos, Severity: config.SevWarning,
							Msg: fmt.Sprintf("function %q: param %q is not read by its YAML %s (it reads %s)%s", fc.FName, p, fc.FMode, strings.Join(yamlParams(fc, drv), ", "), suggestParam(fc, p, drv))})
					}
				}
				continue
			}
			pos := s.Pos(config.KindFunc, fc.FName, "fmode")
			var pe *driver.ParamError
			if errors.As(err, &pe) {
				pos = paramPos(s, fl, si, fc, conn, pe.Param)
			}
			msg := red.Redact(fmt.Sprintf("%v (flow %q runs it)", err, fname))
			if key := fmt.Sprint(pos, err); !seen[key] {
				seen[key] = true
				probs = append(probs, config.Problem{Pos: pos, Severity: config.SevError, Msg: msg})
			}
		}
	}
	return probs
}

// paramPos is where the param p of function fc, run by step si of flow fl,
// was read: the step's params, else the function's default_params, else
// the params of connector conn (nil: not looked at), else its fmode.
func paramPos(s *config.Set, fl *config.Flow, si int, fc *config.Func, conn *config.Conn, p string) config.Pos {
	if _, ok := fl.Flows[si].Params[p]; ok {
		return s.Pos(config.KindFlow, fl.FlowName, fmt.Sprintf("flows[%d].params.%s", si, p))
	}
	if _, ok := fc.Option.DefaultParams[p]; ok {
		return s.Pos(config.KindFunc, fc.FName, "option.default_params."+p)
	}
	if conn != nil {
		if _, ok := conn.Params[p]; ok {
			return s.Pos(config.KindConn, conn.CName, "params."+p)
		}
	}
	return s.Pos(config.KindFunc, fc.FName, "fmode")
}

// filterParams lists the function params "<filter>_<param>" that the
// filters of refs read; all registered filters' with refs nil.
func (r *Registry) filterParams(refs []config.FilterRef) []string {
	names := r.Filters()
	if refs != nil {
		names = names[:0:0]
		for _, f := range refs {
			names = append(names, f.Name)
		}
	}
	var out []string
	for _, n := range names {
		if spec, ok := r.FilterSpec(n); ok {
			for _, p := range spec.Params {
				out = append(out, n+"_"+p.Name)
			}
		}
	}
	return out
}

// unreadExprParams returns, sorted, the params of a Verify or Calculate
// written in YAML that none of its filters (its own and DefaultFilters)
// reads; a filter without a spec may read any "<filter>_" param.
func (r *Registry) unreadExprParams(fc *config.Func, params map[string]string) []string {
	refs := slices.Clone(fc.Option.Filters)
	for _, n := range DefaultFilters {
		refs = append(refs, config.FilterRef{Name: n})
	}
	known := r.filterParams(refs)
	var out []string
	for _, p := range slices.Sorted(maps.Keys(params)) {
		if slices.Contains(known, p) || slices.ContainsFunc(refs, func(f config.FilterRef) bool {
			_, ok := r.FilterSpec(f.Name)
			return !ok && strings.HasPrefix(p, f.Name+"_")
		}) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// suggestParam names the param of a YAML Load that p may misspell, as
// " (did you mean cache_ttl?)", or "".
func suggestParam(fc *config.Func, p string, drv Driver) string {
	if fc.FMode != config.Load {
		return ""
	}
	return config.SuggestName(p, yamlParams(fc, drv))
}

// yamlParams lists the params a YAML Load or Save reads.
func yamlParams(fc *config.Func, drv Driver) []string {
	if fc.FMode != config.Load {
		return []string{bodyParam}
	}
	known := []string{"on_missing", "cache_ttl", "cache_size", bodyParam}
	if ld, ok := drv.(Loader); ok {
		known = append(ld.LoadParams(), known...)
	}
	return known
}

// unreadParams returns, sorted, the params of a YAML Load or Save function
// that nothing reads: neither its body nor one of its filters (which read
// "<filter>_<key>").
func unreadParams(fc *config.Func, params map[string]string, drv Driver) []string {
	if fc.ConfigOnly() || (fc.FMode != config.Load && fc.FMode != config.Save) {
		return nil
	}
	if _, remote := drv.(driver.Invoker); remote {
		return nil // a remote function's params all travel to it
	}
	known := yamlParams(fc, drv)
	var out []string
	for _, p := range slices.Sorted(maps.Keys(params)) {
		if slices.Contains(known, p) {
			continue
		}
		if slices.ContainsFunc(fc.Option.Filters, func(f config.FilterRef) bool { return strings.HasPrefix(p, f.Name+"_") }) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// bodyParam is the function param that makes a Load or Save with no Go
// body use its YAML body on purpose ("body: yaml"), even though a Go
// function is registered under a name close to its own.
const (
	bodyParam = "body"
	bodyYAML  = "yaml"
)

// misnamedBodyError is a Load or Save function with no Go body whose name
// is close to that of a Go function registered for no function of the
// configuration: a misspelt registration, which would otherwise make the
// function a YAML-only Load or Save, silently writing to (or reading from)
// the connector's store.
type misnamedBodyError struct{ msg string }

func (e *misnamedBodyError) Error() string { return e.msg }
func (e *misnamedBodyError) Unwrap() error { return ErrUnknownFunction }

// misnamedBody returns a *misnamedBodyError when fc, run with params by a
// flow, is a Load or Save with no Go body in r and no filter or calc, a Go
// function is registered in r under a name near fc's (see nearName) that
// no function of s has, and fc's YAML does not ask for its YAML body: no
// "body: yaml" param, and, for a Load, none of the params its YAML Load
// reads (load_query, load_key, on_missing...: those say what to look up).
// Else nil.
func (r *Registry) misnamedBody(s *config.Set, fc *config.Func, params map[string]string) error {
	if fc.ConfigOnly() || fc.Window != nil || (fc.FMode != config.Load && fc.FMode != config.Save) {
		return nil
	}
	if _, ok := r.handler(fc.FName); ok {
		return nil
	}
	var near string
	for _, n := range r.Functions() {
		if s.Funcs[n] == nil && nearName(fc.FName, n) {
			near = n
			break
		}
	}
	if near == "" || params[bodyParam] == bodyYAML {
		return nil
	}
	conn := fc.Option.CName
	if fc.FMode == config.Load {
		for _, p := range yamlParams(fc, r.unstartedDriver(s, conn)) {
			if _, ok := params[p]; ok {
				return nil
			}
		}
	}
	what := fmt.Sprintf("its YAML %s through connector %q", fc.FMode, conn)
	if conn == "" {
		what = fmt.Sprintf("a YAML %s (through a connector, option.cname)", fc.FMode)
	}
	return &misnamedBodyError{msg: fmt.Sprintf("function %q (fmode %s) has no Go body; a Go function is registered as %q: did you mean %q? "+
		"Register it as %q (or rename the function in the YAML); to use %s on purpose, set its param %s: %s (option.default_params)",
		fc.FName, fc.FMode, near, near, fc.FName, what, bodyParam, bodyYAML)}
}

// nearName reports whether the registered name reg is close enough to the
// configured name cfg to be its misspelling: the same but for case and the
// separators _ - . and space, or at most two edits apart (ignoring case)
// when cfg is long enough for that to be a slip (3 edits per 10 letters).
func nearName(cfg, reg string) bool {
	norm := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch r {
			case '_', '-', '.', ' ':
				return -1
			}
			return r
		}, strings.ToLower(s))
	}
	if norm(cfg) == norm(reg) {
		return true
	}
	d := suggest.Distance(strings.ToLower(cfg), strings.ToLower(reg))
	return d <= 2 && 10*d <= 3*len(cfg)
}

// checkMisnamedBodies lints what misnamedBody finds in the functions the
// enabled flows run: an error at the function's fname, as building the
// flow fails.
func (r *Registry) checkMisnamedBodies(s *config.Set) []config.Problem {
	var probs []config.Problem
	seen := map[string]bool{}
	for _, fname := range s.FlowNames() {
		fl := s.Flows[fname]
		if !fl.Enabled() {
			continue
		}
		for _, st := range fl.Flows {
			fc := s.Funcs[st.FName]
			if fc == nil {
				continue
			}
			err := r.misnamedBody(s, fc, config.MergedParams(fc, st))
			if err == nil || seen[err.Error()] {
				continue
			}
			seen[err.Error()] = true
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFunc, fc.FName, "fname"), Severity: config.SevError,
				Msg: fmt.Sprintf("%v (flow %q runs it)", err, fname)})
		}
	}
	return probs
}
