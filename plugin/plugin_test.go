package plugin_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/metrics"
	"github.com/kisflow-go/kisflow/plugin"
)

type host struct {
	set *plugin.Set
	m   *metrics.Metrics
}

func (h host) Logger() *slog.Logger      { return slog.New(slog.DiscardHandler) }
func (h host) Metrics() *metrics.Metrics { return h.m }
func (h host) Health() *plugin.Health    { return &plugin.Health{} }
func (h host) States() *plugin.States    { return &plugin.States{} }
func (h host) Console() *plugin.Console  { return &plugin.Console{} }
func (h host) Plugin(typ, name string) (plugin.Plugin, bool) {
	return h.set.Lookup(typ, name)
}

// recorder is a test plugin that logs its start and close.
type recorder struct {
	name string
	log  *[]string
	cfg  struct {
		Fail bool `yaml:"fail"`
	}
}

func (r *recorder) Start(context.Context, plugin.Host) error {
	if r.cfg.Fail {
		return errors.New("refused")
	}
	*r.log = append(*r.log, "start "+r.name)
	return nil
}

func (r *recorder) Close(context.Context) error {
	*r.log = append(*r.log, "close "+r.name)
	return nil
}

func specs(log *[]string) map[string]plugin.Spec {
	s := plugin.Builtins()
	for _, typ := range []string{"client", "cache"} {
		s[typ] = plugin.Spec{Type: typ, New: func(name string, pc *config.PluginConfig) (plugin.Plugin, error) {
			r := &recorder{name: typ + "." + name, log: log}
			return r, pc.Decode(&r.cfg)
		}}
	}
	// A cache always starts after the clients.
	s["cache"] = plugin.Spec{Type: "cache", DependsOn: []string{"client"}, New: s["cache"].New}
	return s
}

func global(t *testing.T, yml string) *config.Global {
	t.Helper()
	set, err := config.ImportFS(fstest.MapFS{"global.yml": {Data: []byte(yml)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return set.Global
}

func TestPluginsStartInDependencyOrderAndCloseInReverse(t *testing.T) {
	t.Parallel()
	var log []string
	g := global(t, `kistype: global
plugins:
  cache:
    main: {}
  client:
    b: {depends_on: [client.c]}
    a: {}
    c: {}
`)
	set, err := plugin.Build(g, specs(&log))
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Start(context.Background(), host{set: set}, nil); err != nil {
		t.Fatal(err)
	}
	if err := set.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "start client.a,start client.c,start client.b,start cache.main," +
		"close cache.main,close client.b,close client.c,close client.a"
	if got := strings.Join(log, ","); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestFailedStartClosesThoseStarted(t *testing.T) {
	t.Parallel()
	var log []string
	g := global(t, "kistype: global\nplugins:\n  client:\n    a: {}\n  cache:\n    x: {fail: true}\n")
	set, err := plugin.Build(g, specs(&log))
	if err != nil {
		t.Fatal(err)
	}
	err = set.Start(context.Background(), host{set: set}, nil)
	if err == nil || !strings.Contains(err.Error(), "cache.x") {
		t.Fatalf("got %v, want the start error of cache.x", err)
	}
	if got := strings.Join(log, ","); got != "start client.a,close client.a" {
		t.Fatalf("got %s", got)
	}
}

func TestBadPluginConfigIsAnErrorAtItsLine(t *testing.T) {
	t.Parallel()
	var log []string
	for _, tc := range []struct{ name, yml, want string }{
		{"unknown field", "kistype: global\nplugins:\n  log:\n    main:\n      level: info\n      colour: red\n", `global.yml:6: plugin log.main: unknown field "colour"`},
		{"bad value", "kistype: global\nplugins:\n  log:\n    main:\n      level: loud\n", `global.yml:5: plugin log.main: level "loud"`},
		{"wrong type", "kistype: global\nplugins:\n  tracing:\n    otlp:\n      sample_ratio: lots\n", "global.yml:5: plugin tracing.otlp: bad config: cannot unmarshal !!str `lots` into float64"},
		{"unknown type", "kistype: global\nplugins:\n  nosuch:\n    x: {}\n", `global.yml:4: plugin nosuch.x: unknown plugin type "nosuch"`},
		{"missing dependency", "kistype: global\nplugins:\n  client:\n    a: {depends_on: [client.z]}\n", `global.yml:4: plugin client.a depends on "client.z"`},
		{"cycle", "kistype: global\nplugins:\n  client:\n    a: {depends_on: [client.b]}\n    b: {depends_on: [client.a]}\n", "plugin dependency cycle: client.a -> client.b -> client.a"},
		{"a duration without its unit", "kistype: global\nplugins:\n  tracing:\n    otlp:\n      timeout: 5\n", `global.yml:5: plugin tracing.otlp: timeout: 5 has no unit (want a duration such as 5s or 5ms)`},
		{"admin address", "kistype: global\nplugins:\n  metrics:\n    prom: {listen: nowhere}\n", `global.yml:4: plugin metrics.prom: listen "nowhere"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := plugin.Build(global(t, tc.yml), specs(&log))
			var ce *config.Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant a config error containing %q", err, tc.want)
			}
		})
	}
}

func TestHealthJoinsFailingChecks(t *testing.T) {
	t.Parallel()
	var h plugin.Health
	ctx := context.Background()
	if err := h.Ready(ctx); err != nil {
		t.Fatalf("no checks: %v", err)
	}
	h.Set("a", func(context.Context) error { return nil })
	h.Set("b", func(context.Context) error { return errors.New("down") })
	if err := h.Ready(ctx); err == nil || err.Error() != "b: down" {
		t.Fatalf("got %v", err)
	}
	h.Remove("b")
	if err := h.Ready(ctx); err != nil {
		t.Fatalf("after removing b: %v", err)
	}
}
