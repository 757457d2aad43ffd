package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// The polling of --watch: how often the folder's files are looked at, and
// how long they must stay unchanged before a change is applied (editors
// write a file several times when they save it).
const (
	watchPoll  = 500 * time.Millisecond
	watchQuiet = 300 * time.Millisecond
)

// watchedEngine is an engine built from one version of the configuration,
// shared by the flows started from it; closed when the last one ends.
type watchedEngine struct {
	eng   *kisflow.Engine
	set   *config.Set // the configuration it was built from
	close func()
	refs  int
	unset func() // takes the console off the engine's admin server
}

// watchedFlow is the current run of one flow under --watch.
type watchedFlow struct {
	name    string
	print   string // the fingerprint of the configuration it runs
	key     string // its stream.key
	workers int    // its stream.workers
	eng     *watchedEngine
	mu      sync.Mutex         // guards job, set once its connectors are up
	job     *kisflow.Job       // nil while it waits for a connector
	cancel  context.CancelFunc // ends its wait for a connector, or drains its job
	done    chan struct{}
	err     error // set before done closes
	start   time.Time
	ended   bool // its end was reported
	failed  bool // it ended with an error (or did not start)
	// notDrained: its last job's in-flight batches did not finish within
	// drain_timeout (they go back to the source).
	notDrained bool
	held       bool // stopped through the admin API: started again by the API or a change of its configuration
}

// watcher runs the flows of a folder and applies the changes of its files.
type watcher struct {
	reg    *kisflow.Registry
	dir    string
	state  string
	o      runOptions
	stdout io.Writer
	stderr *lockedWriter
	level  slog.Level
	flows  map[string]*watchedFlow
	set    *config.Set

	// The admin API and the inspector: ctl describes the flows, console
	// is its handler, set on every engine version's admin server. holder
	// is the engine whose admin server listens; it is kept open, with an
	// extra reference, until a reload opens an engine that can take the
	// address over, so that the API stays up while flows come and go.
	ctl     *control
	console http.Handler
	holder  *watchedEngine
	reqs    chan func() // the API's actions, run by the watch loop
	// moving is closed when the admin server is about to move to another
	// engine: actions still waiting for the loop answer 503 rather than
	// hold the old server's shutdown (see do).
	movingMu sync.Mutex
	moving   chan struct{}
	quit     chan struct{} // closed when the watch loop ends
	endLoop  sync.Once     // closes quit
}

// runWatch is `run --watch`: it runs the flows like run, then polls the
// folder's files; when they change (and stay unchanged for watchQuiet) the
// folder is linted. With errors the running flows go on and the errors are
// printed; without, each flow whose resolved configuration changed (its
// YAML, its functions, the connectors they name, the global file) is
// drained and started again from its committed position; the others are
// left alone; new flows start, removed or disabled ones drain and stop.
// It returns when ctx ends, after draining every flow.
func runWatch(ctx context.Context, reg *kisflow.Registry, dir string, o runOptions, stdout, stderr io.Writer) error {
	if o.from != "" || o.until != "" {
		return &exitError{code: ExitUsage, err: errors.New("--watch runs flows from their committed positions: it does not take --from or --until")}
	}
	// The files as they are before they are read: a change made while
	// the flows start is applied once they have started.
	state := o.state
	if state == "" {
		state = filepath.Join(dir, kisflow.DefaultStateDir)
	}
	last, err := snapshot(dir, state)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		return err
	}
	if err := knownFlows(set, o.flows, dir); err != nil {
		return err
	}
	w := &watcher{reg: reg, dir: dir, o: o, stdout: &lockedWriter{w: stdout}, stderr: &lockedWriter{w: stderr, red: set.Redactor()}, flows: map[string]*watchedFlow{}}
	if err := w.level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	w.state = o.state
	if w.state == "" {
		w.state = filepath.Join(dir, kisflow.DefaultStateDir)
		if err := adoptLegacyPositions(ctx, set, w.wanted(set), w.state, stdout); err != nil {
			return &exitError{code: ExitProblem, err: set.Redactor().Error(err)}
		}
	}
	w.ctl = newControl(ctx, nil, set, w.state, nil, w.stderr)
	w.ctl.ext = w
	w.console = w.ctl.handler()
	w.reqs, w.quit = make(chan func()), make(chan struct{})
	defer w.endLoop.Do(func() { close(w.quit) })
	sampled := make(chan struct{})
	defer close(sampled)
	go w.ctl.sample(sampled)
	defer w.releaseHolder()
	if len(w.wanted(set)) == 0 {
		fmt.Fprintf(stdout, "watch: %s: no enabled flow has a stream block yet; waiting for one\n", dir)
	}
	if err := w.apply(ctx, set, true, ""); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "watch: watching %s for changes (Ctrl-C to stop)\n", dir)

	tick := time.NewTicker(watchPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.stopAll()
		case fn := <-w.reqs:
			fn()
			continue
		case <-tick.C:
		}
		w.reap()
		cur, err := snapshot(dir, w.state)
		if err != nil {
			fmt.Fprintf(w.stderr, "watch: %v; the running flows go on\n", err)
			continue
		}
		if cur == last {
			continue
		}
		// Debounce: wait until the files stay as they are for watchQuiet.
		for {
			select {
			case <-ctx.Done():
				return w.stopAll()
			case fn := <-w.reqs:
				fn()
				continue
			case <-time.After(watchQuiet):
			}
			next, err := snapshot(dir, w.state)
			if err == nil && next == cur {
				break
			}
			cur = next
		}
		last = w.reload(ctx, cur)
	}
}

