package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// MustFields returns the fields of a `source.must` list as paths: "a.b"
// names field b of the object in field a. Blank names are left out.
func MustFields(must []string) [][]string {
	var out [][]string
	for _, m := range must {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, strings.Split(m, "."))
		}
	}
	return out
}

// fieldRef is a row field an expression reads, at a line and column of
// the expression's text (from 1).
type fieldRef struct {
	name      string
	line, col int
}

// exprFields returns the row fields src reads, in order of appearance:
// its identifiers, save those called as functions, bound by `let` or
// starting with `$` ($env, through which `$env.coupon` reads a field that
// lint does not check). Of `a.b` it is `a`. An expression that does not
// parse reads none (its compile error is reported instead).
func exprFields(src string) []fieldRef {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	var v fieldVisitor
	ast.Walk(&tree.Node, &v)
	var out []fieldRef
	for _, id := range v.ids {
		if slices.Contains(v.callees, id) || slices.Contains(v.lets, id.Value) || strings.HasPrefix(id.Value, "$") {
			continue
		}
		line, col := position(src, id.Location().From)
		out = append(out, fieldRef{name: id.Value, line: line, col: col})
	}
	return out
}

type fieldVisitor struct {
	ids     []*ast.IdentifierNode
	callees []*ast.IdentifierNode
	lets    []string
}

func (v *fieldVisitor) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		v.ids = append(v.ids, x)
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			v.callees = append(v.callees, id)
		}
	case *ast.VariableDeclaratorNode:
		v.lets = append(v.lets, x.Name)
	}
}

// checkFields checks the fields that the YAML functions (filter, calc,
// keep) of each flow read against the fields its rows are known to
// carry. The rows entering a function carry the fields of its
// source.must (KisFlow's "fields that must be carried"; the first
// function's list is enforced at run time) and what the YAML functions
// before it left them: a filter keeps the fields, a calc adds its own and
// keep narrows them. After a function written in Go nothing is known
// until a function declares source.must again; nothing is known either
// before the first source.must. A field outside what is known is an
// error in an expression, a warning in keep. A function that no flow
// names is checked against its own source.must.
func (s *Set) checkFields(addAt addAtFunc) {
	seen := map[string]bool{} // a function twice in a flow is reported once
	report := func(pos Pos, sev Severity, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if k := pos.String() + "\x00" + msg; !seen[k] {
			seen[k] = true
			addAt(pos, sev, "%s", msg)
		}
	}
	used := map[string]bool{}
	for _, name := range sortedKeys(s.Flows) {
		steps := s.Flows[name].Flows
		chain := make([]string, len(steps))
		for i, st := range steps {
			chain[i] = st.FName
			used[st.FName] = true
		}
		s.checkChainFields(fmt.Sprintf(" in flow %q", name), chain, report)
	}
	for _, name := range sortedKeys(s.Funcs) {
		if !used[name] && len(s.Funcs[name].Source.Must) > 0 {
			s.checkChainFields("", []string{name}, report)
		}
	}
}

// checkChainFields is checkFields over the functions of one flow; where
// names the flow in messages.
func (s *Set) checkChainFields(where string, chain []string, report addAtFunc) {
	var known []string // nil: not known
	for _, name := range chain {
		fn := s.Funcs[name]
		if fn == nil {
			known = nil // reported as an unknown function
			continue
		}
		if must := MustFields(fn.Source.Must); len(must) > 0 {
			if known == nil {
				known = []string{}
			}
			for _, path := range must {
				if !slices.Contains(known, path[0]) {
					known = append(known, path[0])
				}
			}
		}
		if !fn.ConfigOnly() {
			s.checkHashField(name, where, known, report)
			known = nil
			continue
		}
		if known == nil {
			continue
		}
		unknown := func(field, what string, have []string, line int, sev Severity, ref string) {
			sorted := slices.Sorted(slices.Values(have))
			report(s.exprPos(name, field, line), sev, "function %q: %s: unknown field %q%s; rows%s carry only %s (source.must and earlier calcs)",
				name, what, ref, suggestName(ref, have), where, strings.Join(sorted, ", "))
		}
		if fn.Filter != "" {
			for _, f := range exprFields(fn.Filter) {
				if !slices.Contains(known, f.name) {
					unknown("filter", "filter", known, f.line, SevError, f.name)
				}
			}
		}
		if len(fn.Calc) == 0 {
			continue
		}
		have := slices.Clone(known)
		for _, a := range fn.Calc {
			for _, f := range exprFields(a.Expr) {
				if !slices.Contains(have, f.name) {
					unknown("calc."+a.Field, "calc "+a.Field, have, f.line, SevError, f.name)
				}
			}
			if !slices.Contains(have, a.Field) {
				have = append(have, a.Field)
			}
		}
		if len(fn.Keep) == 0 {
			known = have
			continue
		}
		known = []string{}
		for i, k := range fn.Keep {
			if slices.Contains(have, k) {
				known = append(known, k)
			} else {
				unknown(fmt.Sprintf("keep[%d]", i), "keep", have, 0, SevWarning, k)
			}
		}
	}
}

// checkHashField warns when function name runs through a remote connector
// (type remote) that balances by consistent_hash over a hash_field the
// rows reaching it are known not to carry: every row would go to one
// provider.
func (s *Set) checkHashField(name, where string, known []string, report addAtFunc) {
	c := s.Conns[s.Funcs[name].Option.CName]
	if known == nil || c == nil || c.Type != "remote" || c.Params["loadbalance"] != "consistent_hash" {
		return
	}
	if hf := c.Params["hash_field"]; hf != "" && !slices.Contains(known, hf) {
		report(s.Pos(KindConn, c.CName, "params.hash_field"), SevWarning, "connector %q: hash_field %q%s: the rows reaching function %q%s carry only %s, so every row would go to one provider",
			c.CName, hf, suggestName(hf, known), name, where, strings.Join(slices.Sorted(slices.Values(known)), ", "))
	}
}
