package config

import (
	"errors"
	"fmt"
	"github.com/kisflow-go/kisflow/internal/suggest"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
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
		return nil, fmt.Errorf("filter %q: %w", src, err)
	}
	return p, nil
}

// CompileCalc compiles one calc expression.
func CompileCalc(a Assignment) (*vm.Program, error) {
	p, err := compile(a.Expr)
	if err != nil {
		return nil, fmt.Errorf("calc %s: %q: %w", a.Field, a.Expr, err)
	}
	return p, nil
}

// exprError is a problem of an expression at a line and column of its
// text (both from 1), so that lint can name the YAML line.
type exprError struct {
	line, col int
	msg       string
}

func (e *exprError) Error() string { return fmt.Sprintf("%s (%d:%d)", e.msg, e.line, e.col) }

// compile compiles src, refusing calls of functions expr-lang does not
// have: since any identifier may name a field, `rnd(x)` (for round) would
// otherwise compile and fail on every row.
func compile(src string, extra ...expr.Option) (*vm.Program, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil, newExprError(src, err)
	}
	var unknown unknownCalls
	ast.Walk(&tree.Node, &unknown)
	if len(unknown) > 0 {
		c := unknown[0]
		line, col := position(src, c.Location().From)
		return nil, &exprError{line, col, fmt.Sprintf("unknown function %s%s", c.Value, suggestName(c.Value, builtin.Names))}
	}
	p, err := expr.Compile(src, exprOptions(extra...)...)
	if err != nil {
		return nil, newExprError(src, err)
	}
	return p, nil
}

// newExprError turns an error of expr-lang into an exprError. A token
// expr-lang does not expect, made of the characters of comparisons and
// logic, is named as an unknown operator: `status = "paid"`, `a === b`,
// `a <> b`, `a & b`.
func newExprError(src string, err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	e := &exprError{line: fe.Line, col: fe.Column + 1, msg: fe.Message}
	if !strings.HasPrefix(fe.Message, "unexpected token Operator") && !strings.HasPrefix(fe.Message, "unrecognized character") {
		return e
	}
	runes := []rune(src)
	from, to := fe.From, fe.From
	if from < 0 || from >= len(runes) || !strings.ContainsRune(operatorRunes, runes[from]) {
		return e
	}
	for from > 0 && strings.ContainsRune(operatorRunes, runes[from-1]) {
		from--
	}
	for to < len(runes) && strings.ContainsRune(operatorRunes, runes[to]) {
		to++
	}
	op := string(runes[from:to])
	if slices.Contains(operators, op) {
		return e // a known operator where it cannot stand: a syntax error
	}
	e.line, e.col = position(src, from)
	e.msg = fmt.Sprintf("unknown operator %q", op)
	if want, ok := operatorFixes[op]; ok {
		e.msg += fmt.Sprintf(" (did you mean %s?)", want)
	}
	return e
}

// operatorRunes are the characters of comparison and logic operators.
const operatorRunes = "=<>!&|~#"

// operators are expr-lang's operators made of operatorRunes.
var operators = []string{"==", "!=", "<", ">", "<=", ">=", "!", "&&", "||", "|"}

// operatorFixes are the operators of other languages (and typos) with
// their expr-lang spelling.
var operatorFixes = map[string]string{
	"=": "==", "===": "==", "!==": "!=", "<>": "!=", "=>": ">=", "=<": "<=",
	"&": "&&", "||=": "||", "~": "matches", "=~": "matches", "!~": "not matches",
}