// wanted returns the flows of set that run: enabled, bound to a source,
// among --flow when given.
func (w *watcher) wanted(set *config.Set) []string {
	var names []string
	for _, n := range set.FlowNames() {
		fl := set.Flows[n]
		if fl.Enabled() && fl.Stream != nil && (len(w.o.flows) == 0 || slices.Contains(w.o.flows, n)) {
			names = append(names, n)
		}
	}
	return names
}

// errSuperseded is apply's answer when the files changed again while it
// drained flows: their new jobs are to start from the newest files.
var errSuperseded = errors.New("the configuration changed again while flows drained")

// reload lints the folder (whose files are snap) and applies it when it
// has no errors. When the files change again while the changed flows
// drain (a drain can wait long for a sink that is down), the folder is
// read again after the drain, so that the flows start again with the
// newest configuration, never with one already superseded (a newest one
// with errors is not applied: the drained flows start with the one read
// before). It returns the snapshot of the files it applied.
func (w *watcher) reload(ctx context.Context, snap string) string {
	fmt.Fprintf(w.stdout, "watch: %s changed\n", w.dir)
	var valid *config.Set // the last version without errors
	for {
		set := w.read()
		if set == nil {
			if valid != nil {
				fmt.Fprintf(w.stderr, "watch: the newest version has errors: the drained flows start again with the version saved before it\n")
				if err := w.apply(ctx, valid, false, ""); err != nil {
					fmt.Fprintf(w.stderr, "watch: %v\n", err)
				}
			}
			return snap
		}
		valid = set
		err := w.apply(ctx, set, false, snap)
		if !errors.Is(err, errSuperseded) {
			if err != nil {
				fmt.Fprintf(w.stderr, "watch: %v\nwatch: the change is not applied; the running flows go on\n", err)
			}
			return snap
		}
		if next, err := snapshot(w.dir, w.state); err == nil {
			snap = next
		}
		fmt.Fprintf(w.stdout, "watch: %s changed again while flows drained: reading it again, to start them with the newest version\n", w.dir)
	}
}

// read lints the folder and imports it; nil (with the reasons printed)
// when it has errors.
func (w *watcher) read() *config.Set {
	probs, err := config.Lint(w.dir, w.reg.LintOptions()...)
	if err != nil {
		fmt.Fprintf(w.stderr, "watch: %v\nwatch: the change is not applied; the running flows go on\n", err)
		return nil
	}
	nerr := 0
	for _, p := range probs {
		fmt.Fprintln(w.stderr, p)
		if p.Severity == config.SevError {
			nerr++
		}
	}
	if nerr > 0 {
		fmt.Fprintf(w.stderr, "watch: %d error(s): the change is not applied; the running flows go on with the configuration they started with (fix the files and save them again)\n", nerr)
		return nil
	}
	set, err := config.Import(w.dir, w.reg.LintOptions()...)
	if err != nil {
		fmt.Fprintf(w.stderr, "watch: %v\nwatch: the change is not applied; the running flows go on\n", err)
		return nil
	}
	return set
}

