package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/stream"
)

type runOptions struct {
	state    string
	flows    []string
	progress string
	every    time.Duration
	logLevel string
	from     string
	until    string
	watch    bool
}

func runCmd(reg *kisflow.Registry) *cobra.Command {
	o := runOptions{}
	cmd := &cobra.Command{
		Use:   "run DIR",
		Short: "Run every enabled flow of DIR that is bound to a source",
		Long: "Run every enabled flow in DIR whose YAML has a stream block, until its\n" +
			"source is exhausted (a file) or until SIGINT/SIGTERM (an unbounded source),\n" +
			"then drain in-flight batches, acknowledge them, commit positions and close\n" +
			"connectors. Checkpoints and dead letters are kept in DIR/.kisflow unless\n" +
			"--state names another folder. Prints where each flow starts, progress on a\n" +
			"terminal and a summary at the end.\n" +
			"Exits 0 when every flow ended cleanly, 1 when one failed, 2 on bad input,\n" +
			"3 when a signal stopped a bounded source before its end, 4 when in-flight\n" +
			"batches did not finish within drain_timeout, or waited for a function's\n" +
			"service that was unavailable when stopped (they are read again next run).\n" +
			"With --watch it keeps running and applies each change of DIR's YAML files:\n" +
			"a folder with lint errors is not applied (the errors are printed, the flows\n" +
			"go on); otherwise only the flows whose configuration changed are drained and\n" +
			"started again from their committed positions, new flows start and removed\n" +
			"or disabled ones drain and stop.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if o.watch {
				return runWatch(ctx, reg, args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			return runFlows(ctx, reg, args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&o.state, "state", "", "folder for checkpoints and dead-letter files (default DIR/.kisflow)")
	cmd.Flags().StringSliceVar(&o.flows, "flow", nil, "run only these flows (repeatable)")
	cmd.Flags().StringVar(&o.progress, "progress", "auto", "progress line: auto (on a terminal), always, never")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&o.from, "from", "", "a one-off run that leaves committed positions as they are, from: earliest, latest, committed, a time (RFC 3339 or a date) or a position of the source's form")
	cmd.Flags().StringVar(&o.until, "until", "", "a one-off run that leaves committed positions as they are, until: at_start, a time (RFC 3339 or a date) or a position of the source's form")
	cmd.Flags().BoolVar(&o.watch, "watch", false, "keep running and apply changes of DIR's YAML files: lint them, then drain and start again only the flows whose configuration changed (see the README)")
	cmd.Flags().DurationVar(&o.every, "progress-interval", time.Second, "how often the progress line is redrawn")
	_ = cmd.Flags().MarkHidden("progress-interval")
	return cmd
}

func runFlows(ctx context.Context, reg *kisflow.Registry, dir string, o runOptions, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	if modes := []string{"auto", "always", "never"}; !slices.Contains(modes, o.progress) {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --progress %q: want auto, always or never%s", o.progress, config.SuggestName(o.progress, modes))}
	}
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		return err
	}
	if err := knownFlows(set, o.flows, dir); err != nil {
		return err
	}
	// The logger and the progress line write from different goroutines;
	// whatever reaches stderr has the configuration's secrets redacted.
	red := set.Redactor()
	stderr = &lockedWriter{w: stderr, red: red}
	// Flows start on goroutines of their own and report where they start.
	stdout = &lockedWriter{w: stdout}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	names := o.flows
	if len(names) == 0 {
		for _, n := range set.FlowNames() {
			if fl := set.Flows[n]; fl.Enabled() && fl.Stream != nil {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%s: no enabled flow has a stream block (stream.source) to run", dir)}
	}
	eng, closeEngine, err := openEngine(ctx, reg, set, log, red)
	if err != nil {
		return err
	}
	defer closeEngine()

	state := o.state
	if state == "" {
		// The state belongs to the configuration, wherever it is run from.
		state = filepath.Join(dir, kisflow.DefaultStateDir)
		if err := adoptLegacyPositions(ctx, set, names, state, stdout); err != nil {
			return &exitError{code: ExitProblem, err: red.Error(err)}
		}
	}
	jobOpts := []kisflow.JobOption{kisflow.WithStateDir(state)}
	if o.from != "" || o.until != "" {
		from, err := parseRunBound(o.from, false)
		if err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("--from: %w", err)}
		}
		until, err := parseRunBound(o.until, true)
		if err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("--until: %w", err)}
		}
		jobOpts = append(jobOpts, kisflow.WithBounds(from, until))
	}
	// Each flow runs as its own job, which the admin API can stop and
	// start again while the others run on. Each starts on its own: one
	// whose connector is not up yet waits (status waiting, retried with
	// backoff) while the others run. A flow that cannot start at all
	// (a fatal error) stops the run before it goes on, as does a signal.
	rctx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	ctl := newControl(rctx, eng, set, state, jobOpts, stderr)
	first := make(chan error, len(names))
	gate := make(chan struct{})
	for _, n := range names {
		ctl.launch(n, stdout, first, gate)
	}
	var startErr error
	for range names {
		if err := <-first; err != nil && startErr == nil {
			startErr = err
		}
	}
	if startErr != nil {
		cancelRun()
	}
	close(gate) // the flows that are ready run (unless cancelled just above)
	if startErr != nil {
		ctl.wait()
		if ctx.Err() != nil {
			// SIGINT/SIGTERM during start-up: nothing ran; a bounded
			// source was stopped before its end.
			fmt.Fprintln(stdout, "stopped by signal during start-up; nothing was processed")
			for _, n := range names {
				if o.until != "" || bounded(set, n) {
					return &exitError{code: ExitCutShort}
				}
			}
			return nil
		}
		if o.state == "" && errors.Is(startErr, fs.ErrPermission) {
			startErr = fmt.Errorf("%w (the state folder is %s unless --state names another)", startErr, state)
		}
		return &exitError{code: ExitProblem, err: red.Error(startErr)}
	}

	start := time.Now()
	defer eng.Console().Set(ctl.handler())()
	runDone := make(chan struct{})
	go ctl.sample(runDone)
	showProgress := o.progress == "always" || (o.progress == "auto" && isTerminal(stderr))
	if showProgress {
		done := make(chan struct{})
		go func() { ctl.wait(); close(done) }()
		progressLoop(done, stderr, names, ctl.jobs, start, o.every)
	} else {
		ctl.wait()
	}
	close(runDone)
	jobs := make([]*kisflow.Job, len(names))
	errs := make([]error, len(jobs))
	took := make([]time.Duration, len(jobs))
	for i, n := range names {
		jobs[i], took[i], errs[i] = ctl.result(n)
	}
	runTime := time.Since(start)

	code := ExitOK
	open := 0 // windows the stop left unemitted
	for i, j := range jobs {
		if j == nil {
			// The flow never started: a fatal error after a wait for a
			// connector, or a signal during the wait.
			if errs[i] != nil {
				fmt.Fprintf(stderr, "flow %s failed: %v\n", names[i], errs[i])
				code = ExitProblem
				continue
			}
			fmt.Fprintf(stdout, "flow %s: stopped by signal while it waited for a connector; nothing was processed\n", names[i])
			if code == ExitOK && (o.until != "" || bounded(set, names[i])) {
				code = ExitCutShort
			}
			continue
		}
		s := j.Stats()
		elapsed := runTime
		if took[i] > 0 {
			elapsed = took[i] // the last job, started through the admin API
		}
		rate := float64(s.Committed) / max(elapsed.Seconds(), 1e-9)
		if sp := j.StartPosition(); s.Read == 0 && errs[i] == nil && j.Exhausted() && sp.Position != "" {
			// A bounded source read to its end before: say so, rather
			// than a bare "0 rows read".
			fmt.Fprintf(stdout, "flow %s: nothing new in %s since position %s\n", names[i], sp.Source, sp.Position)
		} else {
			fmt.Fprintf(stdout, "flow %s: %d rows read, %d committed, %d written, %d dead-lettered, %d retries in %s (%s rows/s)\n",
				names[i], s.Read, s.Committed, s.Out, s.DeadLettered, s.Retries, elapsed.Round(time.Millisecond), human(rate))
		}
		if s.DeadLettered > 0 {
			fmt.Fprintf(stdout, "flow %s: dead letters are in %s\n", names[i], deadLetterWhere(set, names[i], state))
		}
		if n := j.OpenWindows(); n > 0 && j.WindowsKept() {
			fmt.Fprintf(stdout, "flow %s: %d open windows are kept for the next run\n", names[i], n)
		} else if n > 0 {
			open += n
			fmt.Fprintf(stdout, "flow %s: %d open windows were not emitted: windows are not kept across runs yet\n", names[i], n)
		}
		switch {
		case errs[i] != nil && !errors.Is(errs[i], kisflow.ErrDrainTimeout):
			fmt.Fprintf(stderr, "flow %s failed: %v\n", names[i], errs[i])
			code = ExitProblem
		case errs[i] != nil:
			fmt.Fprintf(stderr, "flow %s: %v\n", names[i], errs[i])
			if code != ExitProblem {
				code = ExitNotDrained
			}
		case ctx.Err() != nil && (o.until != "" || bounded(set, names[i])) && !j.Exhausted():
			fmt.Fprintf(stderr, "flow %s: stopped before the end of its source; a new run resumes from the last committed position\n", names[i])
			if code == ExitOK {
				code = ExitCutShort
			}
		}
	}
	switch {
	case ctx.Err() != nil && open > 0:
		fmt.Fprintf(stdout, "stopped by signal; in-flight batches were drained and committed, but %d open windows were not emitted: windows are not kept across runs yet\n", open)
	case ctx.Err() != nil && code == ExitOK:
		fmt.Fprintln(stdout, "stopped by signal; in-flight batches were drained and committed")
	}
	if code != ExitOK {
		return &exitError{code: code}
	}
	return nil
}

