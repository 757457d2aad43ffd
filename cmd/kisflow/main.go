// Command kisflow runs, checks and inspects KisFlow flows, and scaffolds
// new projects. It is app.Main over a registry with the bundled connectors.
package main

import (
	"os"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/app"
)

func main() {
	os.Exit(app.Main(kisflow.NewRegistry()))
}
