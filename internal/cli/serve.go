package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/remote"
)

type serveOptions struct {
	o        remote.ServeOptions
	funcs    []string
	logLevel string
}

func serveCmd(reg *kisflow.Registry) *cobra.Command {
	so := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve DIR",
		Short: "Serve the functions of DIR to flows in other processes (remote functions)",
		Long: "Serve, over gRPC, every function of DIR that has a body in this binary (the\n" +
			"YAML-only ones in the stock binary; a project's own binary adds its Go\n" +
			"functions) to flows whose connector of type remote names this service. The\n" +
			"provider registers itself (address, functions, version, group, weight) in the\n" +
			"registry, refreshes the registration every third of --ttl, and on\n" +
			"SIGINT/SIGTERM deregisters, finishes the calls in flight and exits 0 (calls\n" +
			"still running after 10s are cut, and it exits 1). A\n" +
			"registry unreachable at start is logged and tried again with backoff while\n" +
			"the provider serves. Flags default to the serve block of the global file,\n" +
			"under the same names. Prints `serving SERVICE on ADDRESS: FUNCTIONS` once\n" +
			"registered (or once the first attempt to register failed).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serveDir(ctx, cmd, reg, args[0], so, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&so.o.Service, "service", "", "the service's name in the registry (default: the serve block's, else DIR's folder name)")
	f.StringVar(&so.o.Registry, "registry", "nats://127.0.0.1:4222", "the registry: nats://host[:port] (port 4222 when not given), or none (callers list this provider statically or by DNS)")
	f.StringVar(&so.o.Listen, "listen", "127.0.0.1:0", "the gRPC listen address; port 0 takes any free port and registers it")
	f.StringVar(&so.o.Version, "version", "", "the version callers may ask for")
	f.StringVar(&so.o.Group, "group", "", "the group callers may ask for")
	f.IntVar(&so.o.Weight, "weight", remote.DefaultWeight, "the weight load balancers give this provider")
	f.StringVar(&so.o.Bucket, "bucket", remote.DefaultBucket, "the registry's NATS key-value bucket")
	f.DurationVar(&so.o.TTL, "ttl", remote.DefaultTTL, "a registration's life without a heartbeat: callers drop a killed provider after it")
	f.StringSliceVar(&so.funcs, "func", nil, "serve only these functions (repeatable)")
	f.StringVar(&so.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	return cmd
}

func serveDir(ctx context.Context, cmd *cobra.Command, reg *kisflow.Registry, dir string, so serveOptions, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(so.logLevel)); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("bad --log-level %q", so.logLevel)}
	}
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		return err
	}
	red := set.Redactor()
	stderr = &lockedWriter{w: stderr, red: red}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o := so.o
	if g := set.Global; g != nil && g.Serve != nil {
		// The global file's serve block, where no flag was given.
		sv, fl := g.Serve, cmd.Flags()
		pick := func(name string, dst *string, v string) {
			if !fl.Changed(name) && v != "" {
				*dst = v
			}
		}
		pick("service", &o.Service, sv.Service)
		pick("registry", &o.Registry, sv.Registry)
		pick("listen", &o.Listen, sv.Listen)
		pick("version", &o.Version, sv.Version)
		pick("group", &o.Group, sv.Group)
		pick("bucket", &o.Bucket, sv.Bucket)
		if !fl.Changed("weight") && sv.Weight != 0 {
			o.Weight = sv.Weight
		}
		if !fl.Changed("ttl") && sv.TTL != 0 {
			o.TTL = time.Duration(sv.TTL)
		}
	}
	if o.Service == "" {
		// DIR's folder name, as --help says.
		abs, err := filepath.Abs(dir)
		if err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("give the service a name: --service NAME (%v)", err)}
		}
		o.Service = filepath.Base(abs) // checkServe checks it
	}
	if err := checkServe(o); err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	eng, closeEngine, err := openEngine(ctx, reg, set, log, red)
	if err != nil {
		return err
	}
	defer closeEngine()
	if err := eng.Start(ctx); err != nil {
		return &exitError{code: ExitProblem, err: red.Error(err)}
	}
	names := so.funcs
	if len(names) == 0 {
		names = slices.Sorted(func(yield func(string) bool) {
			for n := range set.Funcs {
				if !yield(n) {
					return
				}
			}
		})
	}
	for _, n := range names {
		if err := eng.CheckInvoke(ctx, n); err != nil {
			if len(so.funcs) > 0 {
				return &exitError{code: ExitUsage, err: red.Error(err)}
			}
			log.Info("not served", "func", n, "why", red.Redact(err.Error()))
			continue
		}
		o.Funcs = append(o.Funcs, n)
	}
	o.Logger = log
	o.Ready = func(p remote.Provider) {
		fmt.Fprintf(stdout, "serving %s on %s: %s\n", p.Service, p.Addr, strings.Join(p.Funcs, ", "))
	}
	if err := remote.Serve(ctx, eng, o); err != nil {
		if errors.Is(err, remote.ErrCallsCut) {
			fmt.Fprintln(stdout, "stopped by signal; deregistered, calls in flight cut")
		}
		return &exitError{code: ExitProblem, err: red.Error(err)}
	}
	fmt.Fprintln(stdout, "stopped by signal; deregistered and drained")
	return nil
}

// minTTL is the shortest registration TTL serve accepts: refreshed every
// third of it, a shorter one would load the registry for nothing.
const minTTL = time.Second

// checkServe refuses the settings serve cannot use (bad usage, exit 2):
// those remote.ServeOptions.Validate refuses, a weight below 1 and a TTL
// below minTTL.
func checkServe(o remote.ServeOptions) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if o.Weight < 1 {
		return fmt.Errorf("--weight %d: a weight is a whole number of at least 1 (to send a provider no traffic, stop it or give it a group no caller asks for)", o.Weight)
	}
	if o.TTL < minTTL {
		return fmt.Errorf("--ttl %s: a registration's TTL is at least %s", o.TTL, minTTL)
	}
	return nil
}
