package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// PluginConfig is one plugin's part of the global file,
// `plugins: {type: {name: {...}}}`. Each plugin decodes its own part with
// Decode; the framework reads the reserved key depends_on.
type PluginConfig struct {
	// DependsOn lists plugins started before this one, as "type.name" or
	// "type" (every plugin of that type).
	DependsOn []string
	// Pos is where the plugin's config starts.
	Pos Pos

	node yaml.Node // the mapping without depends_on
}

// UnmarshalYAML keeps the node for Decode and reads depends_on.
func (p *PluginConfig) UnmarshalYAML(n *yaml.Node) error {
	p.Pos = Pos{Line: n.Line}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!null" && n.Value != "" {
			return fmt.Errorf("line %d: plugin config must be a mapping", n.Line)
		}
		p.node = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		return nil
	case yaml.MappingNode:
	default:
		return fmt.Errorf("line %d: plugin config must be a mapping", n.Line)
	}
	p.node = *n
	p.node.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "depends_on" {
			if err := v.Decode(&p.DependsOn); err != nil {
				return fmt.Errorf("line %d: depends_on must be a list of type.name: %w", v.Line, err)
			}
			continue
		}
		p.node.Content = append(p.node.Content, k, v)
	}
	return nil
}

// MarshalYAML writes the config back with its depends_on.
func (p *PluginConfig) MarshalYAML() (any, error) {
	n := p.node
	if n.Kind == 0 {
		n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	n.Content = slices.Clone(n.Content)
	if len(p.DependsOn) > 0 {
		var deps yaml.Node
		if err := deps.Encode(p.DependsOn); err != nil {
			return nil, err
		}
		deps.Style = yaml.FlowStyle
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "depends_on"}, &deps)
	}
	return &n, nil
}

// NewPluginConfig returns a plugin config holding v (a struct or map) as its
// YAML, for configuring plugins from Go.
func NewPluginConfig(v any, dependsOn ...string) (*PluginConfig, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("plugin config %T is not a mapping", v)
	}
	return &PluginConfig{node: n, DependsOn: dependsOn}, nil
}

// Decode decodes the plugin's config into v, a pointer to a struct holding
// its defaults. ${VAR} and ${VAR:-default} in its values expand from the
// environment first (addresses and credentials); an unset variable with no
// default is an error. A key v has no field for is an error, and so is a
// value of the wrong type; errors carry the file and line. If v has a
// Validate() error method, it is called after decoding.
func (p *PluginConfig) Decode(v any) error {
	if p.node.Kind == 0 {
		return p.Problem(validate(v))
	}
	var probs []Problem
	add := func(line int, msg string) {
		probs = append(probs, Problem{Pos: Pos{File: p.Pos.File, Line: line}, Severity: SevError, Msg: msg})
	}
	// Every unknown key is an error, whatever walkFields's severity: a
	// plugin has no other reader of its config, so a misspelt key (levl)
	// would silently leave its default in place.
	walkFields(reflect.TypeOf(v), &p.node, "", map[string]int{}, func(line int, _ Severity, msg string) { add(line, msg) })
	bareDurations(reflect.TypeOf(v), &p.node, "", add)
	node := expandNode(&p.node, add)
	if len(probs) > 0 {
		return &Error{Problems: probs}
	}
	if err := node.Decode(v); err != nil {
		probs = yamlProblems(p.Pos.File, err, "bad config")
		for i := range probs {
			if probs[i].Pos.Line == 0 {
				probs[i].Pos.Line = p.Pos.Line
			}
		}
		return &Error{Problems: probs}
	}
	return p.Problem(validate(v))
}

// expandNode returns a copy of n with ${VAR} references in its scalars
// expanded; unset variables are reported at their line. The config keeps
// the references, so exports never hold the values.
func expandNode(n *yaml.Node, problem func(line int, msg string)) *yaml.Node {
	c := *n
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		v, missing := expandEnv(n.Value, os.LookupEnv)
		if len(missing) > 0 {
			problem(n.Line, fmt.Sprintf("environment variable(s) %s not set", strings.Join(slices.Compact(missing), ", ")))
		}
		c.Value = v
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			c.Tag = "" // resolved again: ${PORT} may be a number
		}
	}
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			c.Content[i] = expandNode(child, problem)
		}
	}
	return &c
}

// Problem returns err (nil stays nil) as a *Error at the config's position,
// for constructors that check more than Decode does.
func (p *PluginConfig) Problem(err error) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return err
	}
	return &Error{Problems: []Problem{{Pos: p.Pos, Msg: err.Error()}}}
}

