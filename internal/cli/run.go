package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

type runOptions struct {
	state    string
	flows    []string
	progress string
	every    time.Duration
	logLevel string
}

func runCmd(reg *kisflow.Registry) *cobra.Command {
	o := runOptions{}
	cmd := &cobra.Command{
		Use:   "run DIR",
		Short: "Run every enabled flow of DIR that is bound to a source",
		Long: "Run every enabled flow in DIR whose YAML has a stream block, until its\n" +
			"source is exhausted (a file) or until SIGINT/SIGTERM (an unbounded source),\n" +
			"then drain in-flight batches, acknowledge them, commit positions and close\n" +
			"connectors. Prints progress on a terminal and a summary at the end.\n" +
			"Exits 0 when every flow ended cleanly, 1 when one failed, 2 on bad input.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runFlows(ctx, reg, args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&o.state, "state", kisflow.DefaultStateDir, "folder for checkpoints and dead-letter files")
	cmd.Flags().StringSliceVar(&o.flows, "flow", nil, "run only these flows (repeatable)")
	cmd.Flags().StringVar(&o.progress, "progress", "auto", "progress line: auto (on a terminal), always, never")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	cmd.Flags().DurationVar(&o.every, "progress-interval", time.Second, "how often the progress line is redrawn")
	_ = cmd.Flags().MarkHidden("progress-interval")
	return cmd
}

func runFlows(ctx context.Context, reg *kisflow.Registry, dir string, o runOptions, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	set, err := config.Import(dir, reg.LintOptions()...)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	// The logger and the progress line write from different goroutines;
	// whatever reaches stderr has the configuration's secrets redacted.
	red := set.Redactor()
	stderr = &lockedWriter{w: stderr, red: red}
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
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(log))
	if err != nil {
		return &exitError{code: ExitUsage, err: red.Error(err)}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := eng.Close(cctx); err != nil {
			log.Error("close connectors", "err", err)
		}
	}()

	jobs := make([]*kisflow.Job, len(names))
	for i, n := range names {
		if jobs[i], err = eng.Job(ctx, n, kisflow.WithStateDir(o.state)); err != nil {
			if ctx.Err() != nil {
				// SIGINT/SIGTERM during start-up: a clean stop, nothing ran.
				fmt.Fprintln(stdout, "stopped by signal during start-up; nothing was processed")
				return nil
			}
			return &exitError{code: ExitProblem, err: red.Error(err)}
		}
	}

	start := time.Now()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.Run(ctx)
		}()
	}
	showProgress := o.progress == "always" || (o.progress == "auto" && isTerminal(stderr))
	if showProgress {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		progressLoop(done, stderr, names, jobs, start, o.every)
	} else {
		wg.Wait()
	}
	elapsed := time.Since(start)

	failed := false
	for i, j := range jobs {
		s := j.Stats()
		rate := float64(s.Committed) / max(elapsed.Seconds(), 1e-9)
		fmt.Fprintf(stdout, "flow %s: %d rows read, %d committed, %d written, %d dead-lettered, %d retries in %s (%s rows/s)\n",
			names[i], s.Read, s.Committed, s.Out, s.DeadLettered, s.Retries, elapsed.Round(time.Millisecond), human(rate))
		if s.DeadLettered > 0 {
			fmt.Fprintf(stdout, "flow %s: dead letters are in %s\n", names[i], deadLetterWhere(set, names[i], o.state))
		}
		if errs[i] != nil {
			failed = true
			fmt.Fprintf(stderr, "flow %s failed: %v\n", names[i], errs[i])
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stdout, "stopped by signal; in-flight batches were drained and committed")
	}
	if failed {
		return &exitError{code: ExitProblem}
	}
	return nil
}

func deadLetterWhere(set *config.Set, flow, state string) string {
	if st := set.Flows[flow].Stream; st != nil && st.DeadLetter != "" {
		return "connector " + st.DeadLetter
	}
	return state + "/dead-letter/" + flow + ".jsonl"
}

// progressLoop redraws one status line every interval until done.
func progressLoop(done <-chan struct{}, w io.Writer, names []string, jobs []*kisflow.Job, start time.Time, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := make([]int64, len(jobs))
	lastAt := start
	for {
		select {
		case <-done:
			fmt.Fprint(w, "\r\033[K")
			return
		case now := <-t.C:
			var parts []string
			for i, j := range jobs {
				s := j.Stats()
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