// loadConfig reads the configuration of dir as run, dry-run and echo
// need it: warnings do not stop them but are printed on stderr (a misspelt
// key is otherwise silently ignored); any lint error is an exit 2 with
// every error printed as file:line: message.
func loadConfig(reg *kisflow.Registry, dir string, stderr io.Writer) (*config.Set, error) {
	probs, err := config.Lint(dir, reg.LintOptions()...)
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	for _, p := range probs {
		if p.Severity == config.SevWarning {
			fmt.Fprintln(stderr, p)
		}
	}
	set, err := config.Import(dir, reg.LintOptions()...)
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	return set, nil
}

// reportStart prints where the job of flow name starts.
func reportStart(w io.Writer, name string, sp kisflow.StartPosition) {
	if sp.Rekeyed {
		fmt.Fprintf(w, "flow %s: position kept under the flow name by an earlier version, now under %s\n", name, sp.Key)
	}
	if sp.TakenOver != "" {
		fmt.Fprintf(w, "flow %s: position %s taken over from %s, where the flow's other stream.delivery kept it\n", name, sp.Position, sp.TakenOver)
	}
	stop := ""
	if !sp.Stop.IsZero() {
		stop = fmt.Sprintf("; stopping at %s", sp.Stop)
	}
	switch {
	case sp.Detached:
		fmt.Fprintf(w, "flow %s: one-off run from %s%s; the committed position is left as it is\n", name, sp.Start, stop)
	case !sp.Start.IsZero():
		fmt.Fprintf(w, "flow %s: starting at %s (stream.start), not at the committed position%s\n", name, sp.Start, stop)
	case stop != "" && sp.Position != "":
		fmt.Fprintf(w, "flow %s: resuming at position %s%s\n", name, sp.Position, stop)
	case stop != "" && sp.Resumable:
		fmt.Fprintf(w, "flow %s: no committed position: reading from the start%s\n", name, stop)
	case stop != "":
		fmt.Fprintf(w, "flow %s: resuming at the position source %s keeps (its consumer group's; a new group starts where the source starts a new reader)%s\n", name, sp.Source, stop)
	case sp.Anchored:
		fmt.Fprintf(w, "flow %s: no position: starting at the source's end, position %s (committed now: a stop before the first row resumes there)\n", name, sp.Position)
	case sp.Position != "" && sp.CommittedAt.IsZero():
		fmt.Fprintf(w, "flow %s: resuming at position %s (commit time unknown)\n", name, sp.Position)
	case sp.Position != "":
		fmt.Fprintf(w, "flow %s: resuming at position %s (committed at %s)\n", name, sp.Position, sp.CommittedAt.UTC().Format(time.RFC3339))
	case sp.Resumable:
		fmt.Fprintf(w, "flow %s: no position: reading from the start\n", name)
	default:
		fmt.Fprintf(w, "flow %s: no position stored: source %s keeps its own (a consumer group) or has none\n", name, sp.Source)
	}
}

