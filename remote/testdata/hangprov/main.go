// Command hangprov is kisflow's command line with one Go function more,
// Hang, which sleeps an hour whatever its context says: the provider of
// the tests of a drain that calls in flight outlast.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/app"
)

func main() {
	reg := kisflow.NewRegistry()
	reg.MustRegister("Hang", kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rows []any) error {
		fmt.Fprintln(os.Stderr, "Hang called")
		time.Sleep(time.Hour) // ignores ctx, as a function stuck in a call without one does
		return f.CommitRowBatch(rows)
	}))
	os.Exit(app.Main(reg))
}