// apply makes the running flows those of set: it drains and starts again
// the changed ones, starts the new ones, drains the removed ones. At the
// first call (first) a flow that cannot start is an error of the command,
// as for run. With snap (the snapshot of the files set was read from),
// when the files changed while flows drained, it starts nothing and
// returns errSuperseded, for the caller to read them again.
func (w *watcher) apply(ctx context.Context, set *config.Set, first bool, snap string) error {
	prints := flowPrints(set)
	wanted := w.wanted(set)
	drained := false
	gone := map[string]string{} // source -> a flow no longer run that read it
	// Drain the flows that are no longer wanted.
	for _, n := range slices.Sorted(mapKeys(w.flows)) {
		if slices.Contains(wanted, n) {
			continue
		}
		if w.set != nil && w.set.Flows[n] != nil && w.set.Flows[n].Stream != nil {
			gone[w.set.Flows[n].Stream.Source] = n
		}
		wf := w.flows[n]
		if !wf.ended {
			why := "removed"
			if fl := set.Flows[n]; fl != nil && !fl.Enabled() {
				why = "disabled"
			} else if fl != nil {
				why = "no longer run"
			}
			fmt.Fprintf(w.stdout, "watch: flow %s was %s: draining it\n", n, why)
			w.drain(wf)
			drained = true
			fmt.Fprintf(w.stdout, "watch: flow %s drained and stopped\n", n)
		}
		delete(w.flows, n)
		w.ctl.drop(n)
	}
	var start []string
	for _, n := range wanted {
		wf := w.flows[n]
		switch {
		case wf == nil:
			if old, ok := gone[set.Flows[n].Stream.Source]; ok {
				// Positions are kept per flow name: a renamed flow is a
				// new one, which reads its source from its own position.
				fmt.Fprintf(w.stderr, "watch: warning: flow %s is new and flow %s, no longer run, read the same source %s: positions are kept per flow name, so %s reads it from its own committed position (none: where stream.start says, the start by default), and rows %s had read may be read again. To rename a flow without reading its source again, stop kisflow and set the new flow's position with kisflow positions set\n",
					n, old, set.Flows[n].Stream.Source, n, old)
			}
			start = append(start, n)
		case wf.print == prints[n]:
			if !wf.ended && !first {
				if w.ctl.status(n) == flowWaiting {
					fmt.Fprintf(w.stdout, "watch: flow %s is unchanged: left waiting for its connector\n", n)
				} else {
					fmt.Fprintf(w.stdout, "watch: flow %s is unchanged: left running\n", n)
				}
			}
		case !wf.ended && keyRefused(wf, set.Flows[n].Stream):
			fmt.Fprintf(w.stderr, "watch: flow %s: change refused: stream.key changed from %q to %q while %d workers keep window state split by %q; "+
				"the flow goes on with its old configuration (its other changes are not applied either). Put the key back; or let its windows close, "+
				"or stop kisflow, delete the flow's window state and run it again, to use the new key\n",
				n, wf.key, set.Flows[n].Stream.Key, max(wf.workers, 1), wf.key)
		default:
			if !wf.ended {
				fmt.Fprintf(w.stdout, "watch: flow %s changed: draining it to start it again from its committed position\n", n)
				w.drain(wf)
				drained = true
				wf.print = "" // drained to start again: started by the next apply if this one is superseded
			}
			start = append(start, n)
		}
	}
	if snap != "" && drained {
		if now, err := snapshot(w.dir, w.state); err == nil && now != snap {
			return errSuperseded
		}
	}
	if len(start) > 0 && !first && w.holder != nil && w.holder.refs == 1 {
		// The engine that holds the admin server runs no flow: the new
		// one takes its address over.
		w.releaseHolder()
	}
	err := w.startFlows(ctx, set, start, prints, first)
	w.set = set
	return err
}

