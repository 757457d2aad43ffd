package cli

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/jsonl"
	"github.com/kisflow-go/kisflow/stream"
)

// Flow statuses of the admin API.
const (
	flowStarting = "starting" // the API asked for a start; connectors are starting
	flowWaiting  = "waiting"  // at a start, a connector is not up yet; the other flows run on
	flowRunning  = "running"
	flowStopping = "stopping" // the API asked for a stop; in-flight batches drain
	flowStopped  = "stopped"  // stopped through the API; kept stopped until a start
	flowFinished = "finished" // the source was read to its end, or the run stopped
	flowFailed   = "failed"
)

// flowRun is one flow of kisflow run: the job that runs it now, and what
// the admin API did to it.
type flowRun struct {
	name   string
	job    *kisflow.Job
	cancel context.CancelFunc
	done   chan struct{} // closed when the current job's Run returned
	status string
	err    error
	since  time.Time
	starts int // jobs started, the first one included
	// When the current job started and, once its Run returned, ended.
	jobStart, jobEnd time.Time
	// Under run --watch, the engine and configuration version the flow's
	// job runs with (nil: the control's).
	eng *kisflow.Engine
	set *config.Set

	waitingFor string // the connector a flow with no job yet waits for

	// The committed rate, sampled once a second, and each step's: rows
	// in per second and the share of the last second its workers spent
	// in it.
	lastCommitted int64
	lastAt        time.Time
	rate          float64
	lastSteps     []kisflow.StepStats
	stepRates     []stepRate
}

// stepRate is a step's rates over the last second.
type stepRate struct {
	rows, busy float64
}

// control runs the flows of kisflow run, each as its own job, so that the
// admin API can stop one (its job drains and commits; it stays stopped)
// and start it again (a new job from its committed position) while the
// others run on.
type control struct {
	ctx      context.Context // the run's: a signal ends every job
	eng      *kisflow.Engine
	set      *config.Set
	state    string
	opts     []kisflow.JobOption
	stderr   io.Writer
	changed  chan struct{}
	mu       sync.Mutex
	flows    []*flowRun
	byName   map[string]*flowRun
	runStart time.Time
	// ext, under run --watch, runs the flows: stop, start and replay go
	// to it, and it tells the control of each job's start and end.
	ext flowRunner
}

// flowRunner runs the flows of a control that does not run them itself
// (run --watch's watcher). Its methods are called by the API's handlers.
type flowRunner interface {
	// stopFlow drains the flow's job and keeps the flow stopped.
	stopFlow(name string) (int, error)
	// startFlow starts a new job of a flow that is not running.
	startFlow(name string) (int, error)
	// replayWith calls replay with an engine of the flow's current
	// configuration, while no job of the flow may start.
	replayWith(name string, replay func(eng *kisflow.Engine, set *config.Set) error) error
}

func newControl(ctx context.Context, eng *kisflow.Engine, set *config.Set, state string, opts []kisflow.JobOption, stderr io.Writer) *control {
	return &control{ctx: ctx, eng: eng, set: set, state: state, opts: opts, stderr: stderr,
		changed: make(chan struct{}, 1), byName: map[string]*flowRun{}, runStart: time.Now()}
}

// add runs job as the flow name's job.
func (c *control) add(name string, job *kisflow.Job) {
	f := &flowRun{name: name}
	c.mu.Lock()
	c.flows = append(c.flows, f)
	c.byName[name] = f
	c.mu.Unlock()
	c.run(f, job)
}

// launch starts the flow name's first job in the background, so that a
// flow whose connector is not up yet waits (status waiting) without
// holding the others. first receives, once, the flow's first outcome:
// nil when its job is ready or when it begins to wait, the error when it
// cannot start. A ready job runs once gate is closed, so that the flows
// whose connectors are up all start before any runs, as they did when
// they started one after the other (a flow that consumes what another
// produces has subscribed before the producer writes); a job ready after
// a wait runs at once. reportStart writes where the job starts on out.
func (c *control) launch(name string, out io.Writer, first chan<- error, gate <-chan struct{}) {
	f := &flowRun{name: name, status: flowStarting, since: time.Now()}
	c.mu.Lock()
	c.flows = append(c.flows, f)
	c.byName[name] = f
	c.mu.Unlock()
	c.begin(f, out, first, gate)
}

