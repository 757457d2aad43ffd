// Package cli implements the kisflow command line: each command is a cobra
// command over a registry the binary's main package fills.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitProblem = 1 // the command ran and found problems (lint errors, failed rows)
	ExitUsage   = 2 // bad arguments, unreadable input
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// Main runs the CLI with args (without the program name) and returns the
// process exit code.
func Main(reg *kisflow.Registry, args []string, stdout, stderr io.Writer) int {
	return MainContext(context.Background(), reg, args, stdout, stderr)
}

// MainContext is Main with a context: cancelling it stops `run` as a
// signal does (drain, then exit).
func MainContext(ctx context.Context, reg *kisflow.Registry, args []string, stdout, stderr io.Writer) int {
	root := newRoot(reg, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "kisflow:", config.Redact(ee.err.Error()))
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "kisflow:", config.Redact(err.Error()))
	return ExitUsage
}

func newRoot(reg *kisflow.Registry, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "kisflow",
		Short:         "Run, check and inspect KisFlow flows",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCmd(reg), positionsCmd(reg), lintCmd(reg), testCmd(reg), graphCmd(reg), listCmd(reg), serveCmd(reg), echoCmd(reg), dryRunCmd(reg), newCmd(), versionCmd())
	return root
}

func lintCmd(reg *kisflow.Registry) *cobra.Command {
	return &cobra.Command{
		Use:   "lint DIR",
		Short: "Check every KisFlow YAML file below DIR",
		Long: "Check every .yml and .yaml file below DIR and print each problem as\n" +
			"file:line: message. Exits 0 when there are no errors (warnings allowed),\n" +
			"1 when there are errors, 2 when DIR cannot be read.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			probs, err := config.Lint(args[0], reg.LintOptions()...)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			nerr, nwarn := 0, 0
			for _, p := range probs {
				fmt.Fprintln(cmd.OutOrStdout(), p)
				if p.Severity == config.SevError {
					nerr++
				} else {
					nwarn++
				}
			}
			if nerr > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d error(s), %d warning(s)\n", nerr, nwarn)
				return &exitError{code: ExitProblem}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "ok: %s (%d warning(s))\n", args[0], nwarn)
			return nil
		},
	}
}

// Version is the module version of the running binary, or "devel".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kisflow version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "kisflow %s (%s %s/%s)\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
