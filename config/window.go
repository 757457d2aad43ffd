package config

import (
	"fmt"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kisflow-go/kisflow/window"
)

// Window is the `window` block of a Calculate function: a windowed
// aggregation written in YAML. Durations are Go durations (1m, 30s, 1h30m).
// Package window describes the semantics.
type Window struct {
	// Type is tumbling, sliding or session.
	Type string `yaml:"type"`
	// Size is the length of tumbling and sliding windows.
	Size string `yaml:"size,omitempty"`
	// Slide is how often a sliding window starts.
	Slide string `yaml:"slide,omitempty"`
	// Gap closes a session after that long without a row of its group.
	Gap string `yaml:"gap,omitempty"`
	// TimeField names the event-time field (RFC 3339 or epoch
	// milliseconds); without it, windows follow processing time.
	TimeField string `yaml:"time_field,omitempty"`
	// Lateness is how far the watermark stays behind the largest time seen.
	Lateness string `yaml:"lateness,omitempty"`
	// MaxAhead bounds event time: a row more than this ahead of the wall
	// clock is dead-lettered and does not move the watermark (default
	// 24h; "off" for no bound).
	MaxAhead string `yaml:"max_ahead,omitempty"`
	// Late is the policy for late rows: drop, dead_letter (the default)
	// or update.
	Late string `yaml:"late,omitempty"`
	// GroupBy names the fields that group rows: a list, or one name.
	GroupBy FieldList `yaml:"group_by,omitempty"`
	// Aggregate maps each output field to an aggregate expression, such as
	// revenue: sum(amount), in order.
	Aggregate Aggregates `yaml:"aggregate,omitempty"`

	badGroupBy bool // group_by was neither a name nor a list of names
}

// errGroupBy is what a group_by that is neither a name nor a list of names
// says.
const errGroupBy = "group_by: want a field name or a list of field names"

// UnmarshalYAML reads the block. A group_by that is neither a name nor a
// list of names is a problem of the block, reported by lint at its line
// with the function's other problems, not a failure to read the function.
func (w *Window) UnmarshalYAML(n *yaml.Node) error {
	type plain Window
	rest, groupBy := *n, (*yaml.Node)(nil)
	if n.Kind == yaml.MappingNode {
		rest.Content = nil
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "group_by" {
				groupBy = n.Content[i+1]
				continue
			}
			rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
		}
	}
	if err := rest.Decode((*plain)(w)); err != nil {
		return err
	}
	w.GroupBy, w.badGroupBy = nil, false
	if groupBy != nil && groupBy.Decode(&w.GroupBy) != nil {
		w.GroupBy, w.badGroupBy = nil, true
	}
	return nil
}

// FieldList is a list of field names; in YAML a single name (group_by:
// user_id) is a list of one.
type FieldList []string

// UnmarshalYAML reads a sequence of names or one name.
func (l *FieldList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = FieldList{n.Value}
		return nil
	case yaml.SequenceNode:
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		*l = names
		return nil
	}
	return fmt.Errorf("line %d: %s", n.Line, errGroupBy)
}

// Aggregates is an ordered aggregate mapping: Field = Expr.
type Aggregates []Assignment

// UnmarshalYAML reads a mapping of field: aggregate, keeping its order.
func (a *Aggregates) UnmarshalYAML(n *yaml.Node) error {
	out, err := orderedMapping(n, "aggregate", "an aggregate such as sum(amount)")
	*a = out
	return err
}

// MarshalYAML writes the aggregates as an ordered mapping.
func (a Aggregates) MarshalYAML() (any, error) {
	return mappingNode(a, yaml.Style(0)), nil
}

// windowProblem is a problem of a window block at a field path within
// the function (window.size).
type windowProblem struct {
	field string
	sev   Severity
	msg   string
}

// Spec returns the window.Spec the block describes, or its first error.
func (w *Window) Spec() (window.Spec, error) {
	spec, probs := w.check()
	for _, p := range probs {
		if p.sev == SevError {
			return spec, fmt.Errorf("%s: %s", p.field, p.msg)
		}
	}
	return spec, spec.Validate()
}