// begin prepares a job of f in the background and runs it, as launch
// says; a stop while it waits for a connector ends the wait (status
// stopped).
func (c *control) begin(f *flowRun, out io.Writer, first chan<- error, gate <-chan struct{}) {
	starting := make(chan struct{})
	wctx, cancelWait := context.WithCancel(c.ctx)
	c.mu.Lock()
	f.done, f.cancel = starting, cancelWait
	c.mu.Unlock()
	name := f.name
	go func() {
		defer cancelWait()
		var once sync.Once
		report := func(err error) { once.Do(func() { first <- err }) }
		job, err := waitJob(wctx, c.eng, name, c.stderr, func(conn string) {
			c.mu.Lock()
			f.status, f.waitingFor, f.since = flowWaiting, conn, time.Now()
			c.mu.Unlock()
			c.notify()
			report(nil)
		}, c.opts...)
		if err != nil {
			c.mu.Lock()
			switch {
			case c.ctx.Err() != nil:
				f.status = flowFinished // a signal before it ever ran
			case wctx.Err() != nil:
				f.status, f.err = flowStopped, nil // stopped through the API while it waited
			default:
				f.status, f.err = flowFailed, err
			}
			f.since, f.waitingFor = time.Now(), ""
			c.mu.Unlock()
			close(starting)
			c.notify()
			report(err)
			return
		}
		reportStart(out, name, job.StartPosition())
		report(nil)
		<-gate
		if c.ctx.Err() != nil {
			// Another flow could not start, or a signal: this one
			// does not run (the engine's close stops its connectors).
			c.mu.Lock()
			f.status, f.since = flowFinished, time.Now()
			c.mu.Unlock()
			close(starting)
			c.notify()
			return
		}
		c.mu.Lock()
		f.waitingFor = ""
		c.mu.Unlock()
		c.run(f, job)
		close(starting)
	}()
}

// run starts job as f's current job.
func (c *control) run(f *flowRun, job *kisflow.Job) {
	jctx, cancel := context.WithCancel(c.ctx)
	c.mu.Lock()
	f.job, f.cancel, f.done = job, cancel, make(chan struct{})
	f.status, f.err, f.since = flowRunning, nil, time.Now()
	f.starts++
	f.jobStart, f.jobEnd = f.since, time.Time{}
	f.lastCommitted, f.lastAt, f.rate = 0, time.Now(), 0
	f.lastSteps, f.stepRates = nil, nil
	done := f.done
	c.mu.Unlock()
	go func() {
		err := job.Run(jctx)
		cancel()
		c.mu.Lock()
		f.err = err
		switch {
		case f.status == flowStopping:
			f.status = flowStopped
		case err != nil && !errors.Is(err, kisflow.ErrDrainTimeout):
			f.status = flowFailed
		default:
			f.status = flowFinished
		}
		f.since = time.Now()
		f.jobEnd = f.since
		c.mu.Unlock()
		close(done)
		c.notify()
	}()
}

func (c *control) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// wait returns when every job has ended and either the run's context is
// done or no flow is held stopped by the API (a stopped flow keeps the
// run up, to be started again, until a signal).
func (c *control) wait() {
	for {
		c.mu.Lock()
		ended, held := true, false
		for _, f := range c.flows {
			switch f.status {
			case flowStopped, flowReplaying:
				held = true
			case flowFinished, flowFailed:
			default:
				ended = false
			}
		}
		c.mu.Unlock()
		if ended && (!held || c.ctx.Err() != nil) {
			return
		}
		select {
		case <-c.changed:
		case <-c.ctx.Done():
			// Each job drains on the run's context; wait for them, and
			// for those that were starting (their done is replaced when
			// their job begins to run).
			for {
				c.mu.Lock()
				dones := make([]chan struct{}, 0, len(c.flows))
				for _, f := range c.flows {
					if f.done != nil {
						dones = append(dones, f.done)
					}
				}
				starting := slices.ContainsFunc(c.flows, func(f *flowRun) bool {
					return f.status == flowStarting || f.status == flowWaiting
				})
				c.mu.Unlock()
				for _, d := range dones {
					<-d
				}
				if !starting {
					return
				}
			}
		}
	}
}

// jobs returns each flow's current job, in the order of the flows.
func (c *control) jobs() []*kisflow.Job {
	c.mu.Lock()
	defer c.mu.Unlock()
	js := make([]*kisflow.Job, len(c.flows))
	for i, f := range c.flows {
		js[i] = f.job
	}
	return js
}

// result returns the flow name's current job, how long it ran when the
// API started it (0 for the run's first job, which the run's time
// describes), and the error its Run returned.
func (c *control) result(name string) (*kisflow.Job, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.byName[name]
	if f.starts < 2 || f.jobEnd.IsZero() {
		return f.job, 0, f.err
	}
	return f.job, f.jobEnd.Sub(f.jobStart), f.err
}

// sample updates each flow's committed rate, once a second, until done.
func (c *control) sample(done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			c.mu.Lock()
			for _, f := range c.flows {
				if f.job == nil || (f.status != flowRunning && f.status != flowStopping) {
					f.rate, f.stepRates = 0, nil
					continue
				}
				s, steps := f.job.Stats(), f.job.StepStats()
				secs := now.Sub(f.lastAt).Seconds()
				f.rate = float64(s.Committed-f.lastCommitted) / secs
				f.stepRates = make([]stepRate, len(steps))
				for i, st := range steps {
					var last kisflow.StepStats
					if i < len(f.lastSteps) {
						last = f.lastSteps[i]
					}
					f.stepRates[i] = stepRate{rows: float64(st.In-last.In) / secs, busy: float64(st.BusyNs-last.BusyNs) / 1e9 / secs}
				}
				f.lastCommitted, f.lastAt, f.lastSteps = s.Committed, now, steps
			}
			c.mu.Unlock()
		}
	}
}

