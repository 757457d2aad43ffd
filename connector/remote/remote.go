// Package remote is the `remote` connector type: a function naming a
// connector of this type has no local body; each of its calls goes to a
// provider of the connector's service (a process running `kisflow serve`),
// found through a registry and chosen by a cluster strategy and a load
// balancer (see package github.com/kisflow-go/kisflow/remote).
package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	rpc "github.com/kisflow-go/kisflow/remote"
)

// Type is the connector type this package registers.
const Type = "remote"

// Install registers the remote driver in reg.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	Registry        string        `param:"registry" default:"nats" enum:"nats|static|dns" doc:"where providers are found: NATS key-value (addrs: the server), a static list (addrs: host:port, comma-separated, optionally host:port;weight) or DNS SRV records (addrs: the SRV name)"`
	Service         string        `param:"service" doc:"the service's name in the registry (kisflow serve --service); required with registry nats" example:"pricing"`
	Version         string        `param:"version" doc:"call only providers of this version (kisflow serve --version)"`
	Group           string        `param:"group" doc:"call only providers of this group (kisflow serve --group)"`
	Cluster         string        `param:"cluster" default:"failover" enum:"failover|failfast|failsafe|forking|broadcast" doc:"the cluster strategy: failover retries on another provider, failfast tries once, failsafe logs a failure and yields no rows, forking calls forks providers at once and takes the first success, broadcast calls all and fails if any fails"`
	LoadBalance     string        `param:"loadbalance" default:"random" enum:"random|round_robin|least_active|consistent_hash" doc:"how a provider is picked: weighted random, smooth weighted round robin, fewest calls in flight, or a hash ring of the row's key (hash_field, default the flow's stream.key)"`
	Retries         int           `param:"retries" default:"2" min:"0" max:"10" doc:"failover: other providers tried after the first fails (at most 10)"`
	Timeout         time.Duration `param:"timeout" default:"2s" min:"1ms" doc:"of each attempt"`
	Forks           int           `param:"forks" default:"2" min:"1" doc:"forking: providers called at once"`
	HashField       string        `param:"hash_field" doc:"consistent_hash: the row field hashed (default the flow's stream.key; the whole row when neither is set)"`
	Bucket          string        `param:"bucket" default:"kisflow_remote" doc:"registry nats: the key-value bucket (kisflow serve --bucket)"`
	BreakerFailures int           `param:"breaker_failures" default:"3" min:"0" doc:"failures of one provider in a row that open its breaker: it is left out for breaker_open, then tried again; 0: no breaker"`
	BreakerOpen     time.Duration `param:"breaker_open" default:"5s" min:"1ms" doc:"how long an open breaker keeps its provider out"`
	Refresh         time.Duration `param:"refresh" default:"5s" min:"100ms" doc:"registry dns: how often the SRV records are looked up again"`
}

// maxRetries caps retries: a provider outage must not multiply a batch's
// calls without bound.
const maxRetries = 10

// Spec declares the remote connector's addrs and params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "remote functions: calls to kisflow serve providers through a registry, a cluster strategy and a load balancer")
	s.Addrs = "registry nats: the NATS URL (default nats://127.0.0.1:4222); static: the providers, host:port comma-separated; dns: the SRV name"
	s.Remote = true
	return s
}()

// Remote is the driver: a rpc.Client once started. Safe for concurrent use.
type Remote struct {
	cfg     *config.Conn
	p       params
	client  *rpc.Client
	log     *slog.Logger // the engine's (UseLogger); nil: slog.Default
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// UseMetrics registers, on the engine's registry, per provider:
// kisflow_remote_calls_total{connector,service,provider,func,outcome}
// (outcome ok or error) and kisflow_remote_call_seconds{connector,service,
// provider,func} (driver.MetricsUser).
func (r *Remote) UseMetrics(reg prometheus.Registerer) {
	labels := []string{"connector", "service", "provider", "func"}
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kisflow_remote_calls_total",
		Help: "Calls of remote functions, per provider and outcome (ok, error)."}, append(labels, "outcome"))
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kisflow_remote_call_seconds",
		Help: "Latency of calls of remote functions, per provider.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, labels)
	r.calls = register(reg, calls)
	r.latency = register(reg, latency)
}

// register registers c, or returns the collector of that name another
// remote connector registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}

func (r *Remote) observe(p rpc.Provider, fname string, took time.Duration, err error) {
	if r.calls == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	r.calls.WithLabelValues(r.cfg.CName, r.p.Service, p.Addr, fname, outcome).Inc()
	r.latency.WithLabelValues(r.cfg.CName, r.p.Service, p.Addr, fname).Observe(took.Seconds())
}

