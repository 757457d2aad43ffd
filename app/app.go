// Package app is the kisflow command line for a project's own binary: its
// main builds a registry, registers its functions and calls Main, and gets
// run, serve, lint, test, graph, new and version with every bundled connector:
// `kisflow test` through the project's binary runs its Go functions too.
//
//	func main() {
//		reg := kisflow.NewRegistry()
//		reg.MustRegister("Enrich", Enrich)
//		os.Exit(app.Main(reg))
//	}
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/all"
	"github.com/kisflow-go/kisflow/internal/cli"
)

// GCPercent is the GOGC that Main sets unless the environment sets one. A
// stream processor's live heap is small and bounded (the in-flight
// batches), so with Go's default of 100 the collector runs almost without
// pause at high row rates; 400 trades a few more megabytes for 30-50% more
// rows/s (see the README's performance section).
const GCPercent = 400

// InstallConnectors registers every bundled connector type in reg: memory,
// file, generator, http, sqlite/mysql/postgres, redis, nats, kafka,
// rabbitmq, mqtt and remote.
func InstallConnectors(reg *kisflow.Registry) error { return all.Install(reg) }

// Main installs the bundled connectors into reg (unless reg already has
// them), runs the command line on os.Args and returns the exit code.
func Main(reg *kisflow.Registry) int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
	// go-redis prints its connection failures through a logger of its
	// own, shared by the process, straight to stderr. The runtime reports
	// an outage once when it starts and once when it ends; go-redis's lines
	// go to the default slog logger at debug level, redacted.
	goredis.SetLogger(redisLog{})
	if len(reg.DriverTypes()) == 0 {
		if err := InstallConnectors(reg); err != nil {
			fmt.Fprintln(os.Stderr, "kisflow:", err)
			return cli.ExitUsage
		}
	}
	return Run(context.Background(), reg, os.Args[1:], os.Stdout, os.Stderr)
}

// Run runs the command line with args (without the program name) and
// returns the exit code: 0 ok, 1 problems found (lint errors, a failed
// flow), 2 bad usage or input. Cancelling ctx stops `run` as SIGTERM does.
func Run(ctx context.Context, reg *kisflow.Registry, args []string, stdout, stderr io.Writer) int {
	return cli.MainContext(ctx, reg, args, stdout, stderr)
}

// redisLog passes go-redis's log lines to slog at debug level.
type redisLog struct{}

func (redisLog) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, config.Redact(fmt.Sprintf(format, v...)), "from", "go-redis")
}