// stop drains the flow's job and keeps the flow stopped.
func (c *control) stop(name string) (int, error) {
	if c.ext != nil {
		return c.ext.stopFlow(name)
	}
	c.mu.Lock()
	f := c.byName[name]
	if f.status != flowRunning && f.status != flowWaiting {
		st := f.status
		c.mu.Unlock()
		return http.StatusConflict, fmt.Errorf("flow %s is %s, not running or waiting", name, st)
	}
	// A running job drains; a wait for a connector ends.
	f.status = flowStopping
	cancel, done := f.cancel, f.done
	c.mu.Unlock()
	cancel()
	<-done
	return http.StatusOK, nil
}

// start starts a new job of a flow that is not running, from its
// committed position. A flow whose connector is not up waits for it in
// the background (status waiting), as at start-up.
func (c *control) start(name string) (int, error) {
	if c.ctx.Err() != nil {
		return http.StatusConflict, errors.New("the run is stopping")
	}
	if c.ext != nil {
		return c.ext.startFlow(name)
	}
	c.mu.Lock()
	f := c.byName[name]
	switch f.status {
	case flowStopped, flowFinished, flowFailed:
	default:
		st := f.status
		c.mu.Unlock()
		return http.StatusConflict, fmt.Errorf("flow %s is %s: stop it first", name, st)
	}
	f.status, f.since = flowStarting, time.Now()
	c.mu.Unlock()
	c.notify()
	first, gate := make(chan error, 1), make(chan struct{})
	close(gate)
	c.begin(f, c.stderr, first, gate)
	if err := <-first; err != nil {
		return http.StatusInternalServerError, fmt.Errorf("start flow %s: %w", name, c.set.Redactor().Error(err))
	}
	return http.StatusOK, nil
}

// track records job, started by run --watch with eng and set, as the
// flow name's current job; a nil job with err is a job that could not
// start, a nil job without one a job starting.
func (c *control) track(name string, job *kisflow.Job, eng *kisflow.Engine, set *config.Set, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.byName[name]
	if f == nil {
		f = &flowRun{name: name}
		c.flows = append(c.flows, f)
		c.byName[name] = f
	}
	f.job, f.eng, f.set, f.err, f.since, f.waitingFor = job, eng, set, err, time.Now(), ""
	f.lastCommitted, f.lastAt, f.rate, f.lastSteps, f.stepRates = 0, time.Now(), 0, nil, nil
	switch {
	case job == nil && err == nil:
		f.status = flowStarting
		return
	case job == nil:
		f.status = flowFailed
		return
	}
	f.status = flowRunning
	f.starts++
}

// waiting records that the flow name's start waits for connector conn
// (run --watch).
func (c *control) waiting(name, conn string) {
	c.mu.Lock()
	if f := c.byName[name]; f != nil {
		f.status, f.waitingFor, f.since = flowWaiting, conn, time.Now()
	}
	c.mu.Unlock()
	c.notify()
}

// setStatus sets the status of the flow name (run --watch).
func (c *control) setStatus(name, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.byName[name]; f != nil {
		f.status, f.since = status, time.Now()
		if status != flowWaiting {
			f.waitingFor = "" // a flow stopped while it waited no longer waits
		}
	}
}

// status returns the status of the flow name, "" for none.
func (c *control) status(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.byName[name]; f != nil {
		return f.status
	}
	return ""
}

// jobEnded records the end of the flow name's job under run --watch:
// stopped when the API or a reload drained it (held), failed with err,
// else finished.
func (c *control) jobEnded(name string, err error, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.byName[name]
	if f == nil {
		return
	}
	f.err, f.since, f.waitingFor = err, time.Now(), ""
	switch {
	case held:
		f.status = flowStopped
	case err != nil && !errors.Is(err, kisflow.ErrDrainTimeout):
		f.status = flowFailed
	default:
		f.status = flowFinished
	}
}

// flowErr returns the error of the flow name's last job.
func (c *control) flowErr(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.byName[name]; f != nil {
		return f.err
	}
	return nil
}

// drop forgets the flow name: run --watch no longer runs it.
func (c *control) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byName, name)
	c.flows = slices.DeleteFunc(c.flows, func(f *flowRun) bool { return f.name == name })
}

// flowInfo is a flow in the admin API's replies.
type flowInfo struct {
	Name       string           `json:"name"`
	Status     string           `json:"status"`
	Since      time.Time        `json:"since"`
	Error      string           `json:"error,omitempty"`
	Starts     int              `json:"starts"`
	WaitingFor string           `json:"waiting_for,omitempty"`
	RowsPerSec float64          `json:"rows_per_sec"`
	Lag        *int64           `json:"lag"`
	Stats      kisflow.JobStats `json:"stats"`
	Steps      []stepInfo       `json:"steps"`
	// CheckpointAge is the time since the job last made its progress
	// durable (see kisflow.Job.CheckpointedAt); nil before the first.
	CheckpointAge *float64   `json:"checkpoint_age_seconds"`
	StateEntries  int        `json:"state_entries"`
	Start         startInfo  `json:"start"`
	Graph         graphInfo  `json:"graph"`
	Windows       windowInfo `json:"windows"`
	DeadLetter    string     `json:"dead_letters"`
}