// startFlows starts the flows start of set with a new engine; prints are
// their fingerprints. At the first call (first) a flow that cannot start
// is an error of the command.
func (w *watcher) startFlows(ctx context.Context, set *config.Set, start []string, prints map[string]string, first bool) error {
	if len(start) == 0 {
		return nil
	}
	red := set.Redactor()
	log := w.log(set)
	engSet := set
	w.findHolder()
	if w.holder != nil {
		// Another engine holds the admin server's address: this one
		// does without a listener of its own.
		engSet = withoutAdmin(set)
	}
	eng, closeEngine, err := openEngine(ctx, w.reg, engSet, log, red)
	if err != nil {
		if first {
			return err
		}
		// The flows drained above stay stopped.
		for _, n := range start {
			w.flows[n] = &watchedFlow{name: n, print: prints[n], ended: true, failed: true}
			w.ctl.track(n, nil, nil, set, err)
		}
		fmt.Fprintf(w.stderr, "watch: %v\nwatch: flows %s stay stopped until the configuration is fixed\n", err, strings.Join(start, ", "))
		return nil
	}
	we := &watchedEngine{eng: eng, set: engSet, close: closeEngine, unset: eng.Console().Set(w.console), refs: 1}
	// Each flow starts on its own, as under plain run: one whose
	// connector is not up yet waits (status waiting) in the background,
	// while the others run and the watch loop and the API go on. first
	// receives each flow's first outcome: nil when its job is ready or
	// when it begins to wait, the error when it cannot start.
	firsts := make(chan error, len(start))
	for _, n := range start {
		st := set.Flows[n].Stream
		jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		wf := &watchedFlow{name: n, print: prints[n], key: st.Key, workers: st.Workers, eng: we, done: make(chan struct{}), cancel: cancel, start: time.Now()}
		we.refs++
		w.flows[n] = wf
		w.ctl.track(n, nil, nil, set, nil)
		go w.runFlow(jctx, wf, set, firsts)
	}
	var startErr error
	for range start {
		if err := <-firsts; err != nil && startErr == nil {
			startErr = err
		}
	}
	w.findHolder()
	we.release() // the reference taken at its opening
	if startErr == nil || ctx.Err() != nil {
		return nil
	}
	if first {
		w.drainAll()
		return &exitError{code: ExitProblem, err: red.Error(startErr)}
	}
	// The flows that could not start are reported now, so that the API's
	// start answers with their error.
	for _, n := range start {
		wf := w.flows[n]
		select {
		case <-wf.done:
			if wf.current() == nil {
				w.ended(wf, false)
			}
		default:
		}
	}
	return nil
}

// runFlow prepares wf's job, waiting for its connectors as long as they
// are not up (or until ctx ends: a drain or a stop cancels the wait),
// then runs it until ctx ends. first receives the first outcome.
func (w *watcher) runFlow(ctx context.Context, wf *watchedFlow, set *config.Set, first chan<- error) {
	defer close(wf.done)
	var once sync.Once
	report := func(err error) { once.Do(func() { first <- err }) }
	j, err := waitJob(ctx, wf.eng.eng, wf.name, w.stderr, func(conn string) {
		w.ctl.waiting(wf.name, conn)
		report(nil)
	}, kisflow.WithStateDir(w.state))
	if err != nil {
		if ctx.Err() != nil {
			err = nil // stopped or drained while it waited
		}
		wf.err = err
		report(err)
		return
	}
	wf.mu.Lock()
	wf.job = j
	wf.mu.Unlock()
	w.ctl.track(wf.name, j, wf.eng.eng, set, nil)
	reportStart(w.stdout, wf.name, j.StartPosition())
	report(nil)
	wf.err = j.Run(ctx)
}

// findHolder makes the engine whose admin server listens, if any, the
// holder (see watcher.holder). An engine starts its admin server with
// its first job, which may come late: after a wait for a connector.
func (w *watcher) findHolder() {
	if w.holder != nil {
		return
	}
	for _, n := range slices.Sorted(mapKeys(w.flows)) {
		if we := w.flows[n].eng; we != nil && we.refs > 0 && adminListens(we.eng, we.set) {
			we.refs++ // kept open for its admin server
			w.holder = we
			return
		}
	}
}

