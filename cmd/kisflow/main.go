// Command kisflow runs, checks and inspects KisFlow flows.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/bundle"
	"github.com/kisflow-go/kisflow/internal/cli"
)

// gcPercent is the binary's GOGC unless the environment sets one. A stream
// processor's live heap is small and bounded (the in-flight batches), so
// with Go's default of 100 the collector runs almost without pause at high
// row rates; 400 trades a few more megabytes for 30-50% more rows/s (see
// the README's performance section).
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	reg := kisflow.NewRegistry()
	if err := bundle.Install(reg); err != nil {
		fmt.Fprintln(os.Stderr, "kisflow:", err)
		os.Exit(cli.ExitUsage)
	}
	os.Exit(cli.Main(reg, os.Args[1:], os.Stdout, os.Stderr))
}