// stepInfo is one step of a flow: the job's counters of its function and
// its rates over the last second.
type stepInfo struct {
	kisflow.StepStats
	RowsPerSec float64 `json:"rows_per_sec"` // rows in
	BusyRatio  float64 `json:"busy_ratio"`   // worker-seconds spent in the function per second
}

type startInfo struct {
	Source      string    `json:"source"`
	Position    string    `json:"position,omitempty"`
	CommittedAt time.Time `json:"committed_at,omitzero"`
	Detached    bool      `json:"detached,omitempty"`
}

type graphInfo struct {
	Source     string   `json:"source"`
	Steps      []string `json:"steps"`
	Sink       string   `json:"sink,omitempty"`
	DeadLetter string   `json:"dead_letter,omitempty"`
	Workers    int      `json:"workers"`
	BatchSize  int      `json:"batch_size"`
}

type windowInfo struct {
	Open int  `json:"open"`
	Kept bool `json:"kept"`
}

// info describes f; the caller holds c.mu. Lag asks the source, so it is
// read by the caller outside the lock.
func (c *control) info(f *flowRun) flowInfo {
	set := c.setOf(f)
	in := flowInfo{Name: f.name, Status: f.status, Since: f.since, Starts: f.starts, RowsPerSec: f.rate,
		WaitingFor: f.waitingFor, DeadLetter: deadLetterWhere(set, f.name, c.state), Steps: []stepInfo{}}
	if f.err != nil {
		in.Error = set.Redactor().Redact(f.err.Error())
	}
	fl := set.Flows[f.name]
	g := graphInfo{Source: fl.Stream.Source, Sink: fl.Stream.Sink, DeadLetter: fl.Stream.DeadLetter,
		Workers: max(fl.Stream.Workers, 1), BatchSize: fl.Stream.BatchSize, Steps: []string{}}
	for _, s := range fl.Flows {
		g.Steps = append(g.Steps, s.FName)
	}
	in.Graph = g
	if f.job == nil {
		in.Start = startInfo{Source: fl.Stream.Source}
		return in // waiting for a connector, or under run --watch a flow whose job could not start
	}
	in.Stats = f.job.Stats()
	sp := f.job.StartPosition()
	in.Start = startInfo{Source: sp.Source, Position: sp.Position, CommittedAt: sp.CommittedAt, Detached: sp.Detached}
	in.Windows = windowInfo{Open: f.job.OpenWindows(), Kept: f.job.WindowsKept()}
	for i, st := range f.job.StepStats() {
		si := stepInfo{StepStats: st}
		if i < len(f.stepRates) {
			si.RowsPerSec, si.BusyRatio = f.stepRates[i].rows, f.stepRates[i].busy
		}
		in.Steps = append(in.Steps, si)
	}
	if at, ok := f.job.CheckpointedAt(); ok {
		a := time.Since(at).Seconds()
		in.CheckpointAge = &a
	}
	in.StateEntries = f.job.StateEntries()
	return in
}

// setOf returns the configuration f runs with; the caller holds c.mu.
func (c *control) setOf(f *flowRun) *config.Set {
	if f.set != nil {
		return f.set
	}
	return c.set
}

// flowSet returns the configuration the flow name runs with.
func (c *control) flowSet(name string) *config.Set {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setOf(c.byName[name])
}

func (c *control) flowInfo(name string) flowInfo {
	c.mu.Lock()
	f := c.byName[name]
	in := c.info(f)
	job := f.job
	running := f.status == flowRunning
	c.mu.Unlock()
	if running && job != nil {
		if n, ok := job.Lag(); ok {
			in.Lag = &n
		}
	}
	return in
}

// route is one route of the admin API; the OpenAPI document lists each.
type route struct {
	method, pattern string
	handle          func(c *control, w http.ResponseWriter, r *http.Request)
}

var routes = []route{
	{"GET", "/api/flows", (*control).listFlows},
	{"GET", "/api/flows/{name}", withFlow((*control).getFlow)},
	{"POST", "/api/flows/{name}/stop", withFlow((*control).stopFlow)},
	{"POST", "/api/flows/{name}/start", withFlow((*control).startFlow)},
	{"GET", "/api/flows/{name}/dead-letters", withFlow((*control).deadLetters)},
	{"POST", "/api/flows/{name}/dead-letters/replay", withFlow((*control).replay)},
	{"GET", "/api/flows/{name}/state/{key}", withFlow((*control).stateOf)},
	{"GET", "/api/openapi.json", func(_ *control, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	}},
}

//go:embed console/openapi.json
var openAPI []byte

