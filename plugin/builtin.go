package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kisflow-go/kisflow/config"
)

// Built-in plugin types.
const (
	TypeLog     = "log"
	TypeMetrics = "metrics"
	TypeTracing = "tracing"
)

// DefaultAdminListen is the admin address when none is configured: metrics
// and health endpoints are served on localhost only.
const DefaultAdminListen = "127.0.0.1:20004"

// Builtins returns the built-in plugin types: log, metrics (the Prometheus
// and health admin server) and tracing (the OTLP exporter).
func Builtins() map[string]Spec {
	return map[string]Spec{
		TypeLog: {Type: TypeLog, New: newLog, Summary: "the engine's logger (log/slog)",
			Config: ptr(defaultLog())},
		TypeMetrics: {Type: TypeMetrics, DependsOn: []string{TypeLog}, New: newAdmin,
			Summary: "the admin server: Prometheus metrics, /healthz, /readyz, /state/{flow}/{key}, the admin API (/api/) and the web inspector (/)", Config: &AdminConfig{Listen: DefaultAdminListen, Path: "/metrics", OnBindError: "fail"}},
		TypeTracing: {Type: TypeTracing, DependsOn: []string{TypeLog}, New: newOTLP,
			Summary: "OpenTelemetry traces exported over OTLP/HTTP", Config: ptr(defaultOTLP())},
	}
}

func ptr[T any](v T) *T { return &v }

func defaultLog() LogConfig { return LogConfig{Level: "info", Format: "text", Output: "stderr"} }

func defaultOTLP() OTLPConfig {
	return OTLPConfig{Endpoint: "localhost:4318", URLPath: "/v1/traces", ServiceName: "kisflow", SampleRatio: 1, Timeout: 10 * time.Second}
}

// LogConfig is the config of a log plugin.
type LogConfig struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error"`
	Format string `yaml:"format" doc:"text or json"`
	Output string `yaml:"output" doc:"stderr, stdout or a file path"`
}

// Validate checks the level and format.
func (c *LogConfig) Validate() error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		return fmt.Errorf("level %q (want debug, info, warn or error)", c.Level)
	}
	if c.Format != "text" && c.Format != "json" {
		return fmt.Errorf("format %q (want text or json)", c.Format)
	}
	return nil
}

// Log is the log plugin: it provides the engine's slog logger.
type Log struct {
	cfg    LogConfig
	logger *slog.Logger
	file   *os.File
}

func newLog(_ string, pc *config.PluginConfig) (Plugin, error) {
	cfg := defaultLog()
	if err := pc.Decode(&cfg); err != nil {
		return nil, err
	}
	return &Log{cfg: cfg}, nil
}

// Start opens the output.
func (p *Log) Start(context.Context, Host) error {
	var w io.Writer
	switch p.cfg.Output {
	case "", "stderr":
		w = os.Stderr
	case "stdout":
		w = os.Stdout
	default:
		f, err := os.OpenFile(p.cfg.Output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		p.file, w = f, f
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(p.cfg.Level)) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if p.cfg.Format == "json" {
		p.logger = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		p.logger = slog.New(slog.NewTextHandler(w, opts))
	}
	return nil
}

// Logger returns the configured logger.
func (p *Log) Logger() *slog.Logger { return p.logger }

// Close closes an output file.
func (p *Log) Close(context.Context) error {
	if p.file != nil {
		return p.file.Close()
	}
	return nil
}

// AdminConfig is the config of the metrics plugin, the admin server.
type AdminConfig struct {
	// Listen is the address; a bare ":port" binds localhost. Use
	// "0.0.0.0:port" to expose it. Default DefaultAdminListen.
	Listen string `yaml:"listen" doc:"the address; a bare :port binds localhost, 0.0.0.0:port exposes it"`
	// Path serves the metrics (default /metrics).
	Path string `yaml:"path" doc:"where the metrics are served"`
	// OnBindError is what a failure to listen does: "fail" (the default)
	// fails the engine's start; "log" logs it at error level and the
	// flows run without the server, as KisFlow's own listener did (the
	// listener a global file's prometheus_listen asks for uses "log").
	OnBindError string `yaml:"on_bind_error" doc:"fail: a failure to listen fails the start; log: it is logged at error level and the flows run without the server (KisFlow's prometheus_listen)"`
}

// check checks the address, once defaults are filled.
func (c *AdminConfig) check() error {
	if err := checkHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %v", c.Listen, err)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("path %q must start with /", c.Path)
	}
	if c.OnBindError != "fail" && c.OnBindError != "log" {
		return fmt.Errorf("on_bind_error %q: want fail or log", c.OnBindError)
	}
	return nil
}

// Admin is the metrics plugin: an HTTP server with the engine's Prometheus
// metrics, /healthz (the process is up), /readyz (the engine's readiness
// checks pass) and GET /state/{flow}/{key} (the committed keyed state the
// flow's running job holds for key, as JSON; 404 for a flow with no
// running job or a key with no state), and the Console the host holds:
// kisflow run's admin API under /api/ and web inspector at /. When the
// environment holds TokenEnv, /api/ and /state/ want it as a bearer token.
type Admin struct {
	cfg  AdminConfig
	srv  *http.Server
	addr net.Addr
	done chan error
}

// NewAdmin returns an admin server plugin for cfg (with defaults filled).
func NewAdmin(cfg AdminConfig) (*Admin, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultAdminListen
	}
	if strings.HasPrefix(cfg.Listen, ":") {
		cfg.Listen = "127.0.0.1" + cfg.Listen
	}
	if cfg.Path == "" {
		cfg.Path = "/metrics"
	}
	if cfg.OnBindError == "" {
		cfg.OnBindError = "fail"
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Admin{cfg: cfg}, nil
}

