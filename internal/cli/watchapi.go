package cli

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/plugin"
)

// The admin API under run --watch: the watcher is the control's
// flowRunner. Each action runs in the watch loop (between two looks at
// the files), so that it never races a reload.

// do runs act in the watch loop and returns its outcome; once the loop
// has ended it answers 409.
func (w *watcher) do(act func() (int, error)) (int, error) {
	type outcome struct {
		code int
		err  error
	}
	ch := make(chan outcome, 1)
	w.movingMu.Lock()
	if w.moving == nil {
		w.moving = make(chan struct{})
	}
	moving := w.moving
	w.movingMu.Unlock()
	select {
	case w.reqs <- func() { code, err := act(); ch <- outcome{code, err} }:
	case <-w.quit:
		return http.StatusConflict, errors.New("kisflow is stopping")
	case <-moving:
		// The loop is reloading and moves this server to a new engine:
		// its shutdown waits for this request, which would wait for the
		// loop.
		return http.StatusServiceUnavailable, errors.New("the configuration is being reloaded and the admin server moves to a new engine: retry in a moment")
	}
	o := <-ch
	return o.code, o.err
}

// stopFlow drains the flow's job (or ends its wait for a connector) and
// holds it stopped until the API starts it or its configuration changes.
func (w *watcher) stopFlow(name string) (int, error) {
	return w.do(func() (int, error) {
		wf := w.flows[name]
		if wf == nil || wf.ended {
			return http.StatusConflict, fmt.Errorf("flow %s is %s, not running", name, w.ctl.status(name))
		}
		w.ctl.setStatus(name, flowStopping)
		wf.held = true
		w.drain(wf)
		fmt.Fprintf(w.stdout, "watch: flow %s stopped through the admin API: it stays stopped until started again or its configuration changes\n", name)
		return http.StatusOK, nil
	})
}

// startFlow starts a new job of a flow that is not running, with the
// configuration last applied, from its committed position. A flow whose
// connector is not up waits for it in the background (status waiting).
func (w *watcher) startFlow(name string) (int, error) {
	return w.do(func() (int, error) {
		wf := w.flows[name]
		switch {
		case wf == nil:
			return http.StatusNotFound, fmt.Errorf("flow %s is not run", name)
		case !wf.ended:
			return http.StatusConflict, fmt.Errorf("flow %s is %s: stop it first", name, w.ctl.status(name))
		}
		w.ctl.setStatus(name, flowStarting)
		if err := w.startFlows(w.ctl.ctx, w.set, []string{name}, flowPrints(w.set), false); err != nil {
			return http.StatusInternalServerError, err
		}
		if wf := w.flows[name]; wf.failed {
			return http.StatusInternalServerError, fmt.Errorf("start flow %s: %w", name, w.set.Redactor().Error(w.ctl.flowErr(name)))
		}
		return http.StatusOK, nil
	})
}

// replayWith runs replay with an engine of the configuration last applied
// (without an admin server of its own), in the watch loop: no reload
// starts the flow meanwhile.
func (w *watcher) replayWith(name string, replay func(eng *kisflow.Engine, set *config.Set) error) error {
	_, err := w.do(func() (int, error) {
		if wf := w.flows[name]; wf == nil || !wf.ended {
			return http.StatusConflict, fmt.Errorf("flow %s is running: stop it first (POST /api/flows/%s/stop), its job appends to the dead-letter file", name, name)
		}
		eng, closeEngine, err := openEngine(w.ctl.ctx, w.reg, withoutAdmin(w.set), w.log(w.set), w.set.Redactor())
		if err != nil {
			return http.StatusInternalServerError, err
		}
		defer closeEngine()
		return 0, replay(eng, w.set)
	})
	return err
}

// releaseHolder gives up the extra reference on the engine that holds
// the admin server, closing it if it runs no flow.
func (w *watcher) releaseHolder() {
	w.movingMu.Lock()
	if w.moving != nil {
		close(w.moving)
		w.moving = nil
	}
	w.movingMu.Unlock()
	if w.holder != nil {
		w.holder.release()
		w.holder = nil
	}
}

// adminListens reports whether eng's admin server (a metrics plugin of
// set's global file, or the implicit prometheus_listen one) listens.
func adminListens(eng *kisflow.Engine, set *config.Set) bool {
	names := []string{"prometheus"}
	if set.Global != nil {
		for n := range set.Global.Plugins[plugin.TypeMetrics] {
			names = append(names, n)
		}
	}
	for _, n := range names {
		p, ok := eng.Plugin(plugin.TypeMetrics, n)
		if a, isAddr := p.(interface{ Addr() net.Addr }); ok && isAddr && a.Addr() != nil {
			return true
		}
	}
	return false
}

// withoutAdmin returns set without an admin server: no metrics plugin and
// no prometheus_listen, for an engine of run --watch while another one
// holds the address.
func withoutAdmin(set *config.Set) *config.Set {
	if set.Global == nil {
		return set
	}
	g := *set.Global
	g.PrometheusListen = false
	g.Plugins = map[string]map[string]*config.PluginConfig{}
	for typ, ps := range set.Global.Plugins {
		if typ != plugin.TypeMetrics {
			g.Plugins[typ] = ps
		}
	}
	out := *set
	out.Global = &g
	return &out
}