//go:embed console/index.html console/inspector.js console/inspector.css
var consoleFiles embed.FS

// handler is the console: the API and the inspector's files.
func (c *control) handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) { rt.handle(c, w, r) })
	}
	// A path served with other methods is a 405 that names them: the
	// catch-all below would otherwise take it as a 404.
	allow := map[string][]string{}
	paths := http.NewServeMux()
	for _, rt := range routes {
		if allow[rt.pattern] == nil {
			paths.Handle(rt.pattern, http.NotFoundHandler())
		}
		allow[rt.pattern] = append(allow[rt.pattern], rt.method)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if _, pat := paths.Handler(r); pat != "" {
			methods := strings.Join(allow[pat], ", ")
			w.Header().Set("Allow", methods)
			apiError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+": use "+methods)
			return
		}
		apiError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path+" (the endpoints are listed in /api/openapi.json)")
	})
	// The admin server hands GET /state/{flow}/{key} to the console: the
	// flow's job may run on another engine than the server's (run
	// --watch), as the API's state lookup knows.
	mux.HandleFunc("/state/{name}/{key...}", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			apiError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+": use GET")
			return
		}
		withFlow((*control).stateOf)(c, w, r)
	})
	static, _ := fs.Sub(consoleFiles, "console")
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /inspector.js", files)
	mux.Handle("GET /inspector.css", files)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "no such page: "+r.URL.Path+" (the inspector is at /, the API under /api/)")
	})
	return mux
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeAPI(w, status, map[string]string{"error": msg})
}

func writeAPI(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode the reply"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// withFlow answers 404 for a flow this run does not run.
func withFlow(h func(c *control, w http.ResponseWriter, r *http.Request)) func(c *control, w http.ResponseWriter, r *http.Request) {
	return func(c *control, w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		_, ok := c.byName[r.PathValue("name")]
		c.mu.Unlock()
		if !ok {
			apiError(w, http.StatusNotFound, "flow "+r.PathValue("name")+" is not run by this kisflow run (GET /api/flows lists those it runs)")
			return
		}
		h(c, w, r)
	}
}

func (c *control) listFlows(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	names := make([]string, len(c.flows))
	for i, f := range c.flows {
		names[i] = f.name
	}
	c.mu.Unlock()
	out := make([]flowInfo, len(names))
	for i, n := range names {
		out[i] = c.flowInfo(n)
	}
	writeAPI(w, http.StatusOK, map[string]any{"flows": out, "uptime_seconds": time.Since(c.runStart).Seconds()})
}

func (c *control) getFlow(w http.ResponseWriter, r *http.Request) {
	writeAPI(w, http.StatusOK, c.flowInfo(r.PathValue("name")))
}

func (c *control) stopFlow(w http.ResponseWriter, r *http.Request) {
	c.control(w, r, c.stop)
}

func (c *control) startFlow(w http.ResponseWriter, r *http.Request) {
	c.control(w, r, c.start)
}

func (c *control) control(w http.ResponseWriter, r *http.Request, act func(string) (int, error)) {
	name := r.PathValue("name")
	if code, err := act(name); err != nil {
		apiError(w, code, err.Error())
		return
	}
	writeAPI(w, http.StatusOK, c.flowInfo(name))
}

// deadLetters reads the flow's dead-letter file: ?offset= (default 0)
// and ?limit= (default 100, at most 1000) letters.
func (c *control) deadLetters(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if dl := c.flowSet(name).Flows[name].Stream.DeadLetter; dl != "" {
		apiError(w, http.StatusNotImplemented, "flow "+name+" sends its dead letters to connector "+dl+": read them there; the API reads only the default dead-letter file")
		return
	}
	offset, err1 := intParam(r, "offset", 0)
	limit, err2 := intParam(r, "limit", 100)
	if err := errors.Join(err1, err2); err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit = min(limit, 1000)
	path := filepath.Join(c.state, "dead-letter", name+".jsonl")
	letters, total, bad, err := readLetters(path, offset, limit)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeAPI(w, http.StatusOK, map[string]any{"flow": name, "file": path, "total": total, "offset": offset, "letters": letters, "unreadable": bad})
}

func intParam(r *http.Request, key string, def int) (int, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad %s %q: want a number from 0", key, s)
	}
	return n, nil
}

// badLine is a line of a dead-letter file that is not a letter (not
// JSON: a line cut short by a crash, or edited by hand).
type badLine struct {
	Line int    `json:"line"` // from 1
	Text string `json:"text"`
}