// log returns the logger of an engine of set: to stderr, with set's
// secrets redacted.
func (w *watcher) log(set *config.Set) *slog.Logger {
	w.stderr.mu.Lock()
	w.stderr.red = set.Redactor() // what reaches stderr has this version's secrets redacted
	w.stderr.mu.Unlock()
	return slog.New(slog.NewTextHandler(w.stderr, &slog.HandlerOptions{Level: w.level}))
}

// keyRefused reports whether the change of wf's stream block to st must be
// refused: its key changes while several workers hold window state split
// by the old key, which the new key would route to other workers than the
// ones holding it. With one worker (before and after) every key is on the
// same worker, and a change of workers alone is what a restart handles.
func keyRefused(wf *watchedFlow, st *config.Stream) bool {
	if wf.key == st.Key || (wf.workers <= 1 && st.Workers <= 1) {
		return false
	}
	j := wf.current()
	return j != nil && j.OpenWindows() > 0
}

// current returns wf's job, nil while it waits for a connector (or when
// it never started).
func (wf *watchedFlow) current() *kisflow.Job {
	wf.mu.Lock()
	defer wf.mu.Unlock()
	return wf.job
}

// drain stops wf's job: in-flight batches are finished and committed.
func (w *watcher) drain(wf *watchedFlow) {
	if wf.ended {
		return
	}
	wf.cancel()
	<-wf.done
	w.ended(wf, true)
}

// reap reports the flows whose job ended by itself: a bounded source read
// to its end, or an error. A failed flow stays stopped until its
// configuration changes; the others go on.
func (w *watcher) reap() {
	w.findHolder()
	for _, n := range slices.Sorted(mapKeys(w.flows)) {
		wf := w.flows[n]
		if wf.ended {
			continue
		}
		select {
		case <-wf.done:
			w.ended(wf, false)
			if wf.failed {
				fmt.Fprintf(w.stderr, "watch: flow %s stays stopped until its configuration changes; the other flows go on\n", n)
			}
		default:
		}
	}
}

// ended reports the end of wf's job and releases its engine.
func (w *watcher) ended(wf *watchedFlow, drained bool) {
	wf.ended = true
	j, err := wf.current(), wf.err
	w.ctl.jobEnded(wf.name, err, wf.held)
	elapsed := time.Since(wf.start)
	if j == nil {
		// It waited for a connector and never ran.
		if err != nil {
			fmt.Fprintf(w.stderr, "watch: flow %s could not start: %v\n", wf.name, err)
			wf.failed = true
		} else {
			fmt.Fprintf(w.stdout, "flow %s: stopped while it waited for a connector; nothing was processed\n", wf.name)
		}
		if wf.eng != nil {
			wf.eng.release()
			wf.eng = nil
		}
		return
	}
	s := j.Stats()
	rate := float64(s.Committed) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w.stdout, "flow %s: %d rows read, %d committed, %d written, %d dead-lettered, %d retries in %s (%s rows/s)\n",
		wf.name, s.Read, s.Committed, s.Out, s.DeadLettered, s.Retries, elapsed.Round(time.Millisecond), human(rate))
	if s.DeadLettered > 0 && w.set != nil && w.set.Flows[wf.name] != nil {
		fmt.Fprintf(w.stdout, "flow %s: dead letters are in %s\n", wf.name, deadLetterWhere(w.set, wf.name, w.state))
	}
	if n := j.OpenWindows(); n > 0 && j.WindowsKept() {
		fmt.Fprintf(w.stdout, "flow %s: %d open windows are kept for the next run\n", wf.name, n)
	} else if n > 0 {
		fmt.Fprintf(w.stdout, "flow %s: %d open windows were not emitted: windows are not kept across runs yet\n", wf.name, n)
	}
	switch {
	case err != nil && errors.Is(err, kisflow.ErrDrainTimeout):
		fmt.Fprintf(w.stderr, "flow %s: %v\n", wf.name, err)
		wf.notDrained = true
	case err != nil:
		fmt.Fprintf(w.stderr, "flow %s failed: %v\n", wf.name, err)
		wf.failed = true
	case !drained && j.Exhausted():
		fmt.Fprintf(w.stdout, "flow %s: its source is read to its end\n", wf.name)
	}
	if wf.eng != nil {
		wf.eng.release()
		wf.eng = nil
	}
}