func newAdmin(_ string, pc *config.PluginConfig) (Plugin, error) {
	var cfg AdminConfig
	if err := pc.Decode(&cfg); err != nil {
		return nil, err
	}
	a, err := NewAdmin(cfg)
	if err != nil {
		return nil, pc.Problem(err)
	}
	return a, nil
}

// Start listens and serves in the background.
func (a *Admin) Start(ctx context.Context, h Host) error {
	mux := http.NewServeMux()
	mux.Handle(a.cfg.Path, promhttp.HandlerFor(h.Metrics().Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	health := h.Health()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := health.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	token, err := adminToken()
	if err != nil {
		return err
	}
	console := h.Console()
	mux.Handle("/state/{flow}/{key...}", requireToken(token, console.stateHandler(h.States())))
	mux.Handle("/api/", requireToken(token, console))
	mux.Handle("/", console) // the inspector's static files; its data comes from /api/
	if token == "" && !loopback(a.cfg.Listen) {
		h.Logger().Warn("the admin server listens beyond localhost and no bearer token is set, so anyone who reaches "+a.cfg.Listen+
			" can stop flows, replay dead letters and read state. Set "+TokenEnv+" to require a bearer token, or listen on 127.0.0.1",
			"addr", a.cfg.Listen)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil && a.cfg.OnBindError == "log" {
		h.Logger().Error("metrics listener: cannot listen, so this engine's metrics are not served there; the flows run without it. "+
			"Free the address (another process, or another engine of this process, holds it) or set prometheus_serve to another host:port",
			"addr", a.cfg.Listen, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	a.addr = ln.Addr()
	a.srv = &http.Server{Handler: guardBrowsers(a.cfg.Listen, mux), ReadHeaderTimeout: 5 * time.Second}
	a.done = make(chan error, 1)
	go func() { a.done <- a.srv.Serve(ln) }()
	h.Logger().Info("admin server listening", "addr", a.addr.String(), "metrics", a.cfg.Path)
	return nil
}

// ListenAddr is the address the server's config asks it to listen on
// (a bare :port made 127.0.0.1:port), before it does.
func (a *Admin) ListenAddr() string { return a.cfg.Listen }

// Addr is the address the server listens on, once started.
func (a *Admin) Addr() net.Addr { return a.addr }

// Close shuts the server down within ctx.
func (a *Admin) Close(ctx context.Context) error {
	if a.srv == nil {
		return nil
	}
	err := a.srv.Shutdown(ctx)
	if serr := <-a.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// OTLPConfig is the config of the tracing plugin, the OTLP/HTTP exporter.
type OTLPConfig struct {
	// Endpoint is host:port of the collector (default localhost:4318).
	Endpoint string `yaml:"endpoint" doc:"host:port of the collector"`
	// URLPath is the traces path (default /v1/traces).
	URLPath string `yaml:"url_path" doc:"the traces path"`
	// Insecure sends over plain HTTP instead of HTTPS.
	Insecure bool `yaml:"insecure" doc:"plain HTTP instead of HTTPS"`
	// Headers are sent with each export (credentials: ${VAR} expands, as
	// in every plugin config).
	Headers map[string]string `yaml:"headers" doc:"sent with each export (credentials: use ${VAR})"`
	// ServiceName is the service.name resource (default kisflow).
	ServiceName string `yaml:"service_name" doc:"the service.name resource"`
	// SampleRatio is the share of new traces recorded, 0..1 (default 1);
	// a trace continued from a source's headers follows its parent.
	SampleRatio float64 `yaml:"sample_ratio" doc:"the share of new traces recorded, 0..1"`
	// Timeout bounds each export (default 10s).
	Timeout time.Duration `yaml:"timeout" doc:"bounds each export"`
}

// Validate checks the ratio and endpoint.
func (c *OTLPConfig) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("sample_ratio %v is outside 0..1", c.SampleRatio)
	}
	if err := checkHostPort(c.Endpoint); err != nil {
		return fmt.Errorf("endpoint %q: want host:port (%v)", c.Endpoint, err)
	}
	return nil
}

// checkHostPort checks addr is host:port with a port net.Listen and
// net.Dial take (a number up to 65535, or a service name such as http).
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	return nil
}

// OTLP is the tracing plugin: it exports the engine's spans over OTLP/HTTP.
type OTLP struct {
	cfg OTLPConfig
	tp  *sdktrace.TracerProvider
}

func newOTLP(_ string, pc *config.PluginConfig) (Plugin, error) {
	cfg := defaultOTLP()
	if err := pc.Decode(&cfg); err != nil {
		return nil, err
	}
	return &OTLP{cfg: cfg}, nil
}

// Start builds the exporter and the tracer provider. The exporter connects
// lazily: a collector that is down loses spans, never blocks flows.
func (p *OTLP) Start(ctx context.Context, h Host) error {
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpoint(p.cfg.Endpoint),
		otlptracehttp.WithURLPath(p.cfg.URLPath),
		otlptracehttp.WithTimeout(p.cfg.Timeout),
	}
	if p.cfg.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if len(p.cfg.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(p.cfg.Headers))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return err
	}
	res := resource.NewSchemaless(semconv.ServiceName(p.cfg.ServiceName))
	p.tp = sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(p.cfg.SampleRatio))),
	)
	h.Logger().Info("tracing to OTLP", "endpoint", p.cfg.Endpoint, "service", p.cfg.ServiceName)
	return nil
}

// TracerProvider returns the provider spans are exported through.
func (p *OTLP) TracerProvider() trace.TracerProvider { return p.tp }

// Close flushes the spans and stops the exporter.
func (p *OTLP) Close(ctx context.Context) error {
	if p.tp == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}
