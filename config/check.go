package config

import (
	"fmt"
	"slices"
	"strings"
)

// LintOption adds knowledge the configuration alone does not have, such as
// the connector types a binary was built with.
type LintOption func(*lintOptions)

type lintOptions struct {
	connTypes   []string
	checks      []func(*Set) []Problem
	filterCheck func(FilterUse) []Problem
}

// WithConnTypes makes a connector whose type is not in types an error.
func WithConnTypes(types ...string) LintOption {
	return func(o *lintOptions) { o.connTypes = append(o.connTypes, types...) }
}

// WithCheck adds a check of the whole set, run after the built-in ones.
// Components use it to lint their own fields.
func WithCheck(check func(*Set) []Problem) LintOption {
	return func(o *lintOptions) { o.checks = append(o.checks, check) }
}

// MaxRetryTimes caps a function's retry_times; a config asking for more gets
// the cap and a lint warning.
const MaxRetryTimes = 10

// Check checks the references between documents and the values of fields:
// unknown functions and connectors, modes, missing connectors of Save and
// Load functions. Disabled flows are checked too. Problems carry the position
// of the offending field when the set was read from files.
func (s *Set) Check(opts ...LintOption) []Problem {
	var o lintOptions
	for _, opt := range opts {
		opt(&o)
	}
	var probs []Problem
	addAt := func(pos Pos, sev Severity, format string, args ...any) {
		probs = append(probs, Problem{Pos: pos, Severity: sev, Msg: fmt.Sprintf(format, args...)})
	}
	add := func(kind Kind, name, field string, sev Severity, format string, args ...any) {
		addAt(s.Pos(kind, name, field), sev, format, args...)
	}

	// A function no enabled flow runs is never looked at by the original
	// (it builds enabled flows only): its unknown fmode or connector is a
	// warning, and an error once an enabled flow names it.
	run := s.enabledFuncs()
	sevRun := func(name string) (Severity, string) {
		if run[name] {
			return SevError, ""
		}
		return SevWarning, "; no enabled flow runs the function, so it loads (as in the original), but an enabled flow naming it is refused"
	}
	for _, name := range sortedKeys(s.Funcs) {
		fn := s.Funcs[name]
		sev, unused := sevRun(name)
		switch {
		case fn.FMode == "":
			add(KindFunc, name, "", sev, "function %q: missing fmode%s%s", name, suggestMode(""), unused)
		case !fn.FMode.Valid():
			hint := suggestMode(string(fn.FMode))
			if strings.HasPrefix(hint, " (did you mean") {
				hint = strings.TrimSuffix(hint, ")") + " fmode is case-sensitive, as in the original)"
			}
			add(KindFunc, name, "fmode", sev, "function %q: unknown fmode %q%s%s", name, fn.FMode, hint, unused)
		case fn.FMode.NeedsConn() && fn.Option.CName == "":
			// KisFlow's exporter writes `cname: ""` and its loader takes it:
			// only a use of the connector fails (a YAML-only Load or Save,
			// reported by the registry's lint; a Go body's Connector call).
			add(KindFunc, name, "fmode", SevWarning, "function %q: fmode %s has no connector (option.cname): a YAML-only %s needs one, and a Go body calling Connector gets an error", name, fn.FMode, fn.FMode)
		}
		if c := fn.Option.CName; c != "" {
			if _, ok := s.Conns[c]; !ok {
				add(KindFunc, name, "option.cname", sev, "function %q: unknown connector %q%s", name, c, unused)
			}
		}
		if fn.Option.RetryTimes < 0 {
			add(KindFunc, name, "option.retry_times", SevError, "function %q: retry_times %d is negative", name, fn.Option.RetryTimes)
		} else if fn.Option.RetryTimes > MaxRetryTimes {
			add(KindFunc, name, "option.retry_times", SevWarning, "function %q: retry_times %d is above the cap; %d is used", name, fn.Option.RetryTimes, MaxRetryTimes)
		}
		if both := fn.Option.bothDurations; both != nil {
			sev := SevWarning
			if both[0] != both[1] {
				sev = SevError
			}
			add(KindFunc, name, "option.retry_duration", sev, "function %q: both retry_duration (%d) and return_duration (%d) are set; this engine reads retry_duration, the original KisFlow return_duration: keep one", name, both[0], both[1])
		}
		if fn.Option.RetryDuration < 0 {
			add(KindFunc, name, "option.retry_duration", SevError, "function %q: retry_duration %d is negative", name, fn.Option.RetryDuration)
		}
		s.checkExprs(name, fn, addAt)
		s.checkWindow(name, fn, addAt)
	}

	for _, name := range sortedKeys(s.Flows) {
		fl := s.Flows[name]
		if fl.Status != FlowDisabled && fl.Status != FlowEnabled {
			add(KindFlow, name, "status", SevWarning, "flow %q: status %d is neither 0 (disabled) nor 1 (enabled); treated as enabled", name, fl.Status)
		}
		if len(fl.Flows) == 0 {
			add(KindFlow, name, "", SevWarning, "flow %q has no functions", name)
		}
		// The original skips a disabled flow when it loads a folder: what
		// it names is a warning, and an error once it is enabled.
		sev, disabled := SevError, ""
		if !fl.Enabled() {
			sev, disabled = SevWarning, "; the flow is disabled (status: 0), so it loads (as in the original), but enabling it is refused"
		}
		for i, st := range fl.Flows {
			field := fmt.Sprintf("flows[%d].fname", i)
			switch {
			case st.FName == "":
				add(KindFlow, name, fmt.Sprintf("flows[%d]", i), sev, "flow %q: step %d has no fname%s", name, i+1, disabled)
			case s.Funcs[st.FName] == nil:
				add(KindFlow, name, field, sev, "flow %q names unknown function %q%s", name, st.FName, disabled)
			}
		}
		if fl.Stream != nil {
			s.checkStream(name, fl.Stream, add)
			s.checkStateScale(name, fl, add)
		}
	}

	for _, name := range sortedKeys(s.Conns) {
		c := s.Conns[name]
		switch {
		case c.Type == "" && s.streamUsing(name) != "":
			add(KindConn, name, "", SevError, "connector %q: missing type, and flow %q streams through it", name, s.streamUsing(name))
		case c.Type == "":
			// KisFlow loads it: a name for its CaaS callbacks.
			add(KindConn, name, "", SevWarning, "connector %q: no type: it loads as a label for its callbacks (Connector.Driver is nil), and a YAML-only Load or Save through it has no body", name)
		case len(o.connTypes) > 0 && !slices.Contains(o.connTypes, c.Type):
			// As in KisFlow, a connector's type is a label until something
			// needs its client: an error for a stream's source or sink, a
			// warning otherwise (starting it fails, naming the type).
			if by := s.streamUsing(name); by != "" {
				add(KindConn, name, "type", SevError, "connector %q: unknown type %q, and flow %q streams through it (known: %s)", name, c.Type, by, strings.Join(o.connTypes, ", "))
			} else {
				add(KindConn, name, "type", SevWarning, "connector %q: no driver for type %q in this binary (known: %s); it loads as a label for its callbacks (Connector.Driver is nil), and a YAML-only Load or Save through it has no body", name, c.Type, strings.Join(o.connTypes, ", "))
			}
		}
		s.checkEnv(name, c, add)
		for field, list := range map[string][]string{"load": c.Load, "save": c.Save} {
			for i, fname := range list {
				if s.Funcs[fname] == nil {
					// Informational in KisFlow, whose exporter lists every
					// function of the connector but writes only the flow's.
					hint := suggestName(fname, sortedKeys(s.Funcs))
					if slices.ContainsFunc(list, func(f string) bool { return hint == fmt.Sprintf(" (did you mean %s?)", f) }) {
						hint = "" // the near name is listed too: no typo
					}
					add(KindConn, name, fmt.Sprintf("%s[%d]", field, i), SevWarning, "connector %q: %s names unknown function %q%s (the list is informational)", name, field, fname, hint)
				}
			}
		}
	}

	if g := s.Global; g != nil && g.swappedMetrics {
		add(KindGlobal, "", "prometheus_listen", SevWarning, "prometheus_listen holds an address: KisFlow reads prometheus_listen as a boolean (start a listener) and prometheus_serve as its address; read with that meaning (write prometheus_listen: true, prometheus_serve: %q)", g.PrometheusServe)
	}

	s.checkFields(addAt)
	probs = append(probs, s.checkFilters(&o)...)
	for _, check := range o.checks {
		probs = append(probs, check(s)...)
	}
	return probs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// streamUsing returns the name of an enabled flow whose stream block names
// connector cname (source, sink or dead letter), or "".
func (s *Set) streamUsing(cname string) string {
	for _, name := range sortedKeys(s.Flows) {
		st := s.Flows[name].Stream
		if st != nil && s.Flows[name].Enabled() && (st.Source == cname || st.Sink == cname || st.DeadLetter == cname) {
			return name
		}
	}
	return ""
}

// enabledFuncs is the set of functions an enabled flow names.
func (s *Set) enabledFuncs() map[string]bool {
	out := map[string]bool{}
	for _, fl := range s.Flows {
		if fl.Enabled() {
			for _, st := range fl.Flows {
				out[st.FName] = true
			}
		}
	}
	return out
}