// readLetters returns letters offset..offset+limit of the JSON lines file
// at path, how many it holds, and every line that is not JSON (not
// counted as a letter); a missing file holds none.
func readLetters(path string, offset, limit int) ([]json.RawMessage, int, []badLine, error) {
	letters, bad := []json.RawMessage{}, []badLine{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return letters, 0, bad, nil
	}
	if err != nil {
		return nil, 0, nil, err
	}
	defer f.Close()
	// A letter holds a whole row, which may be of any length: lines are
	// read whole, not through a Scanner's bounded buffer.
	rd := bufio.NewReaderSize(f, 64<<10)
	n, line := 0, 0
	for {
		text, rerr := rd.ReadBytes('\n')
		if len(text) == 0 && rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return letters, n, bad, rerr
		}
		line++
		text = bytes.TrimRight(text, "\r\n")
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		if !json.Valid(text) {
			bad = append(bad, badLine{Line: line, Text: string(text)})
			continue
		}
		if n >= offset && len(letters) < limit {
			letters = append(letters, json.RawMessage(text))
		}
		n++
	}
}

// stateOf is the state lookup of GET /state/{flow}/{key} under /api/.
func (c *control) stateOf(w http.ResponseWriter, r *http.Request) {
	name, key := r.PathValue("name"), r.PathValue("key")
	c.mu.Lock()
	eng := c.byName[name].eng
	c.mu.Unlock()
	if eng == nil {
		eng = c.eng
	}
	if eng == nil {
		apiError(w, http.StatusNotFound, "no running job of flow "+name+" holds keyed state")
		return
	}
	view, ok := eng.States().Get(name)
	if !ok {
		apiError(w, http.StatusNotFound, "no running job of flow "+name+" holds keyed state")
		return
	}
	st, err := view(key)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if len(st) == 0 {
		apiError(w, http.StatusNotFound, "flow "+name+" holds no state for key "+key)
		return
	}
	writeAPI(w, http.StatusOK, map[string]any{"flow": name, "key": key, "state": st})
}

// flowReplaying is the status of a flow whose dead letters are being
// replayed (it cannot be started meanwhile).
const flowReplaying = "replaying"

// replayReply is the body of POST /api/flows/{name}/dead-letters/replay.
type replayReply struct {
	Flow         string `json:"flow"`
	Replayed     int    `json:"replayed"`                // letters fed back into the flow
	Out          int64  `json:"out"`                     // rows the replay wrote to the sink
	DeadLettered int64  `json:"dead_lettered"`           // letters that failed again, back in the dead-letter file
	Resumed      bool   `json:"resumed"`                 // the letters of an interrupted replay were replayed
	ReplayedFile string `json:"replayed_file,omitempty"` // where the replayed letters were moved; absent when none were
	Unreadable   int    `json:"unreadable"`              // lines of the file that are not letters (not JSON), not replayed
	// UnreadableFile is where those lines were moved, kept for a look.
	UnreadableFile string `json:"unreadable_file,omitempty"`
}

// replay feeds the flow's dead letters back into it, once: the flow must
// not be running (its job appends to the dead-letter file). The file is
// renamed FLOW.replaying.jsonl, its letters' payloads are the bounded
// source of a one-off job of the flow (kisflow.WithSource: positions and
// keyed state untouched), and letters that fail again are written apart,
// to FLOW.failed-again.jsonl. Each letter that still needs a replay is
// kept in one file only, crashes included (see replayFiles): a replay
// that fails or is cut short leaves the replaying file and discards what
// it wrote apart, so that the next replay takes the replaying file up
// again in full; one whose job read and acknowledged every letter renames
// the replaying file FLOW.replay-done.jsonl (the replay's commit), then
// adds the letters that failed again to FLOW.jsonl and the replayed ones
// to FLOW.replayed.jsonl.
func (c *control) replay(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st := c.flowSet(name).Flows[name].Stream
	switch {
	case st.DeadLetter != "":
		apiError(w, http.StatusNotImplemented, "flow "+name+" sends its dead letters to connector "+st.DeadLetter+": the API replays only the default dead-letter file")
		return
	case st.Delivery == config.ExactlyOnce:
		apiError(w, http.StatusNotImplemented, "flow "+name+" is exactly-once: its positions are committed with its sink, so its dead letters cannot be fed to it as another source")
		return
	}
	c.mu.Lock()
	f := c.byName[name]
	switch f.status {
	case flowStopped, flowFinished, flowFailed:
	case flowReplaying:
		c.mu.Unlock()
		apiError(w, http.StatusConflict, "flow "+name+" is replaying its dead letters already: wait for that replay's answer (GET /api/flows/"+name+" shows its status)")
		return
	default:
		st := f.status
		c.mu.Unlock()
		apiError(w, http.StatusConflict, "flow "+name+" is "+st+": stop it first (POST /api/flows/"+name+"/stop), its job appends to the dead-letter file")
		return
	}
	prev := f.status
	f.status = flowReplaying
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if f.status == flowReplaying {
			f.status = prev
		}
		c.mu.Unlock()
		c.notify()
	}()
	var reply *replayReply
	var code int
	var err error
	if c.ext != nil {
		err = c.ext.replayWith(name, func(eng *kisflow.Engine, set *config.Set) error {
			var rerr error
			reply, code, rerr = c.replayLetters(eng, set, name)
			return rerr
		})
		if err != nil && code == 0 {
			code = http.StatusConflict
		}
	} else {
		reply, code, err = c.replayLetters(c.eng, c.set, name)
	}
	if err != nil {
		apiError(w, code, err.Error())
		return
	}
	writeAPI(w, http.StatusOK, reply)
}

