package config

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// FilterRef names a filter in a chain, with its params. In YAML it is the
// filter's name, or a mapping {name: ..., params: {...}}:
//
//	filters: [recover, {name: retry, params: {times: 5}}]
type FilterRef struct {
	Name   string            `yaml:"name"`
	Params map[string]string `yaml:"params,omitempty"`
}

// UnmarshalYAML reads a name or a {name, params} mapping.
func (f *FilterRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*f = FilterRef{Name: n.Value}
		return nil
	}
	type plain FilterRef
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	if p.Name == "" {
		return fmt.Errorf("line %d: a filter needs a name", n.Line)
	}
	*f = FilterRef(p)
	return nil
}

// MarshalYAML writes a filter without params as its name.
func (f FilterRef) MarshalYAML() (any, error) {
	if len(f.Params) == 0 {
		return f.Name, nil
	}
	type plain FilterRef
	return plain(f), nil
}

// Filter returns a FilterRef with optional params.
func Filter(name string, params map[string]string) FilterRef {
	return FilterRef{Name: name, Params: params}
}

// checkFilters reports unknown filter names and, through check, bad params.
func (s *Set) checkFilters(o *lintOptions, add func(Kind, string, string, Severity, string, ...any)) {
	if o.filterCheck == nil {
		return
	}
	for _, name := range sortedKeys(s.Flows) {
		fl := s.Flows[name]
		for i, ref := range fl.Filters {
			for _, p := range o.filterCheck(ref, fl, nil) {
				add(KindFlow, name, fmt.Sprintf("filters[%d]", i), p.Severity, "flow %q: filter %q: %s", name, ref.Name, p.Msg)
			}
		}
		for _, st := range fl.Flows {
			fn := s.Funcs[st.FName]
			if fn == nil {
				continue
			}
			for i, ref := range fn.Option.Filters {
				for _, p := range o.filterCheck(ref, fl, fn) {
					add(KindFunc, fn.FName, fmt.Sprintf("option.filters[%d]", i), p.Severity, "function %q: filter %q: %s", fn.FName, ref.Name, p.Msg)
				}
			}
		}
	}
}

// WithFilterCheck makes lint check each filter entry of every flow and of
// every function in a flow with check, which returns problems (without
// positions) for an unknown name or bad params. fn is nil for a flow's
// filters.
func WithFilterCheck(check func(ref FilterRef, fl *Flow, fn *Func) []Problem) LintOption {
	return func(o *lintOptions) { o.filterCheck = check }
}
