package config

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// exprOptions compile an expression over a row whose fields are not known
// in advance: every identifier is a field, missing ones are nil.
func exprOptions(extra ...expr.Option) []expr.Option {
	return append([]expr.Option{expr.Env(map[string]any{}), expr.AllowUndefinedVariables()}, extra...)
}

// CompileFilter compiles a Verify function's filter expression.
func CompileFilter(src string) (*vm.Program, error) {
	p, err := compile(src, expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("filter %q: %s", src, firstLine(err.Error()))
	}
	return p, nil
}

// CompileCalc compiles one calc expression.
func CompileCalc(a Assignment) (*vm.Program, error) {
	p, err := compile(a.Expr)
	if err != nil {
		return nil, fmt.Errorf("calc %s: %q: %s", a.Field, a.Expr, firstLine(err.Error()))
	}
	return p, nil
}

// compile compiles src, refusing calls of functions expr-lang does not
// have: since any identifier may name a field, `rnd(x)` (for round) would
// otherwise compile and fail on every row.
func compile(src string, extra ...expr.Option) (*vm.Program, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil, err
	}
	var unknown unknownCalls
	ast.Walk(&tree.Node, &unknown)
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown function %s%s", unknown[0], suggestName(unknown[0], builtin.Names))
	}
	return expr.Compile(src, exprOptions(extra...)...)
}

// unknownCalls collects the names of called functions that are not
// expr-lang's builtins (an identifier called as a function).
type unknownCalls []string

func (u *unknownCalls) Visit(n *ast.Node) {
	if c, ok := (*n).(*ast.CallNode); ok {
		if id, ok := c.Callee.(*ast.IdentifierNode); ok {
			if _, builtinName := builtin.Index[id.Value]; !builtinName {
				*u = append(*u, id.Value)
			}
		}
	}
}

// SuggestName returns " (did you mean X?)" for the known name closest to
// s, when one is close enough, else "": the suggestion every "unknown
// name" error of lint makes.
func SuggestName(s string, known []string) string {
	return suggestName(s, known)
}

func suggestName(s string, known []string) string {
	// Distance first; on a tie, the name sharing the longer prefix.
	best, bestScore := "", (len(s)/2+2)*10
	for _, k := range known {
		a, b := strings.ToLower(s), strings.ToLower(k)
		prefix := 0
		for prefix < len(a) && prefix < len(b) && a[prefix] == b[prefix] {
			prefix++
		}
		if score := editDistance(a, b)*10 - min(prefix, 9); score < bestScore {
			best, bestScore = k, score
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// checkExprs lints the expression fields of a function.
func (s *Set) checkExprs(name string, fn *Func, add func(kind Kind, name, field string, sev Severity, format string, args ...any)) {
	if fn.Filter != "" {
		if fn.FMode != Verify {
			add(KindFunc, name, "filter", SevError, "function %q: filter needs fmode Verify, not %s", name, fn.FMode)
		}
		if _, err := CompileFilter(fn.Filter); err != nil {
			add(KindFunc, name, "filter", SevError, "function %q: %v", name, err)
		}
	}
	if len(fn.Calc) > 0 && fn.FMode != Calculate {
		add(KindFunc, name, "calc", SevError, "function %q: calc needs fmode Calculate, not %s", name, fn.FMode)
	}
	for _, a := range fn.Calc {
		if _, err := CompileCalc(a); err != nil {
			add(KindFunc, name, "calc."+a.Field, SevError, "function %q: %v", name, err)
		}
	}
	if len(fn.Keep) > 0 && len(fn.Calc) == 0 {
		add(KindFunc, name, "keep", SevWarning, "function %q: keep has no effect without calc", name)
	}
}

// checkStream lints a flow's stream block.
func (s *Set) checkStream(name string, st *Stream, add func(kind Kind, name, field string, sev Severity, format string, args ...any)) {
	if st.Source == "" {
		add(KindFlow, name, "stream", SevError, "flow %q: stream needs a source (a connector name)", name)
	} else if s.Conns[st.Source] == nil {
		add(KindFlow, name, "stream.source", SevError, "flow %q: stream source %q is not a connector", name, st.Source)
	}
	for field, c := range map[string]string{"sink": st.Sink, "dead_letter": st.DeadLetter} {
		if c != "" && s.Conns[c] == nil {
			add(KindFlow, name, "stream."+field, SevError, "flow %q: stream %s %q is not a connector", name, field, c)
		}
	}
	switch st.Delivery {
	case "", AtLeastOnce, AtMostOnce:
	case ExactlyOnce:
		if st.Sink == "" {
			add(KindFlow, name, "stream.delivery", SevError, "flow %q: exactly-once needs a transactional sink (stream.sink)", name)
		}
	default:
		add(KindFlow, name, "stream.delivery", SevError, "flow %q: unknown delivery %q (want at-least-once, at-most-once or exactly-once)", name, st.Delivery)
	}
	for field, v := range map[string]int{"batch_size": st.BatchSize, "workers": st.Workers, "max_in_flight": st.MaxInFlight, "retry_duration": st.RetryDuration} {
		if v < 0 {
			add(KindFlow, name, "stream."+field, SevError, "flow %q: stream %s %d is negative", name, field, v)
		}
	}
	if st.RetryTimes != nil && *st.RetryTimes > MaxRetryTimes {
		add(KindFlow, name, "stream.retry_times", SevWarning, "flow %q: stream retry_times %d is above the cap; %d is used", name, *st.RetryTimes, MaxRetryTimes)
	}
	if st.MaxConsecutiveFailures < -1 {
		add(KindFlow, name, "stream.max_consecutive_failures", SevError, "flow %q: stream max_consecutive_failures %d: want a positive number, or -1 to never stop", name, st.MaxConsecutiveFailures)
	}
	if st.Linger < 0 || st.DrainTimeout < 0 {
		add(KindFlow, name, "stream", SevError, "flow %q: negative linger or drain_timeout", name)
	}
}