// replayFiles are the files of a flow's dead-letter replay, in
// STATE/dead-letter.
//
// A letter that still needs a replay is in exactly one of them at any
// time, a crash at any point included: in letters (FLOW.jsonl, where the
// flow's jobs write), in replaying (FLOW.replaying.jsonl, those a replay
// feeds, until it is committed) or in failedAgain (FLOW.failed-again.jsonl,
// those that failed again in a replay, once it is committed). The commit
// is the atomic rename of replaying to done: before it, failedAgain
// belongs to a replay that did not finish and is discarded (its letters
// are all still in replaying); after it, failedAgain is added to letters,
// skipping the letters already there (by letter_id: a merge cut short by
// a crash and done again adds nothing twice), and done is appended to
// replayed (FLOW.replayed.jsonl, the letters replayed, kept for a look).
type replayFiles struct {
	letters, replaying, failedAgain, done, replayed, unreadable string
}

func newReplayFiles(state, flow string) replayFiles {
	dir := filepath.Join(state, "dead-letter")
	at := func(suffix string) string { return filepath.Join(dir, flow+suffix) }
	return replayFiles{
		letters: at(".jsonl"), replaying: at(".replaying.jsonl"), failedAgain: at(".failed-again.jsonl"),
		done: at(".replay-done.jsonl"), replayed: at(".replayed.jsonl"), unreadable: at(".unreadable.jsonl"),
	}
}