// check converts the block and returns every problem of it.
func (w *Window) check() (window.Spec, []windowProblem) {
	var probs []windowProblem
	add := func(field string, sev Severity, format string, args ...any) {
		probs = append(probs, windowProblem{"window" + field, sev, fmt.Sprintf(format, args...)})
	}
	spec := window.Spec{Type: window.Type(w.Type), TimeField: w.TimeField, Late: window.Late(w.Late), GroupBy: w.GroupBy}
	dur := func(field, v string, positive bool) time.Duration {
		if v == "" {
			return 0
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			add("."+field, SevError, "%s: bad duration %q (want a number and a unit, such as 1m, 30s or 1h30m)", field, v)
		case d < 0 || positive && d == 0:
			add("."+field, SevError, "%s: %s must be above zero", field, v)
		case d%time.Millisecond != 0:
			add("."+field, SevError, "%s: %s is not a whole number of milliseconds", field, v)
		}
		return d
	}
	spec.Size, spec.Slide, spec.Gap = dur("size", w.Size, true), dur("slide", w.Slide, true), dur("gap", w.Gap, true)
	spec.Lateness = dur("lateness", w.Lateness, false)
	switch {
	case w.MaxAhead == "off":
		spec.MaxAhead = -1
	case w.MaxAhead != "":
		spec.MaxAhead = dur("max_ahead", w.MaxAhead, true)
	}

	types := []string{string(window.Tumbling), string(window.Sliding), string(window.Session)}
	ignored := func(field, v string) {
		if v != "" {
			add("."+field, SevWarning, "%s is not used by %s windows", field, w.Type)
		}
	}
	switch spec.Type {
	case "":
		add("", SevError, "missing type (want tumbling, sliding or session)")
	case window.Tumbling, window.Sliding:
		if w.Size == "" {
			add("", SevError, "a %s window needs a size", w.Type)
		}
		ignored("gap", w.Gap)
		if spec.Type == window.Tumbling {
			ignored("slide", w.Slide)
		} else if w.Slide == "" {
			add("", SevError, "a sliding window needs a slide (how often a window starts)")
		} else if spec.Slide > spec.Size && spec.Size > 0 {
			add(".slide", SevError, "slide %s is larger than size %s", w.Slide, w.Size)
		}
	case window.Session:
		if w.Gap == "" {
			add("", SevError, "a session window needs a gap")
		}
		ignored("size", w.Size)
		ignored("slide", w.Slide)
	default:
		add(".type", SevError, "unknown type %q%s", w.Type, suggestOr(w.Type, types))
	}

	lates := []string{string(window.Drop), string(window.DeadLetter), string(window.Update)}
	switch {
	case w.Late != "" && !slices.Contains(lates, w.Late):
		add(".late", SevError, "unknown late policy %q%s", w.Late, suggestOr(w.Late, lates))
	case spec.Late == window.Update && spec.Lateness == 0:
		add(".late", SevError, "late: update needs a lateness above zero (a closed window is kept one lateness longer for late rows)")
	}

	if w.badGroupBy {
		add(".group_by", SevError, errGroupBy)
	}
	seen := map[string]string{window.StartField: "a window bound", window.EndField: "a window bound"}
	for i, g := range w.GroupBy {
		at := fmt.Sprintf(".group_by[%d]", i)
		if g == "" {
			add(at, SevError, "group_by: empty field name")
		} else if what, dup := seen[g]; dup {
			add(at, SevError, "group_by %q is also %s", g, what)
		}
		seen[g] = "a group_by field"
	}
	if len(w.Aggregate) == 0 {
		add("", SevError, "no aggregate (aggregate: {field: count()})")
	}
	for _, a := range w.Aggregate {
		at := ".aggregate." + a.Field
		agg, err := window.ParseAggregate(a.Field, a.Expr)
		if err != nil {
			add(at, SevError, "%v", err)
			continue
		}
		if what, dup := seen[a.Field]; dup {
			add(at, SevError, "aggregate %q is also %s", a.Field, what)
		}
		seen[a.Field] = "an aggregate"
		spec.Aggregates = append(spec.Aggregates, agg)
	}
	return spec, probs
}

// suggestOr names the closest of known, or lists them all.
func suggestOr(s string, known []string) string {
	if hint := suggestName(s, known); hint != "" {
		return hint
	}
	return fmt.Sprintf(" (want %s)", joinOr(known))
}

func joinOr(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	out := ""
	for i, n := range names[:len(names)-1] {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out + " or " + names[len(names)-1]
}

// checkWindow lints a function's window block, each problem at the line
// of its field.
func (s *Set) checkWindow(name string, fn *Func, addAt addAtFunc) {
	w := fn.Window
	if w == nil {
		return
	}
	if fn.FMode != Calculate {
		addAt(s.Pos(KindFunc, name, "window"), SevError, "function %q: window needs fmode Calculate, not %s", name, fn.FMode)
	}
	if fn.ConfigOnly() {
		addAt(s.Pos(KindFunc, name, "window"), SevError, "function %q: a window cannot share its function with a filter or a calc; put them in a function of their own", name)
	}
	_, probs := w.check()
	for _, p := range probs {
		addAt(s.Pos(KindFunc, name, p.field), p.sev, "function %q: %s", name, p.msg)
	}
}