// position returns the line and column (from 1) of the rune at offset
// from of src.
func position(src string, from int) (line, col int) {
	line, col = 1, 1
	for i, r := range []rune(src) {
		if i == from {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// unknownCalls collects the called functions that are not expr-lang's
// builtins (an identifier called as a function).
type unknownCalls []*ast.IdentifierNode

func (u *unknownCalls) Visit(n *ast.Node) {
	if c, ok := (*n).(*ast.CallNode); ok {
		if id, ok := c.Callee.(*ast.IdentifierNode); ok {
			if _, builtinName := builtin.Index[id.Value]; !builtinName {
				*u = append(*u, id)
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

func editDistance(a, b string) int { return suggest.Distance(a, b) }

// addAtFunc reports a problem at a position.
type addAtFunc func(pos Pos, sev Severity, format string, args ...any)

// checkExprs lints the expression fields of a function: a problem of an
// expression is reported at its line (see exprPos).
func (s *Set) checkExprs(name string, fn *Func, addAt addAtFunc) {
	if fn.Filter != "" {
		if fn.FMode != Verify {
			addAt(s.Pos(KindFunc, name, "filter"), SevError, "function %q: filter needs fmode Verify, not %s", name, fn.FMode)
		}
		if _, err := CompileFilter(fn.Filter); err != nil {
			addAt(s.exprPos(name, "filter", errLine(err)), SevError, "function %q: %v", name, err)
		}
	}
	if len(fn.Calc) > 0 && fn.FMode != Calculate {
		addAt(s.Pos(KindFunc, name, "calc"), SevError, "function %q: calc needs fmode Calculate, not %s", name, fn.FMode)
	}
	for _, a := range fn.Calc {
		if _, err := CompileCalc(a); err != nil {
			addAt(s.exprPos(name, "calc."+a.Field, errLine(err)), SevError, "function %q: %v", name, err)
		}
	}
	if len(fn.Keep) > 0 && len(fn.Calc) == 0 {
		addAt(s.Pos(KindFunc, name, "keep"), SevWarning, "function %q: keep has no effect without calc", name)
	}
}

// errLine is the line of the expression an exprError names, else 0.
func errLine(err error) int {
	var e *exprError
	if errors.As(err, &e) {
		return e.line
	}
	return 0
}

// exprPos returns the position of line (from 1; 0 when not known) of the
// expression in field of function name: the line of the field's key, or,
// for an expression written as a literal block (`filter: |`), the line of
// the expression's text. Folded and multi-line plain scalars join their
// lines, so their key's line is all that is known.
func (s *Set) exprPos(name, field string, line int) Pos {
	p := s.Pos(KindFunc, name, field)
	if src := s.src[srcKey{KindFunc, name}]; src != nil && line > 0 {
		if l, ok := src.lines[field+literalSuffix]; ok {
			p.Line = l + line
		}
	}
	return p
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
		add(KindFlow, name, "stream.delivery", SevError, "flow %q: unknown delivery %q%s (want at-least-once, at-most-once or exactly-once)", name, st.Delivery, suggestName(st.Delivery, []string{AtLeastOnce, AtMostOnce, ExactlyOnce}))
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
	if st.Linger < 0 || st.DrainTimeout < 0 || st.CheckpointInterval < 0 {
		add(KindFlow, name, "stream", SevError, "flow %q: negative linger, drain_timeout or checkpoint_interval", name)
	}
	for field, d := range map[string]Duration{"lateness": st.Lateness, "idle_timeout": st.IdleTimeout} {
		switch {
		case d < 0:
			add(KindFlow, name, "stream."+field, SevError, "flow %q: stream %s %s is negative", name, field, d.Std())
		case d > 0 && st.TimeField == "":
			add(KindFlow, name, "stream."+field, SevError, "flow %q: stream %s needs stream.time_field (the row field that holds the event time)", name, field)
		}
	}
	if strings.TrimSpace(st.TimeField) != st.TimeField || strings.HasPrefix(st.TimeField, ".") || strings.HasSuffix(st.TimeField, ".") {
		add(KindFlow, name, "stream.time_field", SevError, "flow %q: stream time_field %q is not a field name (want e.g. ts, or event.ts for a nested field)", name, st.TimeField)
	}
	checkBounds(name, st, add)
}
