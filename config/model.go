package config

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Kind is the value of a document's `kistype` field.
type Kind string

// The kinds of KisFlow documents.
const (
	KindFunc   Kind = "func"
	KindFlow   Kind = "flow"
	KindConn   Kind = "conn"
	KindGlobal Kind = "global"
	// KindTest is a test of a flow or function, run by `kisflow test`.
	// The configuration loader skips its documents.
	KindTest Kind = "test"
)

// Mode is a function's `fmode`: what the function does in a flow.
type Mode string

// The function modes of KisFlow.
const (
	Verify    Mode = "Verify"    // filter or validate rows
	Save      Mode = "Save"      // store rows through a connector
	Load      Mode = "Load"      // read through a connector
	Calculate Mode = "Calculate" // derive new rows
	Expand    Mode = "Expand"    // side effects, notifications, the end of a flow
)

// Modes lists every valid Mode.
var Modes = []Mode{Verify, Save, Load, Calculate, Expand}

// Valid reports whether m is one of Modes.
func (m Mode) Valid() bool { return slices.Contains(Modes, m) }

// NeedsConn reports whether functions of mode m must name a connector.
func (m Mode) NeedsConn() bool { return m == Save || m == Load }

// Flow status values.
const (
	FlowDisabled = 0
	FlowEnabled  = 1
)

// Func is a `kistype: func` document: one step's configuration.
type Func struct {
	FName  string     `yaml:"fname"`
	FMode  Mode       `yaml:"fmode"`
	Source Source     `yaml:"source,omitempty"`
	Option FuncOption `yaml:"option,omitempty"`
	// Filter is a boolean expression over a row's fields: a Verify function
	// with a filter needs no Go code; it keeps the rows for which it is true.
	Filter string `yaml:"filter,omitempty"`
	// Calc derives fields, in order, each an expression over the row's
	// fields and those derived before it: a Calculate function with calc
	// needs no Go code.
	Calc Assignments `yaml:"calc,omitempty"`
	// Keep, with Calc, lists the fields the output rows keep (all if empty).
	Keep []string `yaml:"keep,omitempty"`
	// Window makes a Calculate function a windowed aggregation (see
	// Window). Package window computes it; a flow runs it as the
	// function's body, with no Go code.
	Window *Window `yaml:"window,omitempty"`
}

// ConfigOnly reports whether the function is written in YAML (filter or calc).
func (f *Func) ConfigOnly() bool { return f.Filter != "" || len(f.Calc) > 0 }

// Assignment is one derived field of a calc: Field = Expr.
type Assignment struct {
	Field string
	Expr  string
}

// Assignments is an ordered calc mapping.
type Assignments []Assignment

// UnmarshalYAML reads a mapping of field: expression, keeping its order.
func (a *Assignments) UnmarshalYAML(n *yaml.Node) error {
	out, err := orderedMapping(n, "calc", "the expression")
	*a = out
	return err
}

// orderedMapping reads a mapping of field: string (what names the value in
// errors), keeping its order.
func orderedMapping(n *yaml.Node, block, what string) ([]Assignment, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: %s must be a mapping of field: expression", n.Line, block)
	}
	out := make([]Assignment, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: %s %q: %s must be a string", v.Line, block, k.Value, what)
		}
		out = append(out, Assignment{Field: k.Value, Expr: v.Value})
	}
	return out, nil
}

// MarshalYAML writes the assignments as an ordered mapping.
func (a Assignments) MarshalYAML() (any, error) {
	return mappingNode(a, yaml.DoubleQuotedStyle), nil
}

// mappingNode writes assignments as an ordered mapping, the values in style.
func mappingNode(a []Assignment, style yaml.Style) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, as := range a {
		n.Content = append(n.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: as.Field},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: as.Expr, Style: style})
	}
	return n
}

// Source describes where a function's rows come from. Name is
// informational. Must lists the fields its input rows carry: lint checks
// field names in expressions against it, and a stream job (kisflow run,
// Engine.Job) dead-letters a row lacking a field of the flow's first
// function's Must. Flow.Run does not check it, as KisFlow never did.
type Source struct {
	Name string   `yaml:"name,omitempty"`
	Must []string `yaml:"must,omitempty"`
}

// FuncOption holds a function's optional settings.
type FuncOption struct {
	// CName names the connector of a Save or Load function.
	CName string `yaml:"cname,omitempty"`
	// RetryTimes is how often a failed call is retried (used by the runtime).
	RetryTimes int `yaml:"retry_times,omitempty"`
	// RetryDuration is the base delay between retries in milliseconds. The
	// original KisFlow spells it `return_duration`; both are read, and
	// export writes `return_duration`, which the original reads.
	RetryDuration int `yaml:"retry_duration,omitempty"`
	// DefaultParams are the function's parameters; a flow's params override them.
	DefaultParams map[string]string `yaml:"default_params,omitempty"`
	// Filters wrap each call of the function, the first outermost, inside
	// the engine's default filters.
	Filters []FilterRef `yaml:"filters,omitempty"`

	// bothDurations holds retry_duration and return_duration when a file
	// sets both (lint reports it: KisFlow reads the second, we the first).
	bothDurations *[2]int
}