// New builds the driver from its connector config.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	if p.Retries > maxRetries {
		p.Retries = maxRetries
	}
	switch p.Registry {
	case "nats":
		if p.Service == "" {
			return nil, &driver.ParamError{Param: "service", Msg: "required with registry nats: the name providers serve under (kisflow serve --service NAME)"}
		}
		if err := rpc.CheckService(p.Service); err != nil {
			return nil, &driver.ParamError{Param: "service", Msg: err.Error()}
		}
		if strings.TrimSpace(cfg.Addrs) != "" {
			if _, err := rpc.NATSURL(cfg.Addrs); err != nil {
				return nil, fmt.Errorf("addrs: %w", err)
			}
		}
	case "static", "dns":
		if strings.TrimSpace(cfg.Addrs) == "" {
			return nil, fmt.Errorf("connector %q: registry %s needs addrs (%s)", cfg.CName, p.Registry, map[string]string{"static": "host:port, comma-separated", "dns": "the SRV name"}[p.Registry])
		}
		if p.Registry == "static" {
			// Checked here, so that lint reports it at addrs' line.
			if _, err := rpc.Static(strings.Split(cfg.Addrs, ",")); err != nil {
				return nil, fmt.Errorf("addrs: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
		}
	}
	return &Remote{cfg: cfg, p: p}, nil
}

// Start connects to the registry and starts following it.
// UseLogger makes the connector (its directory and client: registry
// outages, failovers, breakers) log through the engine's logger, in the
// command's format (kisflow.LoggerUser).
func (r *Remote) UseLogger(l *slog.Logger) { r.log = l }

func (r *Remote) Start(ctx context.Context) error {
	var dir rpc.Directory
	var err error
	switch r.p.Registry {
	case "static":
		dir, err = rpc.Static(strings.Split(r.cfg.Addrs, ","))
	case "dns":
		dir, err = rpc.WatchDNS(ctx, strings.TrimSpace(r.cfg.Addrs), r.p.Refresh, rpc.WithLogger(r.log))
	default:
		url := "nats://127.0.0.1:4222"
		if strings.TrimSpace(r.cfg.Addrs) != "" {
			// A URL without a port is port 4222, as nats.go reads it.
			if url, err = rpc.NATSURL(r.cfg.Addrs); err != nil {
				return fmt.Errorf("connector %q: addrs: %w", r.cfg.CName, err)
			}
		}
		dir, err = rpc.WatchNATS(ctx, url, r.p.Bucket, r.p.Service, r.p.Version, r.p.Group, rpc.WithLogger(r.log))
	}
	if err != nil {
		return fmt.Errorf("connector %q: %w", r.cfg.CName, err)
	}
	service := r.p.Service
	if service == "" {
		// Static and DNS registries need no service name: logs and
		// errors name the connector's registry instead.
		service = r.p.Registry + " " + strings.TrimSpace(r.cfg.Addrs)
	}
	c, err := rpc.NewClient(dir, rpc.Options{Service: service, Cluster: r.p.Cluster, LoadBalance: r.p.LoadBalance,
		Retries: r.p.Retries, Timeout: r.p.Timeout, Forks: r.p.Forks, HashField: r.p.HashField,
		BreakerFailures: breakerFailures(r.p.BreakerFailures), BreakerOpen: r.p.BreakerOpen, Observe: r.observe, Logger: r.log})
	if err != nil {
		_ = dir.Close()
		return err
	}
	r.client = c
	return nil
}

// Close stops following the registry and closes the connections.
func (r *Remote) Close(context.Context) error {
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}

// Invoke calls the function on a provider (driver.Invoker).
func (r *Remote) Invoke(ctx context.Context, call *driver.Invocation) (*driver.Outcome, error) {
	if r.client == nil {
		return nil, errors.New("remote connector " + r.cfg.CName + " is not started")
	}
	return r.client.Invoke(ctx, call)
}

// Check reports a service no provider serves now, or none of the version
// and group asked for (kisflow.Checker, for kisflow dry-run).
func (r *Remote) Check(context.Context, config.ConnUse) error {
	if r.client == nil {
		return errors.New("not started")
	}
	return r.client.Check()
}

// CheckFuncs reports the functions of fnames no provider serves now, and
// providers that do not answer as KisFlow providers (kisflow.FuncChecker,
// for kisflow dry-run).
func (r *Remote) CheckFuncs(ctx context.Context, fnames []string) error {
	if r.client == nil {
		return errors.New("not started")
	}
	return r.client.CheckFuncs(ctx, fnames)
}

// breakerFailures maps the param (0: none) to rpc.Options' (< 0: none).
func breakerFailures(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// Client is the started client (nil before Start).
func (r *Remote) Client() *rpc.Client { return r.client }
