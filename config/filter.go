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

// FilterUse is one entry of a filter chain as lint sees it: the entry, the
// flow and function it wraps, and where it was read.
type FilterUse struct {
	Ref  FilterRef
	Flow *Flow
	Func *Func // nil for a flow's filters
	// Field is the entry's field path in its document: "filters[1]" of the
	// flow, or "option.filters[0]" of the function.
	Field string

	set  *Set
	kind Kind
	name string
}

// Pos returns where a field of the entry's document was read
// ("option.default_params.timeout_duration"); "" or a field whose line is
// unknown gives the entry's own position.
func (u FilterUse) Pos(field string) Pos {
	if u.set == nil {
		return Pos{}
	}
	if src := u.set.src[srcKey{u.kind, u.name}]; src != nil && field != "" {
		if l, ok := src.lines[field]; ok {
			return Pos{File: src.pos.File, Line: l}
		}
	}
	return u.set.Pos(u.kind, u.name, u.Field)
}

// ParamPos returns where the entry's param name was read.
func (u FilterUse) ParamPos(name string) Pos {
	return u.Pos(u.Field + ".params." + name)
}

// checkFilters runs the filter check on every entry of every flow's chain
// and of the chain of every function a flow names. A problem without a
// position gets the entry's; one found twice (a function in two flows) is
// reported once.
func (s *Set) checkFilters(o *lintOptions) []Problem {
	if o.filterCheck == nil {
		return nil
	}
	var probs []Problem
	seen := map[Problem]bool{}
	check := func(u FilterUse, what string) {
		for _, p := range o.filterCheck(u) {
			if p.Pos == (Pos{}) {
				p.Pos = u.Pos("")
			}
			p.Msg = fmt.Sprintf("%s: filter %q: %s", what, u.Ref.Name, p.Msg)
			if !seen[p] {
				seen[p] = true
				probs = append(probs, p)
			}
		}
	}
	for _, name := range sortedKeys(s.Flows) {
		fl := s.Flows[name]
		for i, ref := range fl.Filters {
			check(FilterUse{Ref: ref, Flow: fl, Field: fmt.Sprintf("filters[%d]", i), set: s, kind: KindFlow, name: name}, fmt.Sprintf("flow %q", name))
		}
		for _, st := range fl.Flows {
			fn := s.Funcs[st.FName]
			if fn == nil {
				continue
			}
			for i, ref := range fn.Option.Filters {
				check(FilterUse{Ref: ref, Flow: fl, Func: fn, Field: fmt.Sprintf("option.filters[%d]", i), set: s, kind: KindFunc, name: fn.FName}, fmt.Sprintf("function %q", fn.FName))
			}
		}
	}
	return probs
}

// WithFilterCheck makes lint check each filter entry of every flow and of
// every function in a flow with check, which returns problems for an
// unknown name or bad params. A problem may carry its position (such as
// u.ParamPos of a bad param); one without gets the entry's.
func WithFilterCheck(check func(u FilterUse) []Problem) LintOption {
	return func(o *lintOptions) { o.filterCheck = check }
}