// UnmarshalYAML accepts `return_duration` as an alias of `retry_duration`.
func (o *FuncOption) UnmarshalYAML(node *yaml.Node) error {
	var raw struct {
		CName          string            `yaml:"cname"`
		RetryTimes     int               `yaml:"retry_times"`
		RetryDuration  *int              `yaml:"retry_duration"`
		ReturnDuration *int              `yaml:"return_duration"`
		DefaultParams  map[string]string `yaml:"default_params"`
		Filters        []FilterRef       `yaml:"filters"`
	}
	if err := node.Decode(&raw); err != nil {
		return err
	}
	*o = FuncOption{CName: raw.CName, RetryTimes: raw.RetryTimes, DefaultParams: raw.DefaultParams, Filters: raw.Filters}
	if raw.RetryDuration != nil && raw.ReturnDuration != nil {
		o.bothDurations = &[2]int{*raw.RetryDuration, *raw.ReturnDuration}
	}
	switch {
	case raw.RetryDuration != nil:
		o.RetryDuration = *raw.RetryDuration
	case raw.ReturnDuration != nil:
		o.RetryDuration = *raw.ReturnDuration
	}
	return nil
}

// MarshalYAML writes the retry interval as `return_duration`, the name the
// original KisFlow reads, so that exported files keep their value there.
func (o FuncOption) MarshalYAML() (any, error) {
	return struct {
		CName          string            `yaml:"cname,omitempty"`
		RetryTimes     int               `yaml:"retry_times,omitempty"`
		ReturnDuration int               `yaml:"return_duration,omitempty"`
		DefaultParams  map[string]string `yaml:"default_params,omitempty"`
		Filters        []FilterRef       `yaml:"filters,omitempty"`
	}{o.CName, o.RetryTimes, o.RetryDuration, o.DefaultParams, o.Filters}, nil
}

// Flow is a `kistype: flow` document: an ordered list of functions.
type Flow struct {
	Status   int        `yaml:"status"`
	FlowName string     `yaml:"flow_name"`
	Flows    []FlowStep `yaml:"flows"`
	// Stream, when set, binds the flow to a source for `kisflow run`.
	Stream *Stream `yaml:"stream,omitempty"`
	// Filters wrap each run of the flow, the first outermost, inside the
	// engine's default filters.
	Filters []FilterRef `yaml:"filters,omitempty"`
}

// Enabled reports whether the flow's status lets it run.
func (f *Flow) Enabled() bool { return f.Status != FlowDisabled }

// FlowStep is one function of a flow with the flow's params for it.
type FlowStep struct {
	FName  string            `yaml:"fname"`
	Params map[string]string `yaml:"params,omitempty"`
}

// Conn is a `kistype: conn` document: a named link to an external system.
type Conn struct {
	CName  string            `yaml:"cname"`
	Addrs  string            `yaml:"addrs,omitempty"`
	Type   string            `yaml:"type"`
	Key    string            `yaml:"key,omitempty"`
	Params map[string]string `yaml:"params,omitempty"`
	Load   []string          `yaml:"load"`
	Save   []string          `yaml:"save"`
	// Dir is the folder of the file the document was read from ("" when
	// built in Go). Drivers resolve relative paths in params against it.
	Dir string `yaml:"-"`
}

