package kisflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/engine"
)

// MetricsUser is an optional Driver capability: the engine gives it the
// Prometheus registry of its metrics (the one the admin server serves)
// before Start, for collectors of its own (the remote type's calls per
// provider). A collector another connector of the same type registered
// already comes back from Register in a prometheus.AlreadyRegisteredError:
// share it. A connector package that implements it imports Prometheus.
type MetricsUser interface {
	UseMetrics(reg prometheus.Registerer)
}

// LoggerUser is an optional Driver capability: the engine gives it its
// logger before Start (the one WithLogger set, with the configuration's
// secrets redacted), so that what the connector logs while it runs comes
// out in the command's format and at its level rather than through
// slog.Default (the remote type's registry outages and failovers).
type LoggerUser interface {
	UseLogger(l *slog.Logger)
}

// remoteConn reports whether connector cname has a type whose functions
// run in other processes (driver.Spec.Remote).
func (e *Engine) remoteConn(cname string) bool {
	if cname == "" {
		return false
	}
	cc := e.set.Conns[cname]
	if cc == nil {
		return false
	}
	spec, ok := e.reg.ConnectorSpec(cc.Type)
	return ok && spec.Remote
}

// remoteHandler is the body of a function whose connector runs it in
// another process (a driver.Invoker): each call is one Invoke.
type remoteHandler struct {
	inv    driver.Invoker
	fc     *config.Func
	params map[string]string
}

func (h remoteHandler) signature() string { return "remote call through the connector" }

func (h remoteHandler) bind(fl *flow, layer int) binding {
	return remoteBinding{h: h, fl: fl, layer: layer}
}

type remoteBinding struct {
	h     remoteHandler
	fl    *flow
	layer int
}

func (b remoteBinding) call(ctx context.Context, in []any) error {
	call := &driver.Invocation{Flow: b.fl.Name(), Func: b.h.fc.FName, Mode: string(b.h.fc.FMode), Params: b.h.params, Rows: in}
	if st := b.fl.cfg.Stream; st != nil {
		call.KeyField = st.Key
	}
	out, err := b.h.inv.Invoke(ctx, call)
	if err != nil {
		return err
	}
	for _, re := range out.RowErrors {
		if re.Index < 0 || re.Index >= len(in) {
			return fmt.Errorf("remote function %q: its answer names row %d of a batch of %d", b.h.fc.FName, re.Index, len(in))
		}
		b.fl.reject(b.layer, re.Index, in[re.Index], errors.New(re.Msg))
	}
	b.fl.run.CommitBatch(out.Rows)
	b.fl.run.Act(engine.Action{DataReuse: out.DataReuse, ForceEntryNext: out.ForceEntryNext, JumpFunc: out.JumpFunc, Abort: out.Abort})
	return nil
}

// invokePool holds the instances of Invoke's one-step flow of one function
// and one set of params.
type invokePool struct {
	c    *compiled
	pool sync.Pool // *flow
}

// Invoke runs function fname alone over rows, with params as a flow step
// gives them, through the function's filter chain, and returns the rows it
// committed, the rows it rejected (by their position in rows) and the
// action it asked for, without following the action: what a provider of
// remote functions (package remote) does for a flow in another process,
// which follows it. The function needs a config in the engine's set. A
// failed call returns a *FuncError wrapping the function's error (and its
// stream.Permanent or stream.Fatal mark). Keyed state is not available to
// an invoked function. Safe for concurrent use.
func (e *Engine) Invoke(ctx context.Context, fname string, params map[string]string, rows []any) (*driver.Outcome, error) {
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	p, err := e.invokePool(ctx, fname, params)
	if err != nil {
		return nil, err
	}
	fl, _ := p.pool.Get().(*flow)
	if fl == nil {
		fl = e.instance(p.c)
		fl.textRows = true
	}
	defer p.pool.Put(fl)
	fl.rejected = fl.rejected[:0]
	fl.run.CommitBatch(rows)
	if len(fl.c.must) > 0 {
		fl.run.KeepSource(fl.carriesMust)
	}
	out, act, err := fl.run.ExecuteFirst(ctx)
	res := &driver.Outcome{DataReuse: act.DataReuse, ForceEntryNext: act.ForceEntryNext, JumpFunc: act.JumpFunc, Abort: act.Abort}
	for _, re := range fl.rejected {
		res.RowErrors = append(res.RowErrors, driver.RowError{Index: re.Index, Msg: re.Err.Error()})
	}
	clear(fl.rejected)
	fl.rejected = fl.rejected[:0]
	if err != nil {
		var se *engine.StepError
		if errors.As(err, &se) {
			err = se.Err
		}
		return nil, &FuncError{Flow: p.c.cfg.FlowName, Func: fname, Err: err}
	}
	if !act.DataReuse {
		res.Rows = slices.Clone(out)
	}
	clear(out)
	return res, nil
}

func (e *Engine) invokePool(ctx context.Context, fname string, params map[string]string) (*invokePool, error) {
	var key strings.Builder
	key.WriteString(fname)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&key, "\x00%s\x00%s", k, params[k])
	}
	if p, ok := e.invokers.Load(key.String()); ok {
		return p.(*invokePool), nil
	}
	fc := e.set.Funcs[fname]
	if fc == nil {
		return nil, fmt.Errorf("function %q: %w: this provider's configuration has no kistype: func document for it", fname, ErrUnknownFunction)
	}
	if e.remoteConn(fc.Option.CName) {
		return nil, fmt.Errorf("function %q: its connector %q is itself remote: a provider serves functions with a local body", fname, fc.Option.CName)
	}
	cfg := &config.Flow{FlowName: "remote:" + fname, Flows: []config.FlowStep{{FName: fname, Params: params}}}
	c, err := e.compileFlow(ctx, "\x00remote\x00"+key.String(), cfg)
	if err != nil {
		return nil, err
	}
	p, _ := e.invokers.LoadOrStore(key.String(), &invokePool{c: c})
	return p.(*invokePool), nil
}

// CheckInvoke returns an error unless function fname can be invoked
// (Invoke): it has a config, a local body, and its connector starts.
func (e *Engine) CheckInvoke(ctx context.Context, fname string) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	_, err := e.invokePool(ctx, fname, nil)
	return err
}
