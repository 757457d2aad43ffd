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
	// Step is the index in Flow.Flows of the step that runs Func (its
	// params override the function's); -1 for a flow's filters.
	Step int

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

// FuncParams returns the params the function gets in this use: its
// default_params overridden by the flow step's (nil for a flow's filters).
func (u FilterUse) FuncParams() map[string]string {
	if u.Func == nil {
		return nil
	}
	if u.Flow == nil || u.Step < 0 || u.Step >= len(u.Flow.Flows) {
		return u.Func.Option.DefaultParams
	}
	return MergedParams(u.Func, u.Flow.Flows[u.Step])
}

// FuncParamPos returns where the function's param key was read: the flow
// step's params when the step sets it, else the function's default_params.
// what names it for a message ("the function's" or "flow step's").
func (u FilterUse) FuncParamPos(key string) (pos Pos, what string) {
	if u.set != nil && u.Flow != nil && u.Step >= 0 && u.Step < len(u.Flow.Flows) {
		if _, ok := u.Flow.Flows[u.Step].Params[key]; ok {
			return u.set.Pos(KindFlow, u.Flow.FlowName, fmt.Sprintf("flows[%d].params.%s", u.Step, key)), fmt.Sprintf("flow %q step %s's", u.Flow.FlowName, u.Func.FName)
		}
	}
	return u.Pos("option.default_params." + key), "the function's"
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
			check(FilterUse{Ref: ref, Flow: fl, Field: fmt.Sprintf("filters[%d]", i), Step: -1, set: s, kind: KindFlow, name: name}, fmt.Sprintf("flow %q", name))
		}
		for si, st := range fl.Flows {
			fn := s.Funcs[st.FName]
			if fn == nil {
				continue
			}
			for i, ref := range fn.Option.Filters {
				check(FilterUse{Ref: ref, Flow: fl, Func: fn, Field: fmt.Sprintf("option.filters[%d]", i), Step: si, set: s, kind: KindFunc, name: fn.FName}, fmt.Sprintf("function %q", fn.FName))
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