// Path resolves p against the connector's Dir when p is relative.
func (c *Conn) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// AddrList splits Addrs on commas, dropping blanks.
func (c *Conn) AddrList() []string {
	var out []string
	for _, a := range strings.Split(c.Addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Global is the `kistype: global` document: process-wide settings.
type Global struct {
	// PrometheusEnable turns KisFlow's metrics on.
	PrometheusEnable bool `yaml:"prometheus_enable,omitempty"`
	// PrometheusListen, as in KisFlow, asks for a metrics listener of the
	// engine's own, on PrometheusServe.
	PrometheusListen bool `yaml:"prometheus_listen,omitempty"`
	// PrometheusServe is the address of that listener (KisFlow's files say
	// 0.0.0.0:20004).
	PrometheusServe string `yaml:"prometheus_serve,omitempty"`
	// Plugins configures components by type and name:
	// `plugins: {type: {name: {...}}}`. Each decodes its own part.
	Plugins map[string]map[string]*PluginConfig `yaml:"plugins,omitempty"`
	// Serve configures `kisflow serve` (remote functions); its flags have
	// the same names and win over it.
	Serve *Serve `yaml:"serve,omitempty"`

	// swappedMetrics records a file in the form earlier versions of this
	// project documented (prometheus_listen: ADDRESS, prometheus_serve:
	// true): it is read with KisFlow's meaning and lint warns.
	swappedMetrics bool
}

// UnmarshalYAML reads KisFlow's global document. prometheus_listen is a
// boolean and prometheus_serve the address, as the original writes them; the
// swapped form (an address in prometheus_listen, a boolean in
// prometheus_serve) is read with the same meaning and reported by lint.
func (g *Global) UnmarshalYAML(node *yaml.Node) error {
	var raw struct {
		PrometheusEnable bool                                `yaml:"prometheus_enable"`
		PrometheusListen yaml.Node                           `yaml:"prometheus_listen"`
		PrometheusServe  yaml.Node                           `yaml:"prometheus_serve"`
		Plugins          map[string]map[string]*PluginConfig `yaml:"plugins"`
		Serve            *Serve                              `yaml:"serve"`
	}
	if err := node.Decode(&raw); err != nil {
		return err
	}
	*g = Global{PrometheusEnable: raw.PrometheusEnable, Plugins: raw.Plugins, Serve: raw.Serve}
	listen, serve := &raw.PrometheusListen, &raw.PrometheusServe
	if listen.Kind == yaml.ScalarNode && !isBool(listen) {
		// The swapped form: the address in prometheus_listen.
		g.swappedMetrics = true
		listen, serve = serve, listen
	}
	if listen.Kind != 0 {
		if err := listen.Decode(&g.PrometheusListen); err != nil {
			return fmt.Errorf("prometheus_listen: %w", err)
		}
	}
	if serve.Kind != 0 {
		if err := serve.Decode(&g.PrometheusServe); err != nil {
			return fmt.Errorf("prometheus_serve: %w", err)
		}
	}
	return nil
}

// Serve is the serve block of the global document: how `kisflow serve`
// exposes the configuration's functions to flows in other processes.
type Serve struct {
	Service  string   `yaml:"service,omitempty"`  // the service's name in the registry
	Registry string   `yaml:"registry,omitempty"` // nats://host[:port] (port 4222 when not given), or none
	Listen   string   `yaml:"listen,omitempty"`   // the gRPC address; port 0: any free port
	Version  string   `yaml:"version,omitempty"`
	Group    string   `yaml:"group,omitempty"`
	Weight   int      `yaml:"weight,omitempty"`
	Bucket   string   `yaml:"bucket,omitempty"` // the NATS key-value bucket
	TTL      Duration `yaml:"ttl,omitempty"`    // a registration's life without a heartbeat
}

// isBool reports whether n is a YAML boolean scalar.
func isBool(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	var b bool
	return n.Decode(&b) == nil
}

// MergedParams returns the function's default params overridden by the flow
// step's params. The result is a new map.
func MergedParams(fn *Func, step FlowStep) map[string]string {
	out := make(map[string]string, len(fn.Option.DefaultParams)+len(step.Params))
	maps.Copy(out, fn.Option.DefaultParams)
	maps.Copy(out, step.Params)
	return out
}

// NewFunc returns a function config with a name and a mode.
func NewFunc(name string, mode Mode) *Func { return &Func{FName: name, FMode: mode} }

// WithConn sets the connector a Save or Load function uses, and returns f.
func (f *Func) WithConn(cname string) *Func { f.Option.CName = cname; return f }

// WithParams sets the function's default params, and returns f.
func (f *Func) WithParams(p map[string]string) *Func { f.Option.DefaultParams = p; return f }

// WithRetry sets the retry count and base delay in milliseconds, and returns f.
func (f *Func) WithRetry(times, ms int) *Func {
	f.Option.RetryTimes, f.Option.RetryDuration = times, ms
	return f
}

// NewFlow returns an enabled flow config running steps in order.
func NewFlow(name string, steps ...FlowStep) *Flow {
	return &Flow{Status: FlowEnabled, FlowName: name, Flows: steps}
}

// Step returns a flow step naming a function, with optional params.
func Step(fname string, params map[string]string) FlowStep {
	return FlowStep{FName: fname, Params: params}
}

// NewConn returns a connector config of a type.
func NewConn(name, typ string) *Conn { return &Conn{CName: name, Type: typ} }

func (k Kind) valid() bool {
	switch k {
	case KindFunc, KindFlow, KindConn, KindGlobal:
		return true
	}
	return false
}

func (k Kind) noun() string {
	switch k {
	case KindFunc:
		return "function"
	case KindFlow:
		return "flow"
	case KindConn:
		return "connector"
	}
	return string(k)
}

func suggestMode(s string) string {
	for _, m := range Modes {
		if strings.EqualFold(string(m), s) {
			return fmt.Sprintf(" (did you mean %s?)", m)
		}
	}
	return " (want Verify, Save, Load, Calculate or Expand)"
}