func validate(v any) error {
	if vv, ok := v.(interface{ Validate() error }); ok {
		return vv.Validate()
	}
	return nil
}

// equal compares two plugin configs by content, ignoring positions.
func (p *PluginConfig) equal(o *PluginConfig) bool {
	a, errA := yaml.Marshal(p)
	b, errB := yaml.Marshal(o)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// PluginRef is the key of one configured plugin.
type PluginRef struct{ Type, Name string }

func (r PluginRef) String() string { return r.Type + "." + r.Name }

// PluginRefs lists the configured plugins sorted by type and name.
func (g *Global) PluginRefs() []PluginRef {
	if g == nil {
		return nil
	}
	var out []PluginRef
	for _, typ := range sortedKeys(g.Plugins) {
		for _, name := range sortedKeys(g.Plugins[typ]) {
			out = append(out, PluginRef{typ, name})
		}
	}
	return out
}

// Plugin returns the config of plugin typ.name, or nil.
func (g *Global) Plugin(typ, name string) *PluginConfig {
	if g == nil {
		return nil
	}
	return g.Plugins[typ][name]
}

// PluginOrder returns the configured plugins in an order that starts each
// after those it depends on, or an error naming an unknown dependency or a
// cycle. deps adds dependencies a plugin type always has (may be nil).
func (g *Global) PluginOrder(deps func(typ string) []string) ([]PluginRef, error) {
	refs := g.PluginRefs()
	edges := map[PluginRef][]PluginRef{}
	for _, r := range refs {
		want := slices.Clone(g.Plugin(r.Type, r.Name).DependsOn)
		if deps != nil {
			want = append(want, deps(r.Type)...)
		}
		for _, d := range want {
			typ, name, hasName := strings.Cut(d, ".")
			matched := false
			for _, o := range refs {
				if o.Type == typ && (!hasName || o.Name == name) && o != r {
					edges[r] = append(edges[r], o)
					matched = true
				}
			}
			if !matched && (hasName || slices.Contains(g.Plugin(r.Type, r.Name).DependsOn, d)) {
				return nil, g.Plugin(r.Type, r.Name).Problem(fmt.Errorf("plugin %s depends on %q, which is not configured", r, d))
			}
		}
	}
	var order []PluginRef
	state := map[PluginRef]int{} // 1 visiting, 2 done
	var visit func(r PluginRef, path []PluginRef) error
	visit = func(r PluginRef, path []PluginRef) error {
		switch state[r] {
		case 1:
			var names []string
			for _, p := range append(path, r) {
				names = append(names, p.String())
			}
			return g.Plugin(r.Type, r.Name).Problem(fmt.Errorf("plugin dependency cycle: %s", strings.Join(names, " -> ")))
		case 2:
			return nil
		}
		state[r] = 1
		for _, d := range edges[r] {
			if err := visit(d, append(path, r)); err != nil {
				return err
			}
		}
		state[r] = 2
		order = append(order, r)
		return nil
	}
	for _, r := range refs {
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// equal compares two global documents, plugins by content.
func (g *Global) equal(o *Global) bool {
	if g == nil || o == nil {
		return g == o
	}
	if g.PrometheusEnable != o.PrometheusEnable || g.PrometheusListen != o.PrometheusListen || g.PrometheusServe != o.PrometheusServe {
		return false
	}
	a, b := g.PluginRefs(), o.PluginRefs()
	if !slices.Equal(a, b) {
		return false
	}
	for _, r := range a {
		if !g.Plugin(r.Type, r.Name).equal(o.Plugin(r.Type, r.Name)) {
			return false
		}
	}
	return true
}

// bareDurations reports a duration field given as a bare number: YAML
// would decode `timeout: 5` as five nanoseconds. Durations carry their
// unit, as in connector params.
func bareDurations(t reflect.Type, n *yaml.Node, prefix string, add func(line int, msg string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		f, ok := fieldByTag(t, key.Value)
		if !ok {
			continue
		}
		name := prefix + key.Value
		if f.Type == reflect.TypeFor[time.Duration]() && val.Kind == yaml.ScalarNode && (val.Tag == "!!int" || val.Tag == "!!float") && val.Value != "0" {
			add(val.Line, fmt.Sprintf("%s: %s has no unit (want a duration such as %ss or %sms)", name, val.Value, val.Value, val.Value))
			continue
		}
		bareDurations(f.Type, val, name+".", add)
	}
}