func (we *watchedEngine) release() {
	we.refs--
	if we.refs == 0 {
		we.close() // its admin server, if any, answers until it is shut down
		if we.unset != nil {
			we.unset()
		}
	}
}

// stopAll drains every running flow, at a signal.
func (w *watcher) stopAll() error {
	w.endLoop.Do(func() { close(w.quit) }) // the API's actions are refused from now on
	failed, notDrained := w.drainAll()
	switch {
	case failed:
		return &exitError{code: ExitProblem}
	case notDrained:
		// As run: in-flight batches went back to the source.
		return &exitError{code: ExitNotDrained}
	}
	fmt.Fprintln(w.stdout, "stopped by signal; in-flight batches were drained and committed")
	return nil
}

// drainAll drains every running flow and reports whether one failed and
// whether one's in-flight batches did not finish within its drain_timeout.
func (w *watcher) drainAll() (failed, notDrained bool) {
	for _, n := range slices.Sorted(mapKeys(w.flows)) {
		if wf := w.flows[n]; !wf.ended {
			wf.cancel()
		}
	}
	for _, n := range slices.Sorted(mapKeys(w.flows)) {
		wf := w.flows[n]
		if !wf.ended {
			wf.notDrained = false
			<-wf.done
			w.ended(wf, true)
			notDrained = notDrained || wf.notDrained
		}
		failed = failed || wf.failed
	}
	return failed, notDrained
}

// flowPrints returns a fingerprint of the resolved configuration of each
// flow of set: the flow, the functions it names, the connectors that these
// or the flow name, and the global file. Two versions of the folder give a
// flow the same fingerprint when nothing it runs with changed.
func flowPrints(set *config.Set) map[string]string {
	global, _ := json.Marshal(set.Global)
	if set.Global != nil {
		// A plugin's settings (the admin server's address, ...) are not
		// in the global file's JSON: its YAML is.
		for _, typ := range slices.Sorted(mapKeys(set.Global.Plugins)) {
			for _, n := range slices.Sorted(mapKeys(set.Global.Plugins[typ])) {
				b, _ := yaml.Marshal(set.Global.Plugins[typ][n])
				global = fmt.Appendf(global, "\x00%s.%s\x00%s", typ, n, b)
			}
		}
	}
	conns := slices.Sorted(mapKeys(set.Conns))
	out := map[string]string{}
	for name, fl := range set.Flows {
		var parts [][]byte
		b, _ := json.Marshal(fl)
		parts = append(parts, b)
		for _, st := range fl.Flows {
			f, _ := json.Marshal(set.Funcs[st.FName])
			parts = append(parts, f)
		}
		uses := string(slices.Concat(parts...))
		h := sha256.New()
		h.Write(global)
		for _, p := range parts {
			h.Write(p)
			h.Write([]byte{0})
		}
		for _, cn := range conns {
			// A connector is named as a quoted string somewhere in the
			// flow or its functions (stream.source, option.cname, ...);
			// taking one too many only restarts the flow for nothing.
			if strings.Contains(uses, strconv.Quote(cn)) {
				c, _ := json.Marshal(set.Conns[cn])
				h.Write(c)
				h.Write([]byte{0})
			}
		}
		out[name] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

// snapshot describes the YAML files below dir (size, modification time
// and a hash of their content), leaving out the state folder: a change of
// any gives another string.
func snapshot(dir, state string) (string, error) {
	stateAbs := absPath(state)
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if d.IsDir() {
			if p != dir && (absPath(p) == stateAbs || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(p); ext != ".yml" && ext != ".yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(h, "%s\x00%d\x00%x\n", p, len(b), sum)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("watch %s: %w", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
