// Command kisflow runs, checks and inspects KisFlow flows.
package main

import (
	"fmt"
	"os"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/bundle"
	"github.com/kisflow-go/kisflow/internal/cli"
)

func main() {
	reg := kisflow.NewRegistry()
	if err := bundle.Install(reg); err != nil {
		fmt.Fprintln(os.Stderr, "kisflow:", err)
		os.Exit(cli.ExitUsage)
	}
	os.Exit(cli.Main(reg, os.Args[1:], os.Stdout, os.Stderr))
}