// discardFailedAgain removes the letters a replay that did not commit
// wrote apart: they are all still in the replaying file.
func (rf replayFiles) discardFailedAgain() error {
	for _, p := range []string{rf.failedAgain, rf.failedAgain + ".id"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// finish completes a committed replay (no replaying file): the letters
// that failed again join the dead-letter file, the replayed ones the
// replayed file. Each step can be done again after a crash.
func (rf replayFiles) finish() error {
	if _, err := os.Stat(rf.failedAgain); err == nil {
		if err := mergeLetters(rf.letters, rf.failedAgain); err != nil {
			return fmt.Errorf("add the letters that failed again (%s) to %s: %w", rf.failedAgain, rf.letters, err)
		}
		if err := rf.discardFailedAgain(); err != nil {
			return err
		}
	}
	if _, err := os.Stat(rf.done); err == nil {
		// Only the letters are moved as replayed; the lines that are
		// not letters are kept apart, never counted as replayed.
		raw, _, bad, err := readLetters(rf.done, 0, math.MaxInt)
		if err != nil {
			return err
		}
		if len(raw) > 0 {
			if err := appendLines(rf.replayed, joinLines(raw)); err != nil {
				return fmt.Errorf("move the replayed letters (%s) to %s: %w", rf.done, rf.replayed, err)
			}
		}
		if len(bad) > 0 {
			var text []byte
			for _, b := range bad {
				text = append(append(text, b.Text...), '\n')
			}
			if err := appendLines(rf.unreadable, text); err != nil {
				return fmt.Errorf("keep the %d unreadable lines of %s in %s: %w", len(bad), rf.done, rf.unreadable, err)
			}
		}
		if err := os.Remove(rf.done); err != nil {
			return err
		}
	}
	return nil
}

// joinLines is lines, each ended by a newline.
func joinLines[T ~[]byte](lines []T) []byte {
	var text []byte
	for _, l := range lines {
		text = append(append(text, l...), '\n')
	}
	return text
}

// mergeLetters adds the lines of src that dst does not hold (by
// letter_id; every line when it has none) to dst, by writing the whole
// into a new file renamed over dst: dst is either as it was or merged.
func mergeLetters(dst, src string) error {
	add, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(dst)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var rec struct {
		LetterID string `json:"letter_id"`
	}
	have := map[string]bool{}
	for line := range bytes.Lines(old) {
		if rec.LetterID = ""; json.Unmarshal(line, &rec) == nil && rec.LetterID != "" {
			have[rec.LetterID] = true
		}
	}
	out := old
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n') // a line torn by a crash stays a line of its own
	}
	for line := range bytes.Lines(add) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if rec.LetterID = ""; json.Unmarshal(line, &rec) == nil && have[rec.LetterID] {
			continue
		}
		out = append(out, line...)
		if out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	tmp := dst + ".merging"
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		return err
	}
	if err := appendLines(tmp, out); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func (c *control) replayLetters(eng *kisflow.Engine, set *config.Set, name string) (*replayReply, int, error) {
	rf := newReplayFiles(c.state, name)
	reply := &replayReply{Flow: name}
	if _, err := os.Stat(rf.replaying); err == nil {
		// A replay that failed or was cut short: what it wrote apart
		// goes, its letters are all in the replaying file.
		if err := rf.discardFailedAgain(); err != nil {
			return nil, http.StatusInternalServerError, fmt.Errorf("discard the letters of an unfinished replay: %w", err)
		}
		reply.Resumed = true
	} else {
		// A replay committed before a crash is finished first.
		if err := rf.finish(); err != nil {
			return nil, http.StatusInternalServerError, fmt.Errorf("finish the last replay: %w", err)
		}
		if err := os.Rename(rf.letters, rf.replaying); errors.Is(err, fs.ErrNotExist) {
			return reply, 0, nil // no dead letters
		} else if err != nil {
			return nil, http.StatusInternalServerError, fmt.Errorf("move the dead letters aside: %w", err)
		}
	}
	raw, total, bad, err := readLetters(rf.replaying, 0, math.MaxInt)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	msgs := make([]*stream.Message, 0, total)
	for i, line := range raw {
		var l stream.DeadLetter
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, http.StatusInternalServerError, fmt.Errorf("%s: letter %d: %w", rf.replaying, i+1, err)
		}
		msgs = append(msgs, &stream.Message{Payload: l.Payload, Headers: l.Headers, ID: l.ID})
	}
	stay := fmt.Sprintf("its %d letters stay in %s (and only there) for the next replay, which feeds them again in full; the letters that failed again in this one were discarded with it", len(msgs), rf.replaying)
	again, err := jsonl.Open(rf.failedAgain, false)
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("replay of flow %s did not start; %s: %w", name, stay, err)
	}
	failed := func(code int, err error) (*replayReply, int, error) {
		_ = again.Close()
		if derr := rf.discardFailedAgain(); derr != nil {
			err = fmt.Errorf("%w (and removing %s failed: remove it by hand before the next replay: %v)", err, rf.failedAgain, derr)
		}
		return nil, code, err
	}
	src := &letterSource{msgs: msgs}
	opts := []kisflow.JobOption{kisflow.WithStateDir(c.state), kisflow.WithSource(src), kisflow.WithDeadLetterSink(again)}
	// The replay ends with the run: a signal drains it like any job.
	job, err := startJob(c.ctx, eng, name, c.stderr, opts...)
	if err != nil {
		return failed(http.StatusInternalServerError, fmt.Errorf("replay: start a job of flow %s (%s): %w", name, stay, set.Redactor().Error(err)))
	}
	if err := job.Run(c.ctx); err != nil {
		return failed(http.StatusInternalServerError, fmt.Errorf("replay of flow %s failed; %s: %w", name, stay, err))
	}
	if acked := src.acked.Load(); int(acked) != len(msgs) {
		return failed(http.StatusServiceUnavailable, fmt.Errorf("replay of flow %s stopped after %d of %d letters; %s", name, acked, len(msgs), stay))
	}
	if err := again.Close(); err != nil {
		return failed(http.StatusInternalServerError, fmt.Errorf("replay of flow %s: keep the letters that failed again: %w; %s", name, err, stay))
	}
	// The commit: the replaying file is renamed at once, so that from
	// here on the replay is done, and a crash finishes it at the next
	// replay.
	if err := os.Rename(rf.replaying, rf.done); err != nil {
		return failed(http.StatusInternalServerError, fmt.Errorf("replay of flow %s: commit: %w; %s", name, err, stay))
	}
	if err := rf.finish(); err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("the letters of flow %s were replayed, but %w (the next replay finishes it)", name, err)
	}
	if len(bad) > 0 {
		reply.Unreadable, reply.UnreadableFile = len(bad), rf.unreadable
		fmt.Fprintf(c.stderr, "flow %s: %d lines of the dead-letter file are not letters (not JSON) and were not replayed; they are kept in %s\n", name, len(bad), rf.unreadable)
	}
	if len(raw) > 0 {
		reply.ReplayedFile = rf.replayed
	}
	s := job.Stats()
	reply.Replayed, reply.Out, reply.DeadLettered = len(msgs), s.Out, s.DeadLettered
	fmt.Fprintf(c.stderr, "flow %s: %d dead letters replayed, %d failed again\n", name, len(msgs), s.DeadLettered)
	return reply, 0, nil
}

// appendLines appends text to dst and syncs dst.
func appendLines(dst string, text []byte) error {
	out, err := os.OpenFile(dst, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := out.Write(text); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// letterSource is the bounded source of a replay: the letters' payloads,
// then io.EOF. It counts acknowledged messages, so that the replay knows
// each letter was processed (or dead-lettered again).
type letterSource struct {
	mu    sync.Mutex
	msgs  []*stream.Message
	next  int
	acked atomic.Int64
}

func (s *letterSource) Read(_ context.Context, n int) ([]*stream.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := min(s.next+max(n, 1), len(s.msgs))
	out := s.msgs[s.next:end]
	s.next = end
	if s.next == len(s.msgs) {
		return out, io.EOF
	}
	return out, nil
}

func (s *letterSource) Ack(_ context.Context, msgs []*stream.Message) error {
	s.acked.Add(int64(len(msgs)))
	return nil
}

func (s *letterSource) Close(context.Context) error { return nil }
