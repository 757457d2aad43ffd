package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

func dryRunCmd(reg *kisflow.Registry) *cobra.Command {
	var flows []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "dry-run DIR",
		Short: "Start every connector of DIR, check what it needs, and stop",
		Long: "Start every connector of DIR as run does, once, and check that it can reach its\n" +
			"service and that what it uses exists or can be created (a table, a stream, a\n" +
			"topic, a queue, a file, a listen address), then close them all. No message is\n" +
			"read, acknowledged or written. Prints one line per connector, ok or the error.\n" +
			"With --flow, only the connectors those flows use. Exits 0 when every connector\n" +
			"is ok, 1 when one is not, 2 when DIR cannot be read or has a lint error.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return dryRun(ctx, reg, args[0], flows, timeout, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringSliceVar(&flows, "flow", nil, "check only the connectors of these flows (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long each connector may take to start and be checked")
	return cmd
}

func dryRun(ctx context.Context, reg *kisflow.Registry, dir string, flows []string, timeout time.Duration, stdout, stderr io.Writer) error {
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		return err
	}
	if err := knownFlows(set, flows, dir); err != nil {
		return err
	}
	red := set.Redactor()
	stdout, stderr = red.Writer(stdout), &lockedWriter{w: stderr, red: red}
	uses := set.ConnUses(flows...)
	names := sortedNames(uses)
	if len(flows) == 0 {
		names = sortedNames(set.Conns) // unused connectors too
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A dry run checks connectors only, beside a run that may hold the
	// admin address: it starts no admin server.
	eng, closeEngine, err := openEngine(ctx, reg, withoutAdmin(set), log, red)
	if err != nil {
		return err
	}
	defer closeEngine()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	err = eng.Start(sctx)
	cancel()
	if err != nil {
		fmt.Fprintf(stdout, "plugins: %v\n", err)
		return &exitError{code: ExitProblem, err: errors.New("the plugins of the global document did not start; no connector was checked")}
	}
	failed := 0
	for _, n := range names {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := eng.CheckConnector(cctx, n, uses[n])
		late := errors.Is(cctx.Err(), context.DeadlineExceeded)
		cancel()
		typ, status := set.Conns[n].Type, "ok"
		if err != nil {
			failed++
			// The engine's errors start with the connector's name and
			// type, which the line already gives.
			msg := err.Error()
			if rest, ok := strings.CutPrefix(msg, fmt.Sprintf("connector %q (type %s) failed to start: ", n, typ)); ok {
				msg = "cannot start: " + rest
			} else {
				msg = strings.TrimPrefix(msg, fmt.Sprintf("connector %q (type %s): ", n, typ))
			}
			if late {
				msg = fmt.Sprintf("no answer within %s: %s", timeout, msg)
			}
			status = "FAILED: " + msg
		}
		fmt.Fprintf(stdout, "connector %s (type %s%s): %s\n", n, typ, useText(uses[n]), status)
		if ctx.Err() != nil {
			return &exitError{code: ExitProblem, err: errors.New("stopped by signal")}
		}
	}
	if failed > 0 {
		return &exitError{code: ExitProblem, err: fmt.Errorf("%d of %d connector(s) failed the check", failed, len(names))}
	}
	fmt.Fprintf(stderr, "ok: %d connector(s) started and checked\n", len(names))
	return nil
}

// useText names the uses of a connector: ", source, sink".
func useText(u config.ConnUse) string {
	var s []string
	if u.Source {
		s = append(s, "source")
	}
	if u.Sink {
		s = append(s, "sink")
	}
	if u.Load {
		s = append(s, "load")
	}
	if len(s) == 0 {
		return ""
	}
	return ", " + strings.Join(s, ", ")
}