// adoptLegacyPositions takes over, into the checkpoint store of state,
// the positions that an earlier version kept in the current folder
// (.kisflow/checkpoints.db, under the flow name alone) for the flows to
// run at-least-once; each is then moved to its flow's state key by the
// job, once. A position is adopted only when the new store has none for
// the flow, and is deleted from the old store, so that another
// configuration with a flow of the same name does not take it too.
func adoptLegacyPositions(ctx context.Context, set *config.Set, names []string, state string, w io.Writer) error {
	oldPath := filepath.Join(kisflow.DefaultStateDir, "checkpoints.db")
	newPath := filepath.Join(state, "checkpoints.db")
	if _, err := os.Stat(oldPath); err != nil {
		return nil // nothing kept there
	}
	if a, b := absPath(oldPath), absPath(newPath); a == b {
		return nil
	}
	var flows []string
	for _, n := range names {
		if fl := set.Flows[n]; fl != nil && fl.Stream != nil && fl.Stream.Delivery != config.ExactlyOnce {
			flows = append(flows, n)
		}
	}
	if len(flows) == 0 {
		return nil
	}
	old, err := checkpoint.OpenSQLite(ctx, oldPath)
	if err != nil {
		return err
	}
	defer old.Close()
	cur, err := checkpoint.OpenSQLite(ctx, newPath)
	if err != nil {
		return err
	}
	defer cur.Close()
	for _, n := range flows {
		pos, err := cur.Adopt(ctx, old, n)
		if err != nil {
			return err
		}
		if pos != "" {
			fmt.Fprintf(w, "flow %s: position %s taken over from %s, where an earlier version kept it\n", n, pos, oldPath)
		}
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// startJob prepares the job of flow name. A connector that fails to start
// with an error not marked stream.Fatal is taken as a service that is not
// up yet, the same weather as an outage during the run: the start is tried
// again with capped backoff and jitter until it succeeds or ctx ends. The
// wait is reported on w once when it begins and once when it ends.
func startJob(ctx context.Context, eng *kisflow.Engine, name string, w io.Writer, opts ...kisflow.JobOption) (*kisflow.Job, error) {
	return waitJob(ctx, eng, name, w, nil, opts...)
}

// waitJob is startJob that also calls onWait (when not nil) each time the
// start begins to wait for a connector, with its name.
func waitJob(ctx context.Context, eng *kisflow.Engine, name string, w io.Writer, onWait func(conn string), opts ...kisflow.JobOption) (*kisflow.Job, error) {
	waiting, since := "", time.Time{}
	up := func() {
		if waiting != "" {
			fmt.Fprintf(w, "flow %s: connector %s is up after %s\n", name, waiting, time.Since(since).Round(100*time.Millisecond))
		}
	}
	for attempt := 1; ; attempt++ {
		j, err := eng.Job(ctx, name, opts...)
		var se *kisflow.StartError
		if err == nil || !errors.As(err, &se) || stream.IsFatal(err) || ctx.Err() != nil {
			if err == nil {
				up()
			}
			return j, err
		}
		if se.Connector != waiting {
			up()
			waiting, since, attempt = se.Connector, time.Now(), 1
			fmt.Fprintf(w, "flow %s: waiting for connector %s: %v\n", name, se.Connector, se.Err)
			if onWait != nil {
				onWait(se.Connector)
			}
		}
		t := time.NewTimer(filter.CappedBackoff(startBackoff, attempt, startBackoffCap))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for connector %s: %w", se.Connector, ctx.Err())
		case <-t.C:
		}
	}
}

// The wait between starts of a connector that is not up yet: doubling
// from startBackoff up to startBackoffCap, as for an outage during a run.
const (
	startBackoff    = 50 * time.Millisecond
	startBackoffCap = 5 * time.Second
)

// Exit codes of run beyond ExitProblem and ExitUsage.
const (
	ExitCutShort   = 3 // a signal stopped a bounded source before its end
	ExitNotDrained = 4 // in-flight batches did not finish within drain_timeout
)

// parseRunBound reads --from (stop false) or --until (stop true): a word,
// a time, or else a position of the source's form.
func parseRunBound(s string, stop bool) (stream.Bound, error) {
	switch s {
	case "", "committed":
		if stop && s != "" {
			return stream.Bound{}, errors.New("committed is a start position (want at_start, a time or a position)")
		}
		return stream.Bound{}, nil
	case "earliest", "latest":
		if stop {
			return stream.Bound{}, fmt.Errorf("%s is a start position (want at_start, a time or a position)", s)
		}
		return stream.Bound{Kind: stream.BoundKind(s)}, nil
	case "at_start":
		if !stop {
			return stream.Bound{}, errors.New("at_start is a stop position (want earliest, latest, committed, a time or a position)")
		}
		return stream.Bound{Kind: stream.AtStart}, nil
	}
	if t, err := config.ParseBoundTime(s); err == nil {
		return stream.Bound{Kind: stream.AtTime, Time: t}, nil
	}
	return stream.Bound{Kind: stream.AtPosition, Position: s}, nil
}

// bounded reports whether a flow's source has an end: a file that is not
// followed, a generator with a count.
func bounded(set *config.Set, flow string) bool {
	if b := set.Flows[flow].Stream.Stop; b != nil && b.Kind != "" && b.Kind != config.BoundCommitted {
		return true
	}
	c := set.Conns[set.Flows[flow].Stream.Source]
	if c == nil {
		return false
	}
	switch c.Type {
	case "file":
		return c.Params["follow"] != "true"
	case "generator":
		n, err := strconv.Atoi(c.Params["count"])
		return err == nil && n > 0
	}
	return false
}

func deadLetterWhere(set *config.Set, flow, state string) string {
	if st := set.Flows[flow].Stream; st != nil && st.DeadLetter != "" {
		return "connector " + st.DeadLetter
	}
	return state + "/dead-letter/" + flow + ".jsonl"
}

// progressLoop redraws one status line every interval until done.
func progressLoop(done <-chan struct{}, w io.Writer, names []string, current func() []*kisflow.Job, start time.Time, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := make([]int64, len(names))
	lastAt := start
	for {
		select {
		case <-done:
			fmt.Fprint(w, "\r\033[K")
			return
		case now := <-t.C:
			var parts []string
			for i, j := range current() {
				if j == nil {
					parts = append(parts, names[i]+": waiting")
					continue
				}
				s := j.Stats()
				if s.Committed < last[i] {
					last[i] = 0 // the admin API started a new job
				}
				rate := float64(s.Committed-last[i]) / now.Sub(lastAt).Seconds()
				last[i] = s.Committed
				p := fmt.Sprintf("%s: %d rows, %s rows/s, %d errors", names[i], s.Committed, human(rate), s.DeadLettered)
				if d, total, ok := j.Progress(); ok && total > 0 && d > 0 {
					eta := time.Duration(float64(now.Sub(start)) * float64(total-d) / float64(d))
					p += fmt.Sprintf(", %d%%, ETA %s", 100*d/total, eta.Round(time.Second))
				}
				parts = append(parts, p)
			}
			lastAt = now
			fmt.Fprintf(w, "\r\033[K%s", strings.Join(parts, " | "))
		}
	}
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu  sync.Mutex
	w   io.Writer
	red *config.Redactor // nil: Redact's patterns only
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := io.WriteString(l.w, l.red.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func isTerminal(w io.Writer) bool {
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// openEngine builds the engine of set; the function it returns closes the
// engine's connectors and plugins within 30s, logging what fails.
func openEngine(ctx context.Context, reg *kisflow.Registry, set *config.Set, log *slog.Logger, red *config.Redactor) (*kisflow.Engine, func(), error) {
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(log))
	if err != nil {
		return nil, nil, &exitError{code: ExitUsage, err: red.Error(err)}
	}
	return eng, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := eng.Close(cctx); err != nil {
			log.Error("close connectors", "err", red.Redact(err.Error()))
		}
	}, nil
}
